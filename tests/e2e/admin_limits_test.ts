/**
 * The admin endpoint's own HTTP server under hostile clients (issue 24,
 * items 4, 5 and 7): slowloris heads, silent and idle connections, more
 * clients than its cap, heads it does not serve, a handler that throws,
 * and descriptor exhaustion, after which it must answer again.
 */
import assert from "node:assert/strict";
import { serveHttp } from "../../src/admin/http_server.ts";
import { type LogRecord, setupLogging } from "../../src/log.ts";
import {
  bal,
  echoBackend,
  freePort,
  startDaemon,
  tempHome,
  text,
  waitFor,
  writeAll,
} from "../helpers.ts";

const LIMITS = { headerTimeoutMs: 400, idleTimeoutMs: 400, maxConnections: 8 };

/** A server on a fresh port answering "ok", or throwing for /boom; log records collected. */
function server(limits = LIMITS) {
  const records: LogRecord[] = [];
  setupLogging({ level: "info", format: "json", forward: (r) => records.push(r) });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const s = serveHttp(listener, (req) => {
    if (new URL(req.url).pathname === "/boom") throw new Error("the handler broke");
    if (req.method === "POST") return req.text().then((body) => new Response(`got ${body}\n`));
    return new Response("ok\n");
  }, () => limits);
  return { port, records, close: () => s.close(), connections: () => s.connections() };
}

/** Everything the server sends until it closes, or "" past `ms` (then it is still open). */
async function untilClosed(conn: Deno.Conn, ms: number): Promise<string | null> {
  const timer = setTimeout(() => conn.close(), ms);
  let got = "";
  try {
    const buf = new Uint8Array(4096);
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
      got += new TextDecoder().decode(buf.subarray(0, n));
    }
    return got;
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("admin http: slowloris and silent clients are closed at the header timeout; idle keep-alive at the idle timeout", async () => {
  const s = server();
  try {
    // Slowloris: a header line every 100 ms, for ever.
    const slow = await Promise.all(
      Array.from({ length: 4 }, () => Deno.connect({ hostname: "127.0.0.1", port: s.port })),
    );
    let writing = true;
    const drip = Promise.all(slow.map(async (c) => {
      await c.write(text("GET /metrics HTTP/1.1\r\n")).catch(() => {});
      for (let i = 0; writing && i < 40; i++) {
        await new Promise((r) => setTimeout(r, 100));
        if (await c.write(text(`x-${i}: y\r\n`)).then(() => false, () => true)) return;
      }
    }));
    const silent = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
    const idle = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
    await writeAll(idle, text("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    const began = Date.now();
    const [slowAnswers, silentAnswer, idleAnswer] = await Promise.all([
      Promise.all(slow.map((c) => untilClosed(c, 3000))),
      untilClosed(silent, 3000),
      untilClosed(idle, 3000),
    ]);
    writing = false;
    await drip;
    // Each was closed by the server, well before the 3 s the test waits.
    for (const a of slowAnswers) assert.match(a ?? "still open", /^HTTP\/1\.1 408 /);
    assert.equal(silentAnswer, "");
    assert.match(idleAnswer ?? "still open", /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nok\n$/);
    assert.ok(Date.now() - began < 3000);
    await waitFor("no connection left", () => s.connections() === 0);
  } finally {
    await s.close();
  }
});

Deno.test("admin http: past max_connections new clients are closed at once; a throwing handler is a logged 500; bad heads get 4xx", async () => {
  const s = server();
  try {
    const held = await Promise.all(
      Array.from(
        { length: LIMITS.maxConnections },
        () => Deno.connect({ hostname: "127.0.0.1", port: s.port }),
      ),
    );
    await waitFor("every held client accepted", () => s.connections() === LIMITS.maxConnections);
    const extra = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
    assert.equal(await untilClosed(extra, 300), "", "closed at once, not held");
    assert.ok(s.records.some((r) => r.properties.event === "admin_connections_full"));
    for (const c of held) c.close();
    await waitFor("room again", () => s.connections() === 0);
    const ask = async (raw: string) => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
      await writeAll(c, text(raw));
      return (await untilClosed(c, 2000)) ?? "still open";
    };
    assert.match(await ask("GET /boom HTTP/1.0\r\n\r\n"), /^HTTP\/1\.1 500 [^]*the handler broke/);
    const logged = s.records.find((r) => r.properties.event === "admin_error");
    assert.equal(logged?.properties.error, "the handler broke");
    assert.equal(logged?.properties.path, "/boom");
    // A body is read in full and handed on, the next request after it on the same connection.
    const two = await ask(
      "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST / HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nde",
    );
    assert.match(two, /got abc\n[^]*got de\n$/);
    assert.match(
      await ask("POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\nabc"),
      /^HTTP\/1\.1 413 /,
    );
    assert.match(await ask(`GET / HTTP/1.1\r\nx: ${"a".repeat(20_000)}`), /^HTTP\/1\.1 431 /);
    assert.match(await ask("nonsense\r\n\r\n"), /^HTTP\/1\.1 400 /);
    // Two requests on one connection, the second asking to close.
    assert.equal(
      (await ask("GET / HTTP/1.1\r\n\r\nHEAD / HTTP/1.1\r\nConnection: close\r\n\r\n"))
        .match(/HTTP\/1\.1 200/g)?.length,
      2,
    );
  } finally {
    await s.close();
  }
});

Deno.test("admin: out of descriptors, the endpoint backs off and answers again; doctor checks it answers", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const [port, admin] = [freePort(), freePort()];
  const config = `${home}/fd.yaml`;
  Deno.writeTextFileSync(
    config,
    `port: ${port}\nbind_address: 127.0.0.1\nadmin: {listen: "127.0.0.1:${admin}"}\nbackends: ["127.0.0.1:${echo.port}"]\nruntime: {health_check_interval_ms: 60000}\n`,
  );
  const d = await startDaemon(home, config, port, { fdLimit: 256 });
  const held: Deno.Conn[] = [];
  try {
    // Two descriptors each: 200 clients run bal out of its 256.
    for (let i = 0; i < 200; i++) {
      held.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    }
    await waitFor(
      "bal out of descriptors",
      () => d.log().some((l) => l.event === "accept_failed" || l.event === "out_of_resources"),
    );
    // Admin requests now: their accepts fail, and the endpoint must not die of it.
    await Promise.all(
      Array.from(
        { length: 20 },
        () =>
          fetch(`http://127.0.0.1:${admin}/metrics`, { signal: AbortSignal.timeout(500) })
            .then((r) => r.body?.cancel(), () => null),
      ),
    );
    for (const c of held.splice(0)) c.close();
    const status = await waitFor("the admin endpoint answering again", async () => {
      const r = await fetch(`http://127.0.0.1:${admin}/metrics`, {
        signal: AbortSignal.timeout(1000),
      }).catch(() => null);
      await r?.body?.cancel();
      return r?.status;
    });
    assert.equal(
      status,
      200,
      JSON.stringify(d.log().filter((l) => l.event === "admin_error").slice(-1)),
    );
    const doctor = await bal(home, "doctor", "--json");
    const adminCheck = JSON.parse(doctor.stdout).checks.find((c: { name: string }) =>
      c.name === "admin"
    );
    assert.equal(adminCheck?.level, "ok", doctor.stdout);
    // The config now names another admin port than the one bal listens on: doctor says so.
    Deno.writeTextFileSync(
      config,
      Deno.readTextFileSync(config).replace(`127.0.0.1:${admin}`, `127.0.0.1:${freePort()}`),
    );
    const moved = await bal(home, "doctor", "--json");
    assert.equal(moved.code, 1);
    assert.equal(
      JSON.parse(moved.stdout).checks.find((c: { name: string }) => c.name === "admin")?.level,
      "critical",
    );
  } finally {
    for (const c of held) c.close();
    await d.stop();
    await echo.close();
  }
});
