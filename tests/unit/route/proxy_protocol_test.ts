/** The PROXY protocol reader and writer, without sockets. */
import assert from "node:assert/strict";
import {
  parseProxyHeader,
  tlsTlvs,
  withTlvs,
  writeProxyHeader,
} from "../../../src/route/proxy_protocol.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const client = { hostname: "192.0.2.10", port: 51234 };
const bal = { hostname: "198.51.100.1", port: 443 };

Deno.test("proxy protocol: v1 and v2 round trips, IPv4, IPv6 and mixed families", () => {
  for (const version of ["v1", "v2"] as const) {
    const h = writeProxyHeader(version, client, bal);
    const data = new Uint8Array([...h, ...enc("GET /")]);
    const r = parseProxyHeader(data);
    assert.equal(r.kind, "header");
    if (r.kind !== "header") continue;
    assert.equal(r.length, h.length);
    assert.equal(r.version, version === "v1" ? 1 : 2);
    assert.deepEqual([r.source, r.destination], [client, bal]);
    const six = writeProxyHeader(version, { hostname: "2001:db8::1", port: 1 }, {
      hostname: "::1",
      port: 2,
    });
    const p6 = parseProxyHeader(six);
    assert.ok(
      p6.kind === "header" && p6.source?.hostname === "2001:db8::1" && p6.destination?.port === 2,
    );
    // A v4 client on a dual-stack socket is IPv4 when bal's side is too, IPv6 (mapped) when not.
    const mappedBoth = parseProxyHeader(
      writeProxyHeader(version, { hostname: "::ffff:10.0.0.1", port: 5 }, {
        hostname: "::ffff:10.0.0.2",
        port: 6,
      }),
    );
    assert.ok(mappedBoth.kind === "header" && mappedBoth.source?.hostname === "10.0.0.1");
    const mixed = parseProxyHeader(
      writeProxyHeader(version, { hostname: "10.0.0.1", port: 5 }, { hostname: "::1", port: 6 }),
    );
    assert.ok(
      mixed.kind === "header" && mixed.source?.hostname === "::ffff:10.0.0.1",
      JSON.stringify(mixed),
    );
  }
  assert.equal(
    new TextDecoder().decode(writeProxyHeader("v1", client, bal)),
    "PROXY TCP4 192.0.2.10 198.51.100.1 51234 443\r\n",
  );
});

Deno.test("proxy protocol: byte by byte it is incomplete until the last byte, for both versions", () => {
  for (const version of ["v1", "v2"] as const) {
    const h = writeProxyHeader(version, client, bal);
    for (let n = 0; n < h.length; n++) {
      assert.equal(parseProxyHeader(h.subarray(0, n)).kind, "incomplete", `${version} at ${n}`);
    }
    assert.equal(parseProxyHeader(h).kind, "header");
  }
});

Deno.test("proxy protocol: UNKNOWN, LOCAL and other families keep the peer; bad headers say why", () => {
  const unknown = parseProxyHeader(enc("PROXY UNKNOWN\r\nrest"));
  assert.ok(unknown.kind === "header" && unknown.source === null && unknown.length === 15);
  const local = writeProxyHeader("v2", client, bal);
  local[12] = 0x20;
  const l = parseProxyHeader(local);
  assert.ok(l.kind === "header" && l.source === null && l.length === local.length);
  const unix = writeProxyHeader("v2", client, bal);
  unix[13] = 0x31;
  assert.ok(parseProxyHeader(unix).kind === "header");
  const bad: [Uint8Array, RegExp][] = [
    [enc("GET / HTTP/1.1\r\n"), /no PROXY protocol header/],
    [enc("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), /without CRLF/],
    [enc("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), /not TCP4, TCP6 or UNKNOWN/],
    [enc("PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n"), /bad address or port/],
    [enc("PROXY TCP4 ::1 5.6.7.8 1 2\r\n"), /bad address or port/],
    [enc("PROXY TCP6 1.2.3.4 ::1 1 2\r\n"), /bad address or port/],
    [enc("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"), /bad address or port/],
    [enc("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), /bad address or port/],
    [enc("PROXY " + "x".repeat(120)), /longer than 107/],
  ];
  for (const [bytes, reason] of bad) {
    const r = parseProxyHeader(bytes);
    assert.ok(r.kind === "invalid" && reason.test(r.reason), `${JSON.stringify(r)}`);
  }
  const v3 = writeProxyHeader("v2", client, bal);
  v3[12] = 0x31;
  assert.match((parseProxyHeader(v3) as { reason: string }).reason, /version 3/);
  const long = writeProxyHeader("v2", client, bal);
  new DataView(long.buffer).setUint16(14, 60000);
  assert.match((parseProxyHeader(long) as { reason: string }).reason, /longer than/);
  const short = writeProxyHeader("v2", client, bal);
  new DataView(short.buffer).setUint16(14, 4);
  assert.match((parseProxyHeader(short) as { reason: string }).reason, /too short/);
});

Deno.test("proxy protocol: 10,000 random and mutated inputs never throw, and lengths stay in bounds", () => {
  let seed = 12345;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  const seeds = [
    writeProxyHeader("v1", client, bal),
    writeProxyHeader("v2", client, bal),
    writeProxyHeader("v2", { hostname: "::1", port: 1 }, { hostname: "::2", port: 2 }),
  ];
  for (let i = 0; i < 10_000; i++) {
    const base = seeds[i % 3];
    const bytes = i % 4 === 0
      ? new Uint8Array(rand(200)).map(() => rand(256))
      : base.slice(0, rand(base.length + 20)).map((b) => (rand(10) === 0 ? rand(256) : b));
    const r = parseProxyHeader(bytes);
    if (r.kind === "header") assert.ok(r.length > 0 && r.length <= bytes.length);
  }
});

Deno.test("config: send_proxy per service and backend, accept_proxy needs proxy_trusted, with positions", async () => {
  const { checkConfig, parseConfig } = await import("../../../src/config/mod.ts");
  const F = "/etc/bal/p.yaml";
  const c = parseConfig(
    `services:\n  - name: a\n    port: 80\n    send_proxy: v2\n    accept_proxy: true\n    proxy_trusted: [10.0.0.5, "10.1.0.0/16"]\n    backends:\n      - "10.0.0.1:80"\n      - {host: 10.0.0.2, port: 80, send_proxy: v1}\n      - {host: 10.0.0.3, port: 80, send_proxy: "off"}\n    runtime: {proxy_header_timeout_ms: 500}\n`,
    F,
  );
  const s = c.services[0];
  assert.deepEqual(s.backends.map((b) => b.send_proxy), ["v2", "v1", null]);
  assert.equal(s.accept_proxy, true);
  assert.deepEqual(s.proxy_trusted.map((t) => t.text), ["10.0.0.5", "10.1.0.0/16"]);
  assert.equal(s.runtime.proxy_header_timeout_ms, 500);
  const plain = parseConfig(`port: 80\nbackends: ["10.0.0.1:80"]\n`, F).services[0];
  assert.deepEqual([plain.send_proxy, plain.accept_proxy, plain.backends[0].send_proxy], [
    null,
    false,
    null,
  ]);
  const r = checkConfig(
    `port: 80\nsend_proxy: v3\naccept_proxy: true\nbackends: [{host: 10.0.0.1, port: 80, send_proxy: yes}]\n`,
    F,
  );
  assert.deepEqual(r.ok ? [] : r.errors.map((e) => e.message), [
    `${F}:2:13: send_proxy: expected one of "v1", "v2", got the text "v3"; did you mean "v1"?`,
    `${F}:3:15: accept_proxy: needs proxy_trusted: the addresses of the proxies in front, e.g. proxy_trusted: [10.0.0.5]; a header from any other address is refused`,
    `${F}:4:51: backends[0].send_proxy: expected one of "v1", "v2", "off", got the text "yes"`,
  ]);
});

Deno.test("config: health_check_send_proxy sends the backend's version (v1 by default), and not over TLS", async () => {
  const { checkConfig, parseConfig } = await import("../../../src/config/mod.ts");
  const F = "/etc/bal/h.yaml";
  const c = parseConfig(
    `port: 80\nhealth_check_send_proxy: true\nbackends: ["10.0.0.1:80", {host: 10.0.0.2, port: 80, send_proxy: v2}]\n`,
    F,
  );
  assert.deepEqual(c.services[0].backends.map((b) => [b.send_proxy, b.check_send_proxy]), [
    [null, "v1"],
    ["v2", "v2"],
  ]);
  const r = checkConfig(
    `port: 80\nhealth_check_send_proxy: true\nhealth_check: {type: tls}\nbackends: ["10.0.0.1:443"]\n`,
    F,
  );
  assert.deepEqual(r.ok ? [] : r.errors.map((e) => e.message), [
    `${F}:2:26: health_check_send_proxy: not supported with a TLS check (backend 10.0.0.1:443); use a tcp or http check`,
  ]);
});

Deno.test("proxy protocol: v2 TLS fields carry ALPN, the server name, the client flags, verify and version", () => {
  const header = writeProxyHeader("v2", client, bal);
  const facts = {
    version: "TLSv1.3",
    sni: "a.test",
    alpn: "h2",
    clientCert: true,
    clientCn: "client-1",
  };
  const out = withTlvs(header, tlsTlvs(facts));
  // The length field covers the addresses and the TLVs, so a reader skips them together.
  const parsed = parseProxyHeader(new Uint8Array([...out, ...enc("GET /")]));
  assert.ok(parsed.kind === "header" && parsed.length === out.length);
  const tlvs = out.subarray(header.length);
  assert.deepEqual([...tlvs.subarray(0, 5)], [0x01, 0, 2, ...enc("h2")]);
  assert.deepEqual([...tlvs.subarray(5, 14)], [0x02, 0, 6, ...enc("a.test")]);
  const ssl = tlvs.subarray(14);
  assert.equal(ssl[0], 0x20);
  assert.equal((ssl[1] << 8) | ssl[2], ssl.length - 3);
  assert.equal(ssl[3], 0x07, "SSL, certificate on this connection and session");
  assert.deepEqual([...ssl.subarray(4, 8)], [0, 0, 0, 0], "verified");
  assert.deepEqual([...ssl.subarray(8, 11)], [0x21, 0, 7]);
  assert.equal(new TextDecoder().decode(ssl.subarray(11, 18)), "TLSv1.3");
  assert.deepEqual([...ssl.subarray(18, 21)], [0x22, 0, 8]);
  // No certificate: only the SSL flag, and verify is not zero; no names, no ALPN: no fields.
  const bare = tlsTlvs({ ...facts, sni: null, alpn: null, clientCert: false, clientCn: null });
  assert.deepEqual([...bare.subarray(0, 8)], [0x20, 0, 15, 0x01, 0, 0, 0, 1]);
  // v1 has no room for them.
  const v1 = writeProxyHeader("v1", client, bal);
  assert.equal(withTlvs(v1, tlsTlvs(facts)), v1);
});
