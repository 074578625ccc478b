/**
 * Discovery without sockets: DNS messages on the wire (built here byte by
 * byte, with name compression), SRV weights and priorities, and the config
 * that the targets found expand into.
 */
import assert from "node:assert/strict";
import { decodeResponse, encodeQuery } from "../../../src/net/dns_wire.ts";
import { expandConfig, srvWeights, type Target } from "../../../src/discovery/expand.ts";
import { parseConfig } from "../../../src/config/mod.ts";
import { name, pointer, response, rr, u16 } from "../../dns_messages.ts";

Deno.test("dns wire: a query names the question; answers come back with TTLs, compressed names read", () => {
  const q = encodeQuery(0x1234, "web.example.", "A");
  assert.deepEqual([...q.subarray(0, 12)], [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual([...q.subarray(12)], [...name("web.example"), 0, 1, 0, 1]);

  const question = [...name("web.example"), ...u16(1), ...u16(1)];
  const r = decodeResponse(response(0x1234, question, [
    rr(pointer(12), 5, 300, name("real.example")),
    rr(pointer(12), 1, 30, [10, 0, 0, 1]),
    rr(pointer(12), 28, 20, [0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1]),
  ]));
  assert.ok(typeof r !== "string");
  assert.equal(r.id, 0x1234);
  assert.equal(r.rcode, 0);
  assert.deepEqual(r.answers, [
    { type: "CNAME", name: "web.example", ttl: 300, target: "real.example" },
    { type: "A", name: "web.example", ttl: 30, address: "10.0.0.1" },
    { type: "AAAA", name: "web.example", ttl: 20, address: "2001:db8::1" },
  ]);

  const srvQ = [...name("_http._tcp.example"), ...u16(33), ...u16(1)];
  const srv = decodeResponse(response(7, srvQ, [
    rr(pointer(12), 33, 60, [...u16(10), ...u16(5), ...u16(8080), ...name("a.example")]),
    rr(pointer(12), 33, 45, [...u16(20), ...u16(0), ...u16(8081), ...pointer(23)]),
  ]));
  assert.ok(typeof srv !== "string");
  assert.deepEqual(
    srv.answers.map((a) => a.type === "SRV" && [a.priority, a.weight, a.port, a.target, a.ttl]),
    [
      [10, 5, 8080, "a.example", 60],
      [20, 0, 8081, "example", 45],
    ],
  );
});

Deno.test("dns wire: what is not a good answer is a reason, never a throw or a hang", () => {
  const question = [...name("x.example"), ...u16(1), ...u16(1)];
  const good = response(1, question, [rr(pointer(12), 1, 5, [1, 2, 3, 4])]);
  assert.equal(decodeResponse(good.subarray(0, 5)), "DNS response shorter than its header");
  assert.equal(decodeResponse(response(1, question, [], 0x0100)), "not a DNS response");
  assert.match(
    String(decodeResponse(good.subarray(0, good.length - 2))),
    /longer than the response/,
  );
  // A name that points at itself.
  const loop = response(1, [...pointer(12), ...u16(1), ...u16(1)], []);
  assert.equal(decodeResponse(loop), "DNS name pointers loop");
  const nx = decodeResponse(response(1, question, [], 0x8183));
  assert.ok(typeof nx !== "string" && nx.rcode === 3 && nx.answers.length === 0, "NXDOMAIN");
  let seed = 7;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  for (let i = 0; i < 5000; i++) {
    const bytes = good.slice();
    for (let m = 0; m < 4; m++) bytes[Math.floor(rand() * bytes.length)] = Math.floor(rand() * 256);
    const r = decodeResponse(bytes.subarray(0, Math.floor(rand() * bytes.length) + 1));
    assert.ok(typeof r === "string" || Array.isArray(r.answers));
  }
});

Deno.test("srv weights: kept when they fit, scaled to 256 when not, 0 picked rarely but not never", () => {
  assert.deepEqual(srvWeights([10, 20, 0]), [10, 20, 1]);
  assert.deepEqual(srvWeights([0, 0]), [1, 1]);
  assert.deepEqual(srvWeights([65535, 32768, 1]), [256, 128, 1]);
});

Deno.test("expand: dns and srv entries become backends with the entry's settings; the file's stay first", () => {
  const config = parseConfig(
    `services:
  - name: web
    port: 8080
    backends:
      - "10.0.0.1:80"
      - {dns: "web.example:80", weight: 3, max_connections: 9}
      - {srv: "_http._tcp.example", backup: false}
`,
    "/x.yaml",
  );
  const [web] = config.services;
  assert.deepEqual(web.backends.map((b) => b.address), ["10.0.0.1:80"]);
  assert.deepEqual(web.discovered.map((d) => [d.kind, d.name, d.port, d.template.id]), [
    ["dns", "web.example", 80, "web/dns:web.example:80"],
    ["srv", "_http._tcp.example", null, "web/srv:_http._tcp.example"],
  ]);
  const t = (host: string, port: number, weight: number | null, backup = false): Target => ({
    host,
    port,
    weight,
    backup,
  });
  const known = new Map([
    ["web/dns:web.example:80", [t("10.0.0.1", 80, null), t("10.0.0.2", 80, null)]],
    ["web/srv:_http._tcp.example", [t("10.0.0.5", 9000, 5), t("10.0.0.6", 9000, 1, true)]],
  ]);
  const expanded = expandConfig(config, known).services[0];
  assert.deepEqual(
    expanded.backends.map((b) => [b.id, b.source, b.origin, b.weight, b.backup, b.max_connections]),
    [
      ["web/10.0.0.1:80", "static", null, 1, false, null],
      ["web/10.0.0.2:80", "dns", "web.example", 3, false, 9],
      ["web/10.0.0.5:9000", "srv", "_http._tcp.example", 5, false, null],
      ["web/10.0.0.6:9000", "srv", "_http._tcp.example", 1, true, null],
    ],
  );
  assert.ok(Object.isFrozen(expanded.backends));
  assert.equal(expandConfig(config, new Map()).services[0].backends.length, 1, "pending: none yet");
});
