/**
 * What a client sends first (a PROXY header, a ClientHello, both) arriving
 * in pieces, with short pauses between them: whatever the split, the
 * backend must get every byte at once, and its answer must come back while
 * the client still holds its side open. A lost readiness edge shows as a
 * request that waits until the client gives up (issue 24, item 1: about 3 %
 * of curl requests through HAProxy's send-proxy-v2).
 */
import assert from "node:assert/strict";
import { echoBackend, freePort, startDaemon, tempHome } from "../helpers.ts";

const hello = Uint8Array.from(
  Deno.readTextFileSync(new URL("../fixtures/client_hello/tls13_sni.hex", import.meta.url)).trim()
    .match(/../g)!,
  (h) => parseInt(h, 16),
);
const request = new TextEncoder().encode("GET / HTTP/1.0\r\nHost: t\r\n\r\n");
const proxyV1 = new TextEncoder().encode("PROXY TCP4 127.0.0.9 127.0.0.1 40000 443\r\n");
/** A v2 header: signature, PROXY command, TCP over IPv4, 12 bytes of addresses and ports. */
const proxyV2 = Uint8Array.of(
  ...[0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a],
  ...[0x21, 0x11, 0x00, 0x0c, 127, 0, 0, 9, 127, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb],
);

const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, at), at += p.length;
  return out;
};

/** How long a client waits for its echo before the case counts as stalled. */
const ANSWER_MS = 2000;

/**
 * Sends `bytes` cut at `cuts`, pausing `pauseMs` between pieces, then waits
 * for `expect` bytes of echo with its own side still open. Returns how many
 * bytes came back.
 */
async function splitSend(
  port: number,
  bytes: Uint8Array,
  cuts: number[],
  pauseMs: number,
  expect: number,
) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    let from = 0;
    for (const cut of [...cuts, bytes.length]) {
      await conn.write(bytes.subarray(from, cut));
      from = cut;
      if (pauseMs > 0 && cut < bytes.length) await new Promise((r) => setTimeout(r, pauseMs));
    }
    let got = 0;
    const buf = new Uint8Array(bytes.length + 1);
    const timer = setTimeout(() => conn.close(), ANSWER_MS);
    try {
      while (got < expect) {
        const n = await conn.read(buf);
        if (n === null) break;
        got += n;
      }
    } catch {
      // Closed by the timer: what came is counted below.
    } finally {
      clearTimeout(timer);
    }
    return got;
  } finally {
    try {
      conn.close();
    } catch {
      // Closed by the timer already.
    }
  }
}

/** The cases for one service: each boundary that matters, and a spread of others. */
function cuts(parts: Uint8Array[]): number[][] {
  const bounds: number[] = [];
  let at = 0;
  for (const p of parts.slice(0, -1)) bounds.push(at += p.length);
  const total = parts.reduce((n, p) => n + p.length, 0);
  const cases: number[][] = bounds.map((b) => [b]);
  cases.push(bounds);
  for (const b of bounds) cases.push([b - 1], [b + 1], [b - 1, b + 1]);
  for (let c = 1; c < total; c += Math.max(1, Math.floor(total / 12))) cases.push([c]);
  return cases.map((c) => c.filter((x) => x > 0 && x < total));
}

Deno.test("first bytes: a PROXY header, a ClientHello or both, cut anywhere and paused 0-2 ms, are all relayed at once", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const [p1, p2, p3, p4] = [freePort(), freePort(), freePort(), freePort()];
  const service = (name: string, port: number, body: string) =>
    `  - name: ${name}\n    bind_address: 127.0.0.1\n    port: ${port}\n${body}`;
  const backends = `    backends:\n      - {host: 127.0.0.1, port: ${echo.port}}\n`;
  const routes =
    `    routes:\n      - sni: [elsewhere.test]\n        name: r\n        backends:\n          - {host: 127.0.0.1, port: ${echo.port}}\n    default_route: r\n`;
  const proxied = `    accept_proxy: true\n    proxy_trusted: ["127.0.0.1"]\n`;
  const config = `${home}/first.yaml`;
  Deno.writeTextFileSync(
    config,
    [
      "log_level: info",
      "runtime:\n  health_check_interval_ms: 200\n  health_check_timeout_ms: 150",
      "services:",
      service("v1", p1, proxied + backends),
      service("v2", p2, proxied + backends),
      service("tls", p3, routes),
      service("both", p4, proxied + routes),
    ].join("\n"),
  );
  const d = await startDaemon(home, config, p1);
  try {
    const plans: [string, number, Uint8Array[]][] = [
      ["v1 header", p1, [proxyV1, request]],
      ["v2 header", p2, [proxyV2, request]],
      ["ClientHello", p3, [hello, request]],
      ["v2 header and ClientHello", p4, [proxyV2, hello, request]],
    ];
    const stalled: string[] = [];
    let tried = 0;
    for (const [name, port, parts] of plans) {
      const bytes = concat(...parts);
      const sent = concat(...parts.slice(name.includes("header") ? 1 : 0));
      for (const cut of cuts(parts)) {
        for (const pauseMs of [0, 1, 2]) {
          // Eight at once: a pause of 0-2 ms lands on every side of the engine's read.
          const runs = await Promise.all(
            Array.from({ length: 8 }, () => splitSend(port, bytes, cut, pauseMs, sent.length)),
          );
          tried += runs.length;
          // The header is taken off; the echo is what came after it.
          const lost = runs.filter((got) => got !== sent.length).length;
          if (lost) stalled.push(`${name} cut at ${cut} paused ${pauseMs} ms: ${lost}/8`);
        }
      }
    }
    assert.deepEqual(stalled, [], `${stalled.length} cases of ${tried} connections stalled`);
  } finally {
    await d.stop();
    await echo.close();
  }
});
