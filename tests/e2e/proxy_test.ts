/**
 * The data path end to end: bal as a daemon started by the real CLI, real
 * backends and clients on 127.0.0.1.
 */
import assert from "node:assert/strict";
import {
  askName,
  checkRounds,
  closeQuietly,
  echoBackend,
  freePort,
  nameBackend,
  readAll,
  readN,
  serveTcp,
  sha256,
  startBal,
  startDaemon,
  str,
  tempHome,
  text,
  waitFor,
  writeAll,
  writeConfig,
} from "../helpers.ts";

Deno.test("proxy: round robin alternates across two backends", async () => {
  const a = nameBackend("A");
  const b = nameBackend("B");
  const d = await startBal({ backends: [a.port, b.port] });
  const { port } = d;
  try {
    const seen = [];
    for (let i = 0; i < 6; i++) seen.push(await askName(port));
    assert.deepEqual(seen, ["A", "B", "A", "B", "A", "B"]);
  } finally {
    await d.stop();
    await a.close();
    await b.close();
  }
});

Deno.test("proxy: a dead backend never costs a client its connection", async () => {
  const live = nameBackend("L");
  const dead = freePort();
  const home = tempHome();
  const port = freePort();
  // Health checks far apart, so only the data path can find the dead one.
  const config = writeConfig(home, {
    port,
    backends: [dead, live.port],
    runtime: { health_check_interval_ms: 60_000, health_check_fail_threshold: 100 },
  });
  const d = await startDaemon(home, config, port);
  try {
    for (let i = 0; i < 10; i++) assert.equal(await askName(port), "L");
    // Round robin sent one of them to the dead backend first; then it cooled down.
    const failed = d.log().filter((l) => l.event === "connect_failed");
    assert.ok(failed.length >= 1, "the dead backend was tried");
    assert.equal((failed[0].fields as Record<string, unknown>).backend, `127.0.0.1:${dead}`);
  } finally {
    await d.stop();
    await live.close();
  }
});

Deno.test("proxy: a backend is marked down and back up, logged once each way", async () => {
  const a = nameBackend("A");
  let b = nameBackend("B");
  const bPort = b.port;
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, {
    port,
    backends: [a.port, bPort],
    runtime: {
      health_check_interval_ms: 100,
      health_check_fail_threshold: 2,
      health_check_success_threshold: 2,
    },
  });
  const d = await startDaemon(home, config, port);
  try {
    await b.close();
    const down = await waitFor(
      "backend_down",
      () => d.log().find((l) => l.event === "backend_down"),
    );
    assert.equal(down.level, "warn");
    assert.equal((down.fields as Record<string, unknown>).backend, `127.0.0.1:${bPort}`);
    // While B is down every client goes to A, without trying B first (no failed connect
    // to B after it was marked down; health probes to A make counting A's accepts unreliable).
    const downAt = Date.parse(down.timestamp as string);
    for (let i = 0; i < 4; i++) assert.equal(await askName(port), "A");
    const triedB = d.log().filter((l) =>
      l.event === "connect_failed" && Date.parse(l.timestamp as string) > downAt &&
      (l.fields as Record<string, unknown>).backend === `127.0.0.1:${bPort}`
    );
    assert.deepEqual(triedB, []);

    b = nameBackend("B", bPort);
    await waitFor("backend_up", () => d.log().find((l) => l.event === "backend_up"));
    const names = new Set<string>();
    for (let i = 0; i < 4; i++) names.add(await askName(port));
    assert.deepEqual([...names].sort(), ["A", "B"]);
    // More rounds, but one line per change.
    await checkRounds(home, `127.0.0.1:${bPort}`, 3);
    assert.equal(d.log().filter((l) => l.event === "backend_down").length, 1);
    assert.equal(d.log().filter((l) => l.event === "backend_up").length, 1);
  } finally {
    await d.stop();
    await a.close();
    await b.close();
  }
});

Deno.test("proxy: with every backend down a client is closed, and bal keeps serving", async () => {
  const home = tempHome();
  const port = freePort();
  const dead = freePort();
  const d = await startDaemon(home, writeConfig(home, { port, backends: [dead] }), port);
  try {
    assert.equal(await askName(port), "");
    const late = nameBackend("late", dead);
    try {
      await waitFor("the backend to be used", () => askName(port).then((n) => n === "late"));
    } finally {
      await late.close();
    }
    assert.ok(d.log().some((l) => l.event === "no_backend" && l.level === "warn"));
  } finally {
    await d.stop();
  }
});

Deno.test("proxy: 50 MB through an echo backend arrive complete and in order", async () => {
  const echo = echoBackend();
  const d = await startBal({ backends: [echo.port] });
  const { port } = d;
  try {
    const size = 50 * 1024 * 1024;
    const data = new Uint8Array(size);
    // Non-repeating content, so reordering or loss changes the checksum.
    let x = 2463534242;
    for (let i = 0; i < size; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      data[i] = x & 0xff;
    }
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const [, back] = await Promise.all([
      writeAll(conn, data).then(() => conn.closeWrite()),
      readAll(conn),
    ]);
    conn.close();
    assert.equal(back.length, size);
    assert.equal(sha256(back), sha256(data));
  } finally {
    await d.stop();
    await echo.close();
  }
});

Deno.test("proxy: half-close is passed on: a request then EOF still gets its answer", async () => {
  // Replies only once it has read the whole request (to EOF), like `nc -N`.
  const backend = serveTcp(async (conn) => {
    const req = await readAll(conn);
    await writeAll(conn, text(`got ${req.length} bytes`));
  });
  const d = await startBal({ backends: [backend.port] });
  const { port } = d;
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, new Uint8Array(100_000));
    await conn.closeWrite();
    assert.equal(str(await readAll(conn)), "got 100000 bytes");
    conn.close();
  } finally {
    await d.stop();
    await backend.close();
  }
});

Deno.test("proxy: TLS passes through untouched to an HTTPS backend", async () => {
  const ca = Deno.readTextFileSync(new URL("../fixtures/ca.crt", import.meta.url));
  const cert = Deno.readTextFileSync(new URL("../fixtures/tls.crt", import.meta.url));
  const key = Deno.readTextFileSync(new URL("../fixtures/tls.key", import.meta.url));
  const tlsListener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
  const backendPort = (tlsListener.addr as Deno.NetAddr).port;
  // Health probes connect and close without a handshake: serve until a real request came.
  const served = (async () => {
    for await (const conn of tlsListener) {
      try {
        const req = new Uint8Array(1024);
        const n = (await conn.read(req)) ?? 0;
        const line = str(req.subarray(0, n)).split("\r\n")[0];
        await writeAll(
          conn,
          text(
            `HTTP/1.1 200 OK\r\ncontent-length: ${line.length}\r\nconnection: close\r\n\r\n${line}`,
          ),
        );
        return line;
      } catch {
        // a probe
      } finally {
        closeQuietly(conn);
      }
    }
  })();
  const d = await startBal({ backends: [backendPort] });
  const { port } = d;
  try {
    // The client verifies the backend's own certificate through bal: bal never touches TLS.
    const conn = await Deno.connectTls({ hostname: "localhost", port, caCerts: [ca] });
    await writeAll(conn, text("GET /secret HTTP/1.1\r\nhost: localhost\r\n\r\n"));
    const reply = str(await readAll(conn));
    conn.close();
    assert.match(reply, /^HTTP\/1\.1 200 OK/);
    assert.ok(reply.endsWith("GET /secret HTTP/1.1"));
    assert.equal(await served, "GET /secret HTTP/1.1");
  } finally {
    await d.stop();
    closeQuietly(tlsListener);
  }
});

Deno.test("proxy: 500 concurrent connections all get their own bytes back", async () => {
  const echo = echoBackend();
  // 500 connects at once can overflow the echo's accept queue: the kernel retries a SYN after
  // 1 s, so the connect timeout must outlast that, or a slow moment is a client with no backend.
  const d = await startBal({
    backends: [echo.port],
    runtime: { backend_connect_timeout_ms: 3000 },
  });
  const { port } = d;
  try {
    const conns = await Promise.all(
      Array.from({ length: 500 }, () => Deno.connect({ hostname: "127.0.0.1", port })),
    );
    // All 500 are open at once before any of them talks.
    const replies = await Promise.all(conns.map(async (conn, i) => {
      const msg = text(`client-${i}-`.padEnd(64, "x"));
      await writeAll(conn, msg);
      await conn.closeWrite();
      const back = str(await readAll(conn));
      conn.close();
      return back;
    }));
    replies.forEach((r, i) => assert.equal(r, `client-${i}-`.padEnd(64, "x")));
  } finally {
    await d.stop();
    await echo.close();
  }
});

Deno.test("proxy: stop lets an in-flight response finish and refuses new clients at once", async () => {
  // Answers in two parts; the second is held back until stop is under way.
  let release = () => {};
  const released = new Promise<void>((r) => release = r);
  const slow = serveTcp(async (conn) => {
    await readN(conn, 3);
    await writeAll(conn, text("part1-"));
    await Promise.race([released, new Promise((r) => setTimeout(r, 15_000))]);
    await writeAll(conn, text("part2"));
  });
  const d = await startBal({ backends: [slow.port] });
  const { port } = d;
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, text("go!"));
    assert.equal(str(await readN(conn, 6)), "part1-");
    const stopping = d.stop();
    await waitFor("stopping", () => d.log().some((l) => l.event === "stopping"));
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port }),
      Deno.errors.ConnectionRefused,
    );
    release();
    assert.equal(str(await readAll(conn)), "part2");
    conn.close();
    const r = await stopping;
    assert.equal(r.code, 0, r.stderr);
    const stoppingLine = d.log().find((l) => l.event === "stopping")!;
    assert.equal((stoppingLine.fields as Record<string, unknown>).active, 1);
    assert.ok(!d.log().some((l) => l.event === "drain_timeout"));
  } finally {
    await slow.close();
  }
});

Deno.test("proxy: a connection still open after the drain timeout is closed and counted", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, {
    port,
    backends: [echo.port],
    runtime: { shutdown_drain_timeout_ms: 300 },
  });
  const d = await startDaemon(home, config, port);
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, text("hi"));
    assert.equal(str(await readN(conn, 2)), "hi");
    const started = Date.now();
    const r = await d.stop();
    assert.equal(r.code, 0);
    assert.ok(Date.now() - started >= 300);
    assert.equal((await readAll(conn)).length, 0, "closed by the drain timeout");
    closeQuietly(conn);
    const line = d.log().find((l) => l.event === "drain_timeout")!;
    assert.equal((line.fields as Record<string, unknown>).forced, 1);
  } finally {
    await echo.close();
  }
});
