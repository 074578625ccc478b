/**
 * `deno task compile [--target NAME]... [--dry-run]`: builds the release
 * binaries into `dist/` with `deno compile --target`, using exactly the
 * flags of the `bal` task, then packages each as `bal-<os>-<arch>.tar.gz`
 * (the binary, named `bal`, at the archive root) and writes `SHA256SUMS` and
 * `VERSION` (which install.sh reads).
 *
 * `deno compile` downloads Deno's runtime (denort) for each target. Offline,
 * set DENORT_BIN to a denort binary for the target (Deno reads it; only
 * sensible with one --target), or build on a machine with internet.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { RUN_FLAGS, VERSION } from "../src/build.ts";

/** Release name -> Deno target triple. */
export const TARGETS: Record<string, string> = {
  "linux-amd64": "x86_64-unknown-linux-gnu",
  "linux-arm64": "aarch64-unknown-linux-gnu",
  "macos-amd64": "x86_64-apple-darwin",
  "macos-arm64": "aarch64-apple-darwin",
};

const root = new URL("..", import.meta.url).pathname;
const dist = `${root}dist`;

/** The `deno compile` arguments for one release target. */
export function compileArgs(name: string): string[] {
  return [
    "compile",
    "--target",
    TARGETS[name],
    ...RUN_FLAGS,
    "--config",
    `${root}deno.json`,
    "--output",
    `${dist}/bal-${name}`,
    `${root}src/main.ts`,
  ];
}

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; stderr: string }> {
  const out = await new Deno.Command(cmd, { args, stdout: "inherit", stderr: "piped" }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  return { ok: out.success, stderr };
}

async function build(name: string): Promise<string> {
  const binary = `${dist}/bal-${name}`;
  const result = await run(Deno.execPath(), compileArgs(name));
  if (!result.ok) {
    const offline = /dns error|failed to lookup|error sending request|download/i.test(
      result.stderr,
    );
    const why = offline
      ? "deno compile could not download its runtime (denort) for this target: no internet access. " +
        "Set DENORT_BIN to a local denort binary for the target, or build on a machine with internet."
      : result.stderr.trim().split("\n").slice(-3).join(" | ");
    throw new Error(`compile ${name} (${TARGETS[name]}) failed: ${why}`);
  }
  // The archive holds the binary as plain `bal`, at its root.
  const stage = await Deno.makeTempDir({ prefix: "bal-pack-" });
  try {
    await Deno.copyFile(binary, `${stage}/bal`);
    await Deno.chmod(`${stage}/bal`, 0o755);
    const archive = `bal-${name}.tar.gz`;
    const tar = await run("tar", ["-czf", `${dist}/${archive}`, "-C", stage, "bal"]);
    if (!tar.ok) throw new Error(`packaging ${archive} failed: ${tar.stderr.trim()}`);
    return archive;
  } finally {
    await Deno.remove(stage, { recursive: true });
  }
}

async function sha256(path: string): Promise<string> {
  return createHash("sha256").update(await Deno.readFile(path)).digest("hex");
}

if (import.meta.main) {
  const args = [...Deno.args];
  const dryRun = args.includes("--dry-run");
  const names: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--target") names.push(args[++i]);
  }
  const unknown = names.filter((n) => !(n in TARGETS));
  if (unknown.length > 0) {
    console.error(
      `compile: unknown target ${unknown.join(", ")}; choose from ${
        Object.keys(TARGETS).join(", ")
      }`,
    );
    Deno.exit(2);
  }
  const chosen = names.length > 0 ? names : Object.keys(TARGETS);
  if (dryRun) {
    for (const name of chosen) console.log(["deno", ...compileArgs(name)].join(" "));
    Deno.exit(0);
  }
  await Deno.mkdir(dist, { recursive: true });
  console.log(`bal ${VERSION}: compiling ${chosen.join(", ")} into ${dist}`);
  try {
    const archives = [];
    for (const name of chosen) archives.push(await build(name));
    const sums = await Promise.all(
      archives.map(async (a) => `${await sha256(`${dist}/${a}`)}  ${a}`),
    );
    await Deno.writeTextFile(`${dist}/SHA256SUMS`, sums.join("\n") + "\n");
    // install.sh reads VERSION to tell whether the installed bal is current.
    await Deno.writeTextFile(`${dist}/VERSION`, `${VERSION}\n`);
    console.log(`wrote ${archives.join(", ")}, SHA256SUMS and VERSION`);
  } catch (err) {
    console.error(`compile: ${err instanceof Error ? err.message : err}`);
    Deno.exit(1);
  }
}
