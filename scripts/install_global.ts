/**
 * `deno task install:global [--root DIR]`: installs `bal` as a command for
 * users who already have Deno (`deno install -g`), with exactly the flags of
 * the `bal` task. Extra arguments go to `deno install` (e.g. `--root DIR`).
 * It says where the command went and whether that directory is on `PATH`.
 *
 * @module
 */
import { RUN_FLAGS } from "../src/build.ts";

const root = new URL("..", import.meta.url).pathname;
const args = [
  "install",
  "--global",
  "--force",
  "--name",
  "bal",
  ...Deno.args,
  ...RUN_FLAGS,
  "--config",
  `${root}deno.json`,
  `${root}src/main.ts`,
];
const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), { args }).output();
if (code !== 0) {
  const why = new TextDecoder().decode(stderr).trim() || new TextDecoder().decode(stdout).trim();
  console.error(`bal: deno install failed (exit ${code}): ${why}`);
  Deno.exit(code);
}
const bin = `${installRoot(Deno.args)}/bin`;
console.log(`installed bal as ${bin}/bal (runs src/main.ts from ${root} with the release flags)`);
const onPath = (Deno.env.get("PATH") ?? "").split(":").some((d) => d.replace(/\/$/, "") === bin);
console.log(
  onPath
    ? `${bin} is on your PATH: run \`bal --version\``
    : `${bin} is not on your PATH; add it, e.g. in ~/.profile: export PATH="${bin}:$PATH"`,
);

/** Where `deno install -g` puts commands: `--root`, then DENO_INSTALL_ROOT, then ~/.deno. */
function installRoot(given: string[]): string {
  const at = given.findIndex((a) => a === "--root" || a.startsWith("--root="));
  if (at >= 0) {
    const dir = given[at].includes("=") ? given[at].slice("--root=".length) : given[at + 1];
    const absolute = dir.startsWith("/") ? dir : `${Deno.cwd()}/${dir}`;
    return absolute.replace(/\/$/, "");
  }
  const env = Deno.env.get("DENO_INSTALL_ROOT");
  if (env) return env.replace(/\/$/, "");
  return `${Deno.env.get("HOME") ?? "~"}/.deno`;
}
