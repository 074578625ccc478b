/**
 * Drain under load: `bal stop` while clients stream. Every connection open
 * at the signal completes intact, new connections are refused at once, bal
 * exits after the last one, and one that outlives
 * `shutdown_drain_timeout_ms` is closed at that moment and counted.
 */
import assert from "node:assert/strict";
import {
  alive,
  bal,
  echoBackend,
  echoing,
  freePort,
  startBal,
  startDaemon,
  tempHome,
  writeConfig,
} from "../helpers.ts";
import {
  between,
  pick,
  randomBytes,
  record,
  sleep,
  streamEcho,
  type StreamResult,
} from "./chaos.ts";

const CLIENTS = pick(50, 200);
const DRAIN_MS = 3000;

Deno.test("chaos: stop under load finishes every open connection, refuses new ones, and times out the last", async () => {
  const echoes = [echoBackend(), echoBackend()];
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, {
    port,
    backends: echoes.map((e) => e.port),
    runtime: { shutdown_drain_timeout_ms: DRAIN_MS },
    extra: "workers: 2",
  });
  const d = await startDaemon(home, config, port);
  const data = randomBytes(512 * 1024);
  const results: StreamResult[] = [];
  let stopSent = 0;
  try {
    // A connection that stays silent past the drain timeout: closed by bal at the timeout.
    const lingering = await echoing(port, "x");
    // Each client streams slowly (paused writes), so many are mid-stream at the signal.
    const clients = Array.from({ length: CLIENTS }, async () => {
      const size = between(64 * 1024, 512 * 1024);
      results.push(
        await streamEcho(port, data.subarray(0, size), {
          chunk: 8 * 1024,
          pauseMs: 20,
          halfClose: Math.random() < 0.5,
        }),
      );
    });
    await sleep(500);
    stopSent = Date.now();
    const stopping = bal(home, "stop");
    // New clients are refused at once (the listener is closed), while the old ones finish.
    // A connect racing the close is reset instead: the kernel resets the handshakes
    // still queued on a listener when it closes. When the reset lands just after the
    // handshake, Deno's connect fails asking for the peer's address (NotConnected).
    let refusedAfter = -1;
    for (let i = 0; i < 100 && refusedAfter < 0; i++) {
      try {
        const c = await Deno.connect({ hostname: "127.0.0.1", port });
        c.close();
        await sleep(10);
      } catch (err) {
        assert.ok(
          err instanceof Deno.errors.ConnectionRefused ||
            err instanceof Deno.errors.ConnectionReset ||
            err instanceof Deno.errors.NotConnected,
          String(err),
        );
        refusedAfter = Date.now() - stopSent;
      }
    }
    assert.ok(refusedAfter >= 0 && refusedAfter < 1500, `refused ${refusedAfter} ms after stop`);
    await Promise.all(clients);
    const lastClientDone = Date.now() - stopSent;
    const stopped = await stopping;
    const exitedAfter = Date.now() - stopSent;
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.ok(!alive(d.pid));

    const broken = results.filter((r) => !r.intact);
    assert.deepEqual(broken.slice(0, 3), [], `${broken.length} of ${results.length} broken`);
    // The lingering one was closed by bal at the drain timeout.
    const n = await lingering.read(new Uint8Array(8)).catch(() => null);
    assert.equal(n, null);
    const timeout = d.log().find((l) => l.event === "drain_timeout");
    assert.ok(timeout, "the forced close is logged");
    assert.equal((timeout.fields as Record<string, number>).forced, 1);
    assert.ok(exitedAfter >= DRAIN_MS - 100, `exited ${exitedAfter} ms after stop`);
    assert.ok(exitedAfter < DRAIN_MS + 3000, `exited ${exitedAfter} ms after stop`);
    record("drain", {
      clients: CLIENTS,
      completed_intact: results.length - broken.length,
      bytes_each_way: results.reduce((s, r) => s + r.sent, 0),
      refused_new_after_ms: refusedAfter,
      last_client_done_ms: lastClientDone,
      forced_at_timeout: 1,
      drain_timeout_ms: DRAIN_MS,
      exited_after_ms: exitedAfter,
    });
    lingering.close();
  } finally {
    await d.stop();
    await Promise.all(echoes.map((e) => e.close()));
  }
});

Deno.test("chaos: with no connection left, stop exits at once", async () => {
  const echo = echoBackend();
  const d = await startBal({
    backends: [echo.port],
    runtime: { shutdown_drain_timeout_ms: 20_000 },
  });
  const { home, port } = d;
  try {
    const c = await echoing(port);
    c.close();
    await sleep(100);
    const started = Date.now();
    assert.equal((await bal(home, "stop")).code, 0);
    assert.ok(Date.now() - started < 3000, "stop waited though nothing was open");
  } finally {
    await d.stop();
    await echo.close();
  }
});
