/** Health checks without sockets: the config block, expects, HTTP verdicts, agents, slow start. */
import assert from "node:assert/strict";
import { checkConfig, parseConfig } from "../../../src/config/mod.ts";
import { unescape } from "../../../src/config/check_steps.ts";
import { binary, matchEnd, printable } from "../../../src/health/expect.ts";
import { httpVerdict } from "../../../src/health/http_check.ts";
import { parseAgent } from "../../../src/health/agent.ts";
import { initialHealth, observe } from "../../../src/health/state.ts";
import { effectiveWeight } from "../../../src/balance/select.ts";

const F = "/c.yaml";
const errorsOf = (text: string) => {
  const r = checkConfig(text, F);
  assert.equal(r.ok, false, text);
  return r.ok ? [] : r.errors.map((e) => e.message);
};

Deno.test("checks config: a service's check applies to its backends, a backend's own replaces it", () => {
  const c = parseConfig(
    `runtime: {health_check_interval_ms: 700}
health_check:
  type: send_expect
  steps: [{send: "PING\\\\r\\\\n"}, {expect: "+PONG"}]
  timeout_ms: 300
backends:
  - 127.0.0.1:6379
  - host: 127.0.0.1
    port: 6380
    health_check: {type: http, path: /health, expect_status: [200, "300-302"], tls: true}
`,
    F,
  );
  const [a, b] = c.services[0].backends;
  assert.equal(a.check.type, "send_expect");
  assert.equal(a.check.interval_ms, 700, "timing defaults to the runtime keys");
  assert.equal(a.check.timeout_ms, 300);
  assert.deepEqual(a.check.steps.map((s) => s.kind), ["send", "expect"]);
  assert.deepEqual(a.check.steps[0], {
    kind: "send",
    hex: "50494e470d0a",
    label: '"PING\\\\r\\\\n"',
  });
  assert.equal(b.check.type, "http");
  assert.deepEqual(b.check.http!.expect_status, [[200, 200], [300, 302]]);
  assert.deepEqual(b.check.tls, { server_name: null, verify: false, ca_file: null });
  // Without any block: today's TCP connect check.
  assert.equal(parseConfig("backends: ['a:1']\n", F).services[0].backends[0].check.type, "tcp");
});

Deno.test("checks config: every field is checked with line:col and says what is wrong", () => {
  assert.match(
    errorsOf("health_check: {type: htp}\nbackends: ['a:1']\n")[0],
    /:1:22: health_check\.type: expected one of "tcp", "send_expect", "http", "tls", "agent", "dns", "udp", "none", got the text "htp"; did you mean "http"\?/,
  );
  assert.match(
    errorsOf(
      "health_check: {type: send_expect, steps: [{expect_regex: '(+'}]}\nbackends: ['a:1']\n",
    )[0],
    /:1:58: health_check\.steps\[0\]\.expect_regex: not a valid regex: /,
  );
  assert.match(
    errorsOf("health_check: {type: tcp, path: /x}\nbackends: ['a:1']\n")[0],
    /health_check\.path: not used by a tcp check; it belongs to http checks/,
  );
  assert.match(
    errorsOf("health_check: {type: agent}\nbackends: ['a:1']\n")[0],
    /health_check\.agent_port: missing; an agent check needs the port its agent answers on/,
  );
  assert.match(
    errorsOf("health_check: {type: send_expect}\nbackends: ['a:1']\n")[0],
    /health_check\.steps: a send_expect check needs a non-empty list of steps/,
  );
  assert.match(
    errorsOf("health_check: {type: http, expect_status: [700]}\nbackends: ['a:1']\n")[0],
    /health_check\.expect_status\[0\]: expected a status such as 200 or a range such as "200-399", got 700/,
  );
  assert.match(
    errorsOf(
      "health_check: {type: send_expect, steps: [{send_hex: 'zz'}]}\nbackends: ['a:1']\n",
    )[0],
    /steps\[0\]\.send_hex: "zz" is not hex bytes/,
  );
  assert.match(
    errorsOf(
      "backends:\n  - {host: a, port: 1, health_check: {type: http, expect_body: '['}}\n",
    )[0],
    /:2:64: backends\[0\]\.health_check\.expect_body: not a valid regex: /,
  );
});

Deno.test("checks: escapes, expect matching (string, regex, hex) and printable excerpts", () => {
  assert.deepEqual(unescape("a\\r\\n\\x00\\\\"), new Uint8Array([97, 13, 10, 0, 92]));
  assert.match(unescape("\\q") as string, /unknown escape \\q/);
  const received = binary(new TextEncoder().encode("220 mail ready\r\n"));
  assert.equal(
    matchEnd({ kind: "expect", match: "regex", value: "^220 ", label: "" }, received),
    4,
  );
  assert.equal(
    matchEnd({ kind: "expect", match: "string", value: "7265616479", label: "" }, received),
    14,
  );
  assert.equal(matchEnd({ kind: "expect", match: "hex", value: "0d0a", label: "" }, received), 16);
  assert.equal(
    matchEnd({ kind: "expect", match: "string", value: "2b504f4e47", label: "" }, received),
    null,
  );
  assert.equal(printable("-NOAUTH x\r\n\u0001"), '"-NOAUTH x\\r\\n\\x01"');
  assert.match(printable("y".repeat(500)), /^"y{80}"… \(500 bytes\)$/);
});

Deno.test("checks: the HTTP verdict: status ranges, body regex, not HTTP at all", () => {
  const check = {
    method: "GET",
    path: "/",
    host: null,
    headers: {},
    expect_status: [[200, 399]] as [number, number][],
    expect_body: null,
  };
  assert.equal(httpVerdict(check, "HTTP/1.1 204 No Content\r\n\r\n"), null);
  assert.equal(
    httpVerdict(check, "HTTP/1.1 503 Busy\r\nx: y\r\n\r\nno"),
    "HTTP status 503, expected 200-399",
  );
  assert.match(
    httpVerdict(check, "SSH-2.0-OpenSSH\r\n")!,
    /^not an HTTP response: got "SSH-2\.0-OpenSSH\\r\\n"/,
  );
  const body = { ...check, expect_body: '"status":\\s*"ok"' };
  assert.equal(httpVerdict(body, 'HTTP/1.0 200 OK\r\n\r\n{"status": "ok"}'), null);
  assert.match(
    httpVerdict(body, 'HTTP/1.0 200 OK\r\n\r\n{"status": "bad"}')!,
    /^body does not match/,
  );
});

Deno.test("checks: agent answers (up, down, drain, maint, N%), unknown words ignored", () => {
  assert.deepEqual(parseAgent("up\n", null), {
    ok: true,
    agent: { mode: "ready", weight_percent: null },
  });
  assert.deepEqual(parseAgent("drain 50%", null), {
    ok: true,
    agent: { mode: "drain", weight_percent: 50 },
  });
  const down = parseAgent("down", { mode: "drain", weight_percent: 50 });
  assert.equal(down.ok, false);
  assert.equal(down.error, "the agent says down");
  assert.deepEqual(
    down.agent,
    { mode: "drain", weight_percent: 50 },
    "down keeps what it did not change",
  );
  assert.deepEqual(parseAgent("ready, 75%, hello", { mode: "maint", weight_percent: null }).agent, {
    mode: "ready",
    weight_percent: 75,
  });
  assert.equal(parseAgent("", null).error, "the agent answered nothing");
});

Deno.test("checks: slow start ramps a backend that came back up from 10 % to its full weight", () => {
  const policy = {
    fail: 1,
    success: 1,
    backoffInitialMs: 1,
    backoffMaxMs: 1,
    cooldownMs: 0,
    factor: 1,
  };
  const down = observe(initialHealth(), { ok: false, at: 1000, source: "check" }, policy);
  const up = observe(down, { ok: true, at: 2000, source: "check" }, policy);
  assert.equal(up.up_since, 2000);
  assert.equal(
    observe(up, { ok: true, at: 2500, source: "check" }, policy).up_since,
    2000,
    "stays while up",
  );
  const [backend] =
    parseConfig("backends: [{host: a, port: 1, weight: 10}]\n", F).services[0].backends;
  const view = { backend, health: up, admin: undefined, active: 0 };
  assert.equal(effectiveWeight(view, 2000, 1000), 1);
  assert.equal(effectiveWeight(view, 2500, 1000), 5.5);
  assert.equal(effectiveWeight(view, 3000, 1000), 10);
  assert.equal(effectiveWeight(view, 2000, 0), 10, "off: full weight at once");
  assert.equal(
    effectiveWeight({ ...view, health: initialHealth() }, 2000, 1000),
    10,
    "never down: no ramp",
  );
  const halved = { ...up, agent: { mode: "ready" as const, weight_percent: 50 } };
  assert.equal(effectiveWeight({ ...view, health: halved }, 3000, 1000), 5);
});
