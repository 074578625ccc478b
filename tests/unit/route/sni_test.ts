/**
 * SNI routing without sockets: the ClientHello reader on captured real
 * ClientHellos (tests/fixtures/client_hello: openssl s_client TLS 1.2 and
 * 1.3 with and without SNI, node's tls.connect, and headless Chromium,
 * whose ClientHello carries an encrypted_client_hello extension and the
 * outer, public name), split and fuzzed; the route table; the preface
 * reader that joins a PROXY header and a ClientHello.
 */
import assert from "node:assert/strict";
import { HELLO_MAX, type HelloRead, parseClientHello } from "../../../src/route/client_hello.ts";
import { routeFor, routeTable, unreachableRoutes } from "../../../src/route/sni.ts";
import { prefaceReader } from "../../../src/route/preface.ts";
import { writeProxyHeader } from "../../../src/route/proxy_protocol.ts";

const fixtures = new URL("../../fixtures/client_hello/", import.meta.url);
const hello = (name: string) =>
  Uint8Array.from(
    Deno.readTextFileSync(new URL(`${name}.hex`, fixtures)).trim().match(/../g)!,
    (h) => parseInt(h, 16),
  );

const CAPTURED: [string, string | null][] = [
  ["tls13_sni", "app.example.com"],
  ["tls12_sni", "api.example.com"],
  ["tls13_nosni", null],
  ["tls12_nosni", null],
  ["node_sni", "node.example.com"],
  ["chromium_grease_ech", "public.example.com"],
];

/** The same handshake bytes re-cut into records of at most `size` bytes. */
function refragment(bytes: Uint8Array, size: number): Uint8Array {
  const body = bytes.subarray(5);
  const out: number[] = [];
  for (let at = 0; at < body.length; at += size) {
    const part = body.subarray(at, at + size);
    out.push(0x16, 3, 1, part.length >> 8, part.length & 0xff, ...part);
  }
  return Uint8Array.from(out);
}

Deno.test("client hello: the server name of captured ClientHellos (TLS 1.2, 1.3, none, ECH outer)", () => {
  for (const [name, sni] of CAPTURED) {
    const bytes = hello(name);
    assert.deepEqual(parseClientHello(bytes), { kind: "hello", sni }, name);
    // Every prefix is "more, please", never a verdict.
    for (let n = 0; n < bytes.length; n++) {
      assert.equal(parseClientHello(bytes.subarray(0, n)), null, `${name} cut at ${n}`);
    }
  }
  // Chromium's ClientHello has the ECH extension (0xfe0d): the name read is the outer one.
  const chromium = hello("chromium_grease_ech");
  assert.ok(chromium.length > 1500, "post-quantum key share: a large ClientHello");
  assert.ok(hexOf(chromium).includes("fe0d00"), "carries encrypted_client_hello");
});

Deno.test("client hello: a ClientHello over several records, and what is not one", () => {
  for (const size of [1, 7, 100, 512]) {
    for (const [name, sni] of CAPTURED) {
      const cut = refragment(hello(name), size);
      assert.deepEqual(parseClientHello(cut), { kind: "hello", sni }, `${name} in ${size}s`);
    }
  }
  const none = (bytes: Uint8Array | string) => {
    const r = parseClientHello(typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes);
    assert.equal(r?.kind, "none", JSON.stringify(r));
    return (r as { reason: string }).reason;
  };
  assert.match(none("GET / HTTP/1.1\r\n"), /not TLS/);
  assert.match(none("SSH-2.0-OpenSSH_9.2\r\n"), /not TLS/);
  assert.match(none(new Uint8Array([0x16, 0x02, 0x00, 0x00, 0x05])), /record version/);
  assert.match(none(new Uint8Array([0x16, 0x03, 0x01, 0x00, 0x00])), /record of 0 bytes/);
  assert.match(none(new Uint8Array([0x16, 0x03, 0x01, 0xff, 0xff])), /record of 65535 bytes/);
  // A ServerHello (type 2) where a ClientHello belongs.
  assert.match(none(new Uint8Array([0x16, 3, 1, 0, 4, 2, 0, 0, 0])), /not a ClientHello/);
  // An alert record after the first handshake fragment.
  const split = refragment(hello("tls13_sni"), 50);
  split[55] = 0x15;
  assert.match(none(split), /other than handshake/);
  // A ClientHello that claims more than the cap, and records that never complete one.
  assert.match(none(new Uint8Array([0x16, 3, 1, 0, 4, 1, 0x01, 0x00, 0x00])), /over 16384/);
  // A ClientHello of 16383 bytes claimed, cut in records whose headers fill the cap first.
  const claimed = new Uint8Array(5 + 16300);
  claimed.set([1, 0, 0x3f, 0xff], 5);
  const endless = refragment(claimed, 1000);
  assert.ok(endless.length >= HELLO_MAX);
  assert.match(none(endless), /no complete ClientHello in 16384 bytes/);
  // A server name that is not a DNS name.
  const bad = hello("tls13_sni");
  const at = hexOf(bad).indexOf(hexOf(new TextEncoder().encode("app.example.com"))) / 2;
  bad[at + 3] = 0x20;
  assert.match(none(bad), /not a DNS name/);
});

Deno.test("client hello: 10,000 random, mutated and truncated inputs never throw or hang", () => {
  let seed = 0x5eed;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const int = (n: number) => Math.floor(rand() * n);
  const bases = CAPTURED.map(([name]) => hello(name));
  const verdicts = { hello: 0, none: 0, more: 0 };
  const started = performance.now();
  for (let i = 0; i < 10_000; i++) {
    let bytes: Uint8Array;
    const kind = i % 4;
    if (kind === 0) {
      bytes = Uint8Array.from({ length: int(600) }, () => int(256));
      if (rand() < 0.5 && bytes.length > 5) bytes.set([0x16, 3, int(4)]);
    } else {
      bytes = bases[int(bases.length)].slice();
      // Lengths that lie: mutate bytes, above all the length fields near the front.
      for (let m = 0, n = 1 + int(8); m < n; m++) {
        const pos = rand() < 0.5 ? int(Math.min(bytes.length, 120)) : int(bytes.length);
        bytes[pos] = rand() < 0.3 ? 0xff : int(256);
      }
      if (kind === 2) bytes = bytes.subarray(0, int(bytes.length));
      if (kind === 3) bytes = refragment(bytes, 1 + int(300));
    }
    const r: HelloRead | null = parseClientHello(bytes);
    if (r === null) verdicts.more++;
    else {
      verdicts[r.kind]++;
      if (r.kind === "hello" && r.sni !== null) assert.match(r.sni, /^[a-z0-9_.-]+$/);
      if (r.kind === "none") assert.equal(typeof r.reason, "string");
    }
  }
  // Each kind of answer happened, so the fuzz reached past the first checks.
  assert.ok(verdicts.hello > 100 && verdicts.none > 100 && verdicts.more > 100, String(verdicts));
  assert.ok(performance.now() - started < 20_000, "no input takes long");
});

Deno.test("sni routes: exact before the longest wildcard, any depth, first route wins a tie", () => {
  const routes = [
    { name: "app", sni: ["app.example.com", "*.app.example.com"] },
    { name: "wild", sni: ["*.example.com"] },
    { name: "twin", sni: ["app.example.com", "*.example.com"] },
    { name: "other", sni: ["api.example.org"] },
    { name: "fallback", sni: [] },
  ];
  const table = routeTable(routes, "fallback");
  const to = (sni: string | null) => routeFor(table, sni);
  assert.equal(to("app.example.com"), "app");
  assert.equal(to("v2.app.example.com"), "app");
  assert.equal(to("a.b.app.example.com"), "app");
  assert.equal(to("www.example.com"), "wild");
  assert.equal(to("deep.www.example.com"), "wild");
  assert.equal(to("example.com"), "fallback", "a wildcard never matches its bare suffix");
  assert.equal(to("api.example.org"), "other");
  assert.equal(to("xexample.com"), "fallback");
  assert.equal(to(null), "fallback");
  assert.equal(routeFor(routeTable(routes, null), "nothing.test"), null);
  assert.deepEqual(unreachableRoutes(routes, "fallback"), [
    { route: "twin", why: "every name it lists belongs to an earlier route (app, wild)" },
  ]);
  assert.deepEqual(unreachableRoutes(routes, null).map((u) => u.route), ["twin", "fallback"]);
});

Deno.test("preface: a PROXY header then a ClientHello, byte by byte; deadlines per part", () => {
  const header = writeProxyHeader("v2", { hostname: "192.0.2.7", port: 4000 }, {
    hostname: "198.51.100.1",
    port: 443,
  });
  const ch = hello("tls12_sni");
  const all = new Uint8Array([...header, ...ch]);
  let admitted = 0;
  const reader = prefaceReader({ proxyMs: 3000, helloMs: 5000, onProxy: () => !!++admitted }, 0);
  assert.equal(reader.deadline, 3000);
  let out = null;
  for (let i = 0; i < all.length && out === null; i++) {
    out = reader.feed(all.subarray(i, i + 1), 10 + i);
    if (i === header.length - 1) assert.equal(reader.deadline, 10 + i + 5000, "hello's own clock");
  }
  assert.equal(admitted, 1);
  assert.ok(out !== null && typeof out !== "string");
  assert.equal(out.source?.hostname, "192.0.2.7");
  assert.deepEqual(out.hello, { kind: "hello", sni: "api.example.com" });
  assert.deepEqual(out.early, ch, "the ClientHello is passed on unchanged, without the header");

  // Refused by the caller once the header is in.
  const refused = prefaceReader({ proxyMs: 1, helloMs: 1, onProxy: () => false }, 0);
  assert.equal(refused.feed(header, 0), "");
  // Timeouts: in the header, a refusal; in the ClientHello, no name and what came so far.
  const late = prefaceReader({ proxyMs: 3000, helloMs: 5000, onProxy: () => true }, 0);
  assert.equal(late.end("timeout"), "no complete PROXY header within 3000 ms");
  assert.equal(late.feed(header, 0), null);
  assert.equal(late.feed(ch.subarray(0, 10), 0), null);
  const gaveUp = late.end("timeout");
  assert.ok(typeof gaveUp !== "string");
  assert.deepEqual(gaveUp.hello, {
    kind: "none",
    reason: "no complete ClientHello within 5000 ms",
  });
  assert.deepEqual(gaveUp.early, ch.subarray(0, 10));
  // Without accept_proxy: plain bytes straight into the ClientHello reader.
  const plain = prefaceReader({ proxyMs: null, helloMs: 5000, onProxy: () => true }, 0);
  const r = plain.feed(new TextEncoder().encode("SSH-2.0-x\r\n"), 0);
  assert.ok(r !== null && typeof r !== "string" && r.hello?.kind === "none");
});

function hexOf(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("client hello: what follows the ClientHello (early data, a change_cipher_spec) is not looked at", () => {
  for (const size of [40, 5000]) {
    const first = refragment(hello("tls13_sni"), size);
    const ccs = [0x14, 3, 3, 0, 1, 1];
    const r = parseClientHello(
      new Uint8Array([...first, ...ccs, 0x17, 3, 3, 0, 2, 9, 9, ...text("x")]),
    );
    assert.deepEqual(r, { kind: "hello", sni: "app.example.com" }, `records of ${size}`);
  }
});

function text(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

/** A minimal TLS 1.2 ClientHello in one record whose server_name carries `name` as it is. */
function helloNaming(name: Uint8Array): Uint8Array {
  const u16 = (n: number) => [n >> 8, n & 0xff];
  const entry = [0, ...u16(name.length), ...name];
  const ext = [0, 0, ...u16(entry.length + 2), ...u16(entry.length), ...entry];
  const body = [
    3,
    3,
    ...new Array(32).fill(7),
    0,
    0,
    2,
    0x13,
    0x01,
    1,
    0,
    ...u16(ext.length),
    ...ext,
  ];
  const message = [1, 0, ...u16(body.length), ...body];
  return Uint8Array.from([0x16, 3, 1, ...u16(message.length), ...message]);
}

Deno.test("client hello: a server name is a DNS name, lowercased, as the rule says (3,000 names)", () => {
  // The rule, as a regular expression (what an earlier version ran per client).
  const rule =
    /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;
  let seed = 0xd115;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const alphabet = "abcXYZ019_-.-.\u00e9 ";
  const names = [
    "a",
    "A.EXAMPLE.COM.",
    "x".repeat(63) + ".io",
    "x".repeat(64) + ".io",
    "-a.b",
    "a-.b",
  ];
  names.push("a.".repeat(126) + "b", "a.".repeat(126) + "bc", "..", ".", "", "a..b", "_dmarc.ex");
  while (names.length < 3000) {
    const length = rand() < 0.1 ? 240 + Math.floor(rand() * 20) : Math.floor(rand() * 24);
    names.push(
      Array.from({ length }, () => alphabet[Math.floor(rand() * alphabet.length)]).join(""),
    );
  }
  for (const name of names) {
    const bytes = Uint8Array.from(name, (c) => c.charCodeAt(0));
    const lowered = name.toLowerCase().replace(/\.$/, "");
    const got = parseClientHello(helloNaming(bytes));
    if (rule.test(lowered)) assert.deepEqual(got, { kind: "hello", sni: lowered }, name);
    else assert.match((got as { reason: string }).reason, /is not a DNS name/, name);
  }
});
