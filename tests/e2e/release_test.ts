/** Release and service files: the workflow, the systemd unit, the launchd plist, the READMEs. */
import assert from "node:assert/strict";
// @ts-types="@types/js-yaml"
import { load as parse } from "js-yaml";
import { checkConfig } from "../../src/config/mod.ts";
import { missingTool, ROOT } from "../helpers.ts";

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
  name:
    "systemd unit: verifies, reloads with bal upgrade (Type=notify, NotifyAccess=all), runs unprivileged in the foreground",
  ignore: missingTool("systemd-analyze"),
}, async () => {
  const unit = read("contrib/bal.service");
  assert.match(unit, /^ExecStart=\/usr\/local\/bin\/bal start -c \/etc\/bal\/config\.yaml$/m);
  assert.doesNotMatch(unit, /^ExecStart=.* -d\b/m);
  assert.match(unit, /^ExecReload=\/usr\/local\/bin\/bal upgrade --timeout 30$/m);
  // The new bal sends MAINPID=; systemd takes it only from a unit that lets any process notify.
  assert.match(unit, /^Type=notify$/m);
  assert.match(unit, /^NotifyAccess=all$/m);
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
    const said = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, said);
    // verify exits 0 on a setting it ignores (a misspelt Type=), saying so.
    assert.doesNotMatch(said, /ignoring|unknown|failed/i);
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

/** The reference pages beside the README, each with its Korean translation in docs/ko/. */
const DOCS = [
  "commands",
  "configuration",
  "behaviour",
  "observability",
  "development",
  "architecture",
  "api",
];

Deno.test("READMEs: the Korean translation links the English one and covers every section, README and docs alike", () => {
  const en = read("README.md");
  const ko = read("README.ko.md");
  assert.match(en, /\[한국어\]\(README\.ko\.md\)/);
  assert.match(ko, /\[English\]\(README\.md\)/);
  const pairs: [string, string][] = [
    ["README.md", "README.ko.md"],
    ...DOCS.map((d): [string, string] => [`docs/${d}.md`, `docs/ko/${d}.md`]),
  ];
  const sections = (md: string) => [...md.matchAll(/^## /gm)].length;
  // Spans whose words are placeholders, translated on purpose.
  const translated = new Set(["bal: FILE:LINE:COL: key.path: what is wrong"]);
  for (const [enPath, koPath] of pairs) {
    const [e, k] = [read(enPath), read(koPath)];
    assert.equal(sections(k), sections(e), `${koPath} has the sections of ${enPath}`);
    // Every command, config key, task and file name of the English page is in the translation.
    const codeSpans = new Set([...e.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]));
    const missing = [...codeSpans].filter((span) => !k.includes(span) && !translated.has(span));
    assert.deepEqual(missing, [], `${koPath} lacks code spans of ${enPath}`);
  }
});

Deno.test("README: fits a first screen or few, with no table cell longer than a sentence", () => {
  for (const path of ["README.md", "README.ko.md"]) {
    const text = read(path);
    assert.ok(text.split("\n").length < 250, `${path}: ${text.split("\n").length} lines`);
    for (const row of text.split("\n").filter((l) => l.startsWith("| "))) {
      for (const cell of row.split(/(?<!\\)\|/).map((c) => c.trim())) {
        assert.ok(
          !/[.。] \S/.test(cell.replace(/`[^`]*`/g, "")),
          `${path}: a cell of two sentences: ${cell}`,
        );
      }
    }
  }
  // Every page the README points to exists.
  for (const [, link] of read("README.md").matchAll(/\]\(((?:docs|sample)\/[^)#]+)/g)) {
    assert.ok(Deno.statSync(`${ROOT}${link}`).isFile, link);
  }
});

Deno.test("README: its config examples are valid configs", () => {
  // The files an example names (certificates) exist beside the config a user would write.
  const dir = Deno.makeTempDirSync({ prefix: "bal-readme-" });
  for (const f of ["redis.crt", "redis.key"]) Deno.writeTextFileSync(`${dir}/${f}`, "");
  for (const path of ["README.md", "README.ko.md"]) {
    const examples = [...read(path).matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]);
    assert.equal(examples.length, 3, path);
    for (const yaml of examples) {
      const r = checkConfig(yaml, `${dir}/${path}.yaml`);
      assert.ok(r.ok, `${path}: ${r.ok ? "" : r.errors[0].message}`);
    }
  }
  Deno.removeSync(dir, { recursive: true });
});
