/**
 * Bad input, generated: thousands of mutated configs (random YAML, wrong
 * types, huge numbers, unicode, deep nesting, duplicate keys, 10 MB files)
 * through the validator, `bal check` and a live reload. Never a crash, a
 * hang or a stack trace; always exit 1 with a one-line message naming the
 * file (and the key, where there is one); the live daemon keeps its config.
 */
import assert from "node:assert/strict";
import { checkConfig } from "../../src/config/mod.ts";
import {
  bal,
  echoBackend,
  echoing,
  freePort,
  startDaemon,
  tempHome,
  waitFor,
  writeConfig,
} from "../helpers.ts";
import { between, pick, record } from "./chaos.ts";

const SEEDS = [
  'port: 9295\nbind_address: 127.0.0.1\nmethod: round_robin\nlog_level: info\nworkers: 1\nbackends:\n  - host: 127.0.0.1\n    port: 9000\n  - "127.0.0.1:9100"\nruntime:\n  health_check_interval_ms: 500\n  max_concurrent_connections: 4000\n  overload_policy: reject\n',
  "backends: ['[::1]:80', 'db.example:5432']\nruntime: {backend_cooldown_ms: 0, protection_window_ms: 30000}\n",
  "port: 1\nbackends:\n- {host: localhost, port: 65535}\n",
];

const VALUES = [
  "1e309",
  "-1",
  "0",
  "99999999999999999999",
  "3.5",
  "''",
  "[]",
  "{}",
  "~",
  "true",
  "0x1F",
  "'🦕🦕'",
  '"\\u0000"',
  "[[[[[[]]]]]]",
  "{a: {b: {c: {}}}}",
  "!!binary aGVsbG8=",
  "&a [*a]",
  "*nope",
  "'" + "x".repeat(5000) + "'",
];
const JUNK = [
  "\t",
  ":",
  "- ",
  "{",
  "}",
  "[",
  "]",
  "#",
  "&",
  "*",
  "!",
  "|",
  ">",
  "'",
  '"',
  "%",
  "@",
  "`",
  "\u00a0",
  "é",
  "漢",
  "\ufeff",
  "\u0000",
  "\n",
  "  ",
  "---\n",
  "...\n",
];

function pickOne<T>(xs: readonly T[]): T {
  return xs[between(0, xs.length - 1)];
}

/** One random mutation of a config text. */
function mutate(text: string): string {
  const at = between(0, text.length);
  switch (between(0, 7)) {
    case 0: // delete a span
      return text.slice(0, at) + text.slice(Math.min(text.length, at + between(1, 20)));
    case 1: // insert junk
      return text.slice(0, at) + pickOne(JUNK) + text.slice(at);
    case 2: { // replace a value with a strange one
      const lines = text.split("\n");
      const i = between(0, lines.length - 1);
      lines[i] = lines[i].replace(/:\s*.*$/, `: ${pickOne(VALUES)}`);
      return lines.join("\n");
    }
    case 3: { // duplicate a line (duplicate keys)
      const lines = text.split("\n");
      const i = between(0, lines.length - 1);
      lines.splice(i, 0, lines[i]);
      return lines.join("\n");
    }
    case 4: // deep nesting
      return text + `runtime: ${"[".repeat(between(10, 1000))}\n`;
    case 5: // random bytes
      return text.slice(0, at) +
        String.fromCharCode(...crypto.getRandomValues(new Uint8Array(between(1, 40)))) +
        text.slice(at);
    case 6: // a key renamed to unicode
      return text.replace(
        /^(\s*)(\w+):/m,
        `$1${pickOne(["pört", "ポート", "port\u200b", "PORT"])}:`,
      );
    default: // re-indent a line
      return text.replace(/\n(\s*)/, `\n${" ".repeat(between(0, 7))}`);
  }
}

function mutated(): string {
  let text = pickOne(SEEDS);
  for (let i = between(1, 4); i > 0; i--) text = mutate(text);
  return text;
}

const figures: Record<string, unknown> = {};

Deno.test("chaos: thousands of mutated configs: the validator never throws, every error is one line naming the file", () => {
  const N = pick(3000, 10000);
  let invalid = 0;
  for (let i = 0; i < N; i++) {
    const text = mutated();
    const result = checkConfig(text, "/c.yaml");
    if (result.ok) continue;
    invalid++;
    for (const e of result.errors) {
      assert.ok(!e.message.includes("\n"), `two lines: ${JSON.stringify(e.message)}`);
      assert.ok(e.message.startsWith("/c.yaml"), e.message);
      if (e.keyPath) assert.ok(e.message.includes(`${e.keyPath}:`), e.message);
    }
  }
  assert.ok(invalid > N / 2, `only ${invalid} of ${N} mutations were invalid`);
  figures.validator = { configs: N, invalid };
});

Deno.test("chaos: bal check on mutated and pathological files: exit 1, one line per error, no stack trace", async () => {
  const home = tempHome();
  const files: string[] = [];
  const special: Record<string, string | Uint8Array> = {
    "huge.yaml": "backends: ['127.0.0.1:1']\n# " + "x".repeat(10 * 1024 * 1024) + "\n",
    "deep.yaml": "backends: " + "[".repeat(500_000),
    "binary.yaml": crypto.getRandomValues(new Uint8Array(60_000)),
    "dupes.yaml": "port: 1\nport: 2\nbackends: ['127.0.0.1:1']\n",
    "unicode.yaml": "pörtー: 9295\nbackends: ['127.0.0.1:1']\n",
    "bignum.yaml": "port: 1e309\nbackends: ['127.0.0.1:1']\n",
  };
  for (const [name, content] of Object.entries(special)) {
    const path = `${home}/${name}`;
    if (typeof content === "string") Deno.writeTextFileSync(path, content);
    else Deno.writeFileSync(path, content);
    files.push(path);
  }
  for (let i = 0; i < pick(20, 80); i++) {
    let text = mutated();
    while (checkConfig(text, "x").ok) text = mutated();
    const path = `${home}/m${i}.yaml`;
    Deno.writeTextFileSync(path, text);
    files.push(path);
  }
  // Two at a time: each run is a process start.
  const outcomes: { file: string; code: number; stderr: string; ms: number }[] = [];
  for (let i = 0; i < files.length; i += 2) {
    outcomes.push(
      ...await Promise.all(
        files.slice(i, i + 2).map(async (file) => {
          const started = Date.now();
          const r = await bal(home, "check", "-c", file);
          return { file, code: r.code, stderr: r.stderr, ms: Date.now() - started };
        }),
      ),
    );
  }
  for (const o of outcomes) {
    assert.equal(o.code, 1, `${o.file}: exit ${o.code}\n${o.stderr}`);
    const lines = o.stderr.trim().split("\n");
    assert.ok(lines.length >= 1);
    for (const line of lines) {
      assert.ok(line.includes(o.file), `${o.file}: ${line}`);
      assert.doesNotMatch(line, /^\s+at |Error:|Uncaught/, line);
    }
    assert.ok(o.ms < 10_000, `${o.file} took ${o.ms} ms`);
  }
  figures.check_cli = {
    files: outcomes.length,
    all_exit_1: true,
    slowest_ms: Math.max(...outcomes.map((o) => o.ms)),
  };
});

Deno.test("chaos: a live reload of bad configs keeps the running config and keeps serving", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [echo.port] });
  const good = Deno.readTextFileSync(config);
  const d = await startDaemon(home, config, port);
  const reloads = () =>
    JSON.parse(Deno.readTextFileSync(`${home}/bal.state.json`)).reloads as number;
  try {
    const N = pick(10, 40);
    for (let i = 0; i < N; i++) {
      let text = i === 0 ? "x".repeat(2 * 1024 * 1024) : mutated();
      while (i > 0 && checkConfig(text, "x").ok) text = mutated();
      Deno.writeTextFileSync(config, text);
      if (i % 4 === 0) {
        const r = await bal(home, "graceful");
        assert.equal(r.code, 1, r.stdout);
        assert.doesNotMatch(r.stderr, /^\s+at /m);
      } else {
        const before = reloads();
        Deno.kill(d.pid, "SIGHUP");
        await waitFor("the reload's outcome", () => reloads() > before, 10_000);
        const state = JSON.parse(Deno.readTextFileSync(`${home}/bal.state.json`));
        assert.equal(state.last_reload.ok, false);
        assert.equal(state.last_reload.generation, 1, "the running config is the first one");
        assert.ok(!state.last_reload.error.includes("\n"));
      }
      (await echoing(port, `r${i}`)).close();
    }
    Deno.writeTextFileSync(config, good);
    assert.equal((await bal(home, "graceful")).code, 0);
    const failed = d.log().filter((l) => l.event === "reload_failed").length;
    figures.live_reload = { bad_configs: N, reload_failed_logged: failed, still_serving: true };
  } finally {
    await d.stop();
    await echo.close();
  }
  record("bad_input", figures);
});
