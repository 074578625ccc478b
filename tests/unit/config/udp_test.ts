/**
 * UDP services in the config: `protocol: udp`, the `udp:` block and its
 * defaults, the UDP checks, and what a UDP service refuses, with line:col.
 */
import assert from "node:assert/strict";
import { checkConfig } from "../../../src/config/mod.ts";

const F = "/etc/bal/u.yaml";

function errorsOf(text: string): string[] {
  const r = checkConfig(text, F);
  assert.equal(r.ok, false, `expected errors for:\n${text}`);
  return r.ok ? [] : r.errors.map((e) => e.message);
}

Deno.test("config udp: defaults per mode, and the dns and udp checks", () => {
  const r = checkConfig(
    `services:
  - name: dns
    protocol: udp
    port: 53
    udp: {mode: request}
    health_check: {type: dns, name: example.com, qtype: AAAA, expect_rcode: NXDOMAIN}
    backends: ["10.0.0.1:53"]
  - name: game
    protocol: udp
    port: 7777
    health_check: {type: udp, send: "ping", expect: "pong"}
    backends: ["10.0.0.2:7777"]
  - name: web
    port: 53
    backends: ["10.0.0.1:53"]
`,
    F,
  );
  assert.ok(r.ok, r.ok ? "" : r.errors.map((e) => e.message).join("\n"));
  const [dns, game, web] = r.config.services;
  assert.equal(dns.protocol, "udp");
  assert.deepEqual(dns.udp, {
    mode: "request",
    responses: 1,
    idle_timeout_ms: 5000,
    max_datagram_bytes: 65507,
  });
  assert.deepEqual(dns.backends[0].check.dns, {
    name: "example.com",
    qtype: "AAAA",
    expect_rcode: 3,
  });
  assert.equal(game.udp?.mode, "session");
  assert.equal(game.udp?.idle_timeout_ms, 30000);
  assert.deepEqual(game.backends[0].check.udp, {
    send_hex: "70696e67",
    expect: { match: "string", value: "706f6e67" },
  });
  assert.equal(web.protocol, "tcp");
  assert.equal(web.udp, null);
  assert.equal(web.backends[0].check.type, "tcp");
});

Deno.test("config udp: a UDP service without a check probes nothing", () => {
  const r = checkConfig(`protocol: udp\nport: 514\nbackends: ["10.0.0.1:514"]\n`, F);
  assert.ok(r.ok);
  assert.equal(r.config.services[0].backends[0].check.type, "none");
});

Deno.test("config udp: what makes no sense for datagrams is refused at its line", () => {
  assert.deepEqual(
    errorsOf(`services:
  - name: a
    protocol: udp
    port: 53
    send_proxy: v1
    health_check: {type: http, path: /}
    udp: {mode: stream, max_datagram_bytes: 70000}
    routes: [{name: r, sni: [a.example], backends: ["10.0.0.1:53"]}]
  - name: b
    protocol: udp
    port: 53
    backends: ["10.0.0.1:53"]
  - name: c
    port: 80
    udp: {mode: request}
    health_check: {type: dns, name: x.example}
    backends: ["10.0.0.1:80"]
`),
    [
      `${F}:5:17: services[0].send_proxy: PROXY v1 is text for TCP; UDP takes v2 (a header on every datagram)`,
      `${F}:6:5: services[0].health_check.type: a http check is for TCP; a UDP service takes dns or udp`,
      `${F}:7:17: services[0].udp.mode: expected one of "session", "request", got the text "stream"`,
      `${F}:7:45: services[0].udp.max_datagram_bytes: expected an integer from 1 to 65507, got 70000`,
      `${F}:8:5: services[0].routes: SNI routes read a TLS ClientHello, which UDP does not carry`,
      `${F}:11:11: services[1].port: service "b" listens on 0.0.0.0:53, which collides with service "a" on 0.0.0.0:53 (services[0] at 4:11); give each service its own port or address`,
      `${F}:15:5: services[2].udp: goes with \`protocol: udp\`; this service is TCP`,
      `${F}:16:5: services[2].health_check.type: a dns check is for UDP services (protocol: udp)`,
    ],
  );
});
