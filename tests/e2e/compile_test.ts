import assert from "node:assert/strict";
import { RUN_FLAGS } from "../../src/build.ts";
import { ROOT, runCommand } from "../helpers.ts";

const compileTask = (...args: string[]) =>
  runCommand(Deno.execPath(), ["task", "-q", "compile", ...args], { cwd: ROOT });

Deno.test("compile: every release target gets exactly the bal task's flags", async () => {
  const r = await compileTask("--dry-run");
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  const targets = lines.map((l) => l.split(" ")[3]).sort();
  assert.deepEqual(targets, [
    "aarch64-apple-darwin",
    "aarch64-unknown-linux-gnu",
    "x86_64-apple-darwin",
    "x86_64-unknown-linux-gnu",
  ]);
  for (const line of lines) {
    const words = line.split(" ");
    assert.deepEqual(words.slice(0, 3), ["deno", "compile", "--target"]);
    assert.deepEqual(words.slice(4, 4 + RUN_FLAGS.length), [...RUN_FLAGS]);
    assert.match(line, /--output \S+\/dist\/bal-(linux|macos)-(amd64|arm64) \S+\/src\/main\.ts$/);
  }
});

Deno.test("compile: an unknown target is refused", async () => {
  const r = await compileTask("--dry-run", "--target", "windows-x86");
  assert.equal(r.code, 2);
  assert.match(
    r.stderr,
    /unknown target windows-x86; choose from linux-amd64, linux-arm64, macos-amd64, macos-arm64/,
  );
});

Deno.test("install:global installs a working bal command with the same flags", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bal-global-" });
  try {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["task", "-q", "install:global", "--root", dir],
      cwd: ROOT,
      env: { PATH: "/usr/bin:/bin" },
    }).output();
    assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
    const said = new TextDecoder().decode(r.stdout);
    assert.match(said, new RegExp(`installed bal as ${dir}/bin/bal`));
    assert.match(said, new RegExp(`${dir}/bin is not on your PATH; add it`));
    const refused = await new Deno.Command(Deno.execPath(), {
      args: ["task", "-q", "install:global", "--root", "/proc/bal-cannot-be-here"],
      cwd: ROOT,
    }).output();
    assert.notEqual(refused.code, 0);
    assert.match(
      new TextDecoder().decode(refused.stderr),
      /^bal: deno install failed \(exit \d+\): \S/,
    );
    const shim = Deno.readTextFileSync(`${dir}/bin/bal`);
    for (const flag of RUN_FLAGS) assert.ok(shim.includes(flag), `${flag} missing from the shim`);
    const v = await new Deno.Command(`${dir}/bin/bal`, {
      args: ["--version"],
      env: { BAL_HOME: dir },
    }).output();
    assert.equal(v.code, 0);
    assert.equal(
      new TextDecoder().decode(v.stdout).trim(),
      `bal ${JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).version}`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
