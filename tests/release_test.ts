/** Release and service files: the workflow, the systemd unit, the launchd plist, the READMEs. */
import assert from "node:assert/strict";
// @ts-types="@types/js-yaml"
import { load as parse } from "js-yaml";
import { missingTool, ROOT } from "./helpers.ts";

const read = (path: string) => Deno.readTextFileSync(`${ROOT}${path}`);

Deno.test("release workflow: valid YAML that tests, compiles, checksums and publishes every asset", () => {
  // deno-lint-ignore no-explicit-any -- a parsed YAML document has no static shape
  const wf = parse(read(".github/workflows/release.yml")) as any;
  assert.deepEqual(wf.on.push.tags, ["v*"]);
  assert.equal(wf.permissions.contents, "write");
  const testRuns = wf.jobs.test.steps.map((s: { run?: string }) => s.run ?? "").join("\n");
  assert.match(testRuns, /bash \.ci\/run/);
  assert.equal(wf.jobs.release.needs, "test");
  const runs = wf.jobs.release.steps.map((s: { run?: string }) => s.run ?? "").join("\n");
  assert.match(runs, /deno task compile/);
  assert.match(runs, /sha256sum -c SHA256SUMS/);
  assert.match(runs, /gh release create/);
  for (const asset of ["linux-amd64", "linux-arm64", "macos-amd64", "macos-arm64"]) {
    assert.ok(runs.includes(`dist/bal-${asset}.tar.gz`), asset);
  }
  for (const asset of ["dist/SHA256SUMS", "dist/VERSION", "install.sh"]) {
    assert.ok(runs.includes(asset), asset);
  }
});

Deno.test("test workflow: every push and pull request runs .ci/run", () => {
  // deno-lint-ignore no-explicit-any -- a parsed YAML document has no static shape
  const wf = parse(read(".github/workflows/test.yml")) as any;
  assert.deepEqual(wf.on.push.branches, ["**"]);
  assert.ok("pull_request" in wf.on);
  const runs = wf.jobs.test.steps.map((s: { run?: string }) => s.run ?? "").join("\n");
  assert.match(runs, /bash \.ci\/run/);
});

Deno.test({
  name: "systemd unit: verifies, reloads with bal graceful, runs unprivileged in the foreground",
  ignore: missingTool("systemd-analyze"),
}, async () => {
  const unit = read("contrib/bal.service");
  assert.match(unit, /^ExecStart=\/usr\/local\/bin\/bal start -c \/etc\/bal\/config\.yaml$/m);
  assert.doesNotMatch(unit, /^ExecStart=.* -d\b/m);
  assert.match(unit, /^ExecReload=\/usr\/local\/bin\/bal graceful$/m);
  assert.match(unit, /^User=bal$/m);
  assert.match(unit, /^Environment=BAL_HOME=\/var\/lib\/bal$/m);
  assert.match(unit, /^NoNewPrivileges=yes$/m);
  assert.match(unit, /^ProtectSystem=strict$/m);
  // systemd-analyze checks the unit for real; it wants the binary to exist.
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/bal`, "#!/bin/sh\n", { mode: 0o755 });
    await Deno.writeTextFile(
      `${dir}/bal.service`,
      unit.replaceAll("/usr/local/bin/bal", `${dir}/bal`),
    );
    const out = await new Deno.Command("systemd-analyze", {
      args: ["verify", `${dir}/bal.service`],
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("launchd plist: parses, runs bal start in the foreground with BAL_HOME", async () => {
  const code = `
import json, plistlib, sys
p = plistlib.load(open(sys.argv[1], "rb"))
print(json.dumps(p))`;
  const out = await new Deno.Command("python3", {
    args: ["-c", code, `${ROOT}contrib/com.bal.plist`],
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const plist = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.equal(plist.Label, "com.bal");
  assert.deepEqual(plist.ProgramArguments, ["/usr/local/bin/bal", "start"]);
  assert.equal(plist.EnvironmentVariables.BAL_HOME, "/Users/USERNAME/.bal");
  assert.equal(plist.RunAtLoad, true);
});

Deno.test("READMEs: the Korean translation links the English one and covers every section", () => {
  const en = read("README.md");
  const ko = read("README.ko.md");
  assert.match(en, /\[한국어\]\(README\.ko\.md\)/);
  assert.match(ko, /\[English\]\(README\.md\)/);
  const sections = (md: string) => [...md.matchAll(/^## /gm)].length;
  assert.equal(sections(ko), sections(en));
  // Every command, config key, task and file name of the English README is in the translation.
  const codeSpans = new Set([...en.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]));
  // Spans whose words are placeholders, translated on purpose.
  const translated = new Set(["bal: FILE:LINE:COL: key.path: what is wrong"]);
  const missing = [...codeSpans].filter((span) => !ko.includes(span) && !translated.has(span));
  assert.deepEqual(missing, []);
});
