/**
 * Overload and idle limits end to end: max_concurrent_connections rejects
 * and keeps serving, the idle timeout closes only silent connections, and
 * running out of file descriptors neither spins nor kills bal.
 */
import assert from "node:assert/strict";
import {
  alive,
  bal,
  closeQuietly,
  echoBackend,
  echoing,
  freePort,
  listenBacklogs,
  missingTool,
  readN,
  startBal,
  startDaemon,
  str,
  tempHome,
  text,
  waitFor,
  writeAll,
  writeConfig,
} from "../helpers.ts";

Deno.test({
  name:
    "limits: tcp_backlog is every data plane's listen backlog; a reload applies it to a new listener",
  ignore: missingTool("ss"),
}, async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const spec = { backends: [echo.port], extra: "workers: 2" };
  const config = writeConfig(home, { ...spec, port, runtime: { tcp_backlog: 1000 } });
  const d = await startDaemon(home, config, port);
  try {
    assert.deepEqual(await listenBacklogs(port), [1000, 1000]);
    // Only the backlog changes: the listeners stay as they are, and the log says when it applies.
    writeConfig(home, { ...spec, port, runtime: { tcp_backlog: 2000 } });
    assert.equal((await bal(home, "graceful")).code, 0);
    assert.deepEqual(await listenBacklogs(port), [1000, 1000]);
    const deferred = () => d.log().filter((l) => l.event === "tcp_backlog_deferred");
    assert.deepEqual(deferred().map((l) => (l.fields as Record<string, number>).backlog), [2000]);
    // Back to the listeners' own backlog: nothing waits, so nothing is said.
    writeConfig(home, { ...spec, port, runtime: { tcp_backlog: 1000 } });
    assert.equal((await bal(home, "graceful")).code, 0);
    assert.deepEqual(deferred().map((l) => (l.fields as Record<string, number>).backlog), [2000]);
    // A new port opens new listeners, with the backlog in force.
    const moved = freePort();
    writeConfig(home, { ...spec, port: moved, runtime: { tcp_backlog: 2000 } });
    assert.equal((await bal(home, "graceful")).code, 0);
    assert.deepEqual(await listenBacklogs(moved), [2000, 2000]);
    (await echoing(moved)).close();
  } finally {
    await d.stop();
    await echo.close();
  }
});

/** True when the peer ends the connection (EOF or reset) within `ms`. */
async function closedWithin(conn: Deno.Conn, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const read = conn.read(new Uint8Array(16)).then((n) => n === null).catch(() => true);
  const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  const result = await Promise.race([read, late]);
  clearTimeout(timer);
  return result;
}

Deno.test("limits: at max_concurrent_connections new clients are closed at once, counted once a second, and bal keeps serving", async () => {
  const echo = echoBackend();
  const d = await startBal({ backends: [echo.port], runtime: { max_concurrent_connections: 3 } });
  const { port } = d;
  const held: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 3; i++) held.push(await echoing(port));
    for (let i = 0; i < 5; i++) {
      const extra = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(extra, text("x")).catch(() => {});
      assert.ok(await closedWithin(extra, 2000), "a client beyond the limit must be closed");
      closeQuietly(extra);
    }
    const overloads = d.log().filter((l) => l.event === "overload");
    assert.equal(overloads.length, 1, "five rejects within a second are one log line");
    assert.equal(overloads[0].level, "warn");
    // A slot freed is a slot served.
    closeQuietly(held.pop()!);
    await waitFor(
      "the freed slot",
      () => echoing(port).then((c) => (held.push(c), true)).catch(() => false),
    );
    for (const c of held) {
      assert.equal(str(await (writeAll(c, text("y")).then(() => readN(c, 1)))), "y");
    }
  } finally {
    held.forEach(closeQuietly);
    await d.stop();
    await echo.close();
  }
});

Deno.test("limits: the idle timeout closes a silent connection, not a slow but active one", async () => {
  const echo = echoBackend();
  const d = await startBal({
    backends: [echo.port],
    runtime: { connection_idle_timeout_ms: 600 },
  });
  const { home, port } = d;
  try {
    const silent = await echoing(port, "s");
    const active = await echoing(port, "a");
    const started = Date.now();
    // The active one sends a byte every 150 ms for 2 s: well past the timeout in total.
    const keepTalking = (async () => {
      while (Date.now() - started < 2000) {
        await new Promise((r) => setTimeout(r, 150));
        await writeAll(active, text("."));
        assert.equal(str(await readN(active, 1)), ".");
      }
    })();
    assert.ok(await closedWithin(silent, 3000), "the silent connection must be closed");
    const closedAfter = Date.now() - started;
    assert.ok(closedAfter >= 550, `closed after ${closedAfter} ms, before the timeout`);
    await keepTalking;
    assert.equal(Date.now() - started >= 2000, true);
    const s = JSON.parse((await bal(home, "status", "--json")).stdout);
    assert.equal(s.idle_closed_connections, 1, "the silent connection, counted once");
    await writeAll(active, text("!"));
    assert.equal(str(await readN(active, 1)), "!");
    closeQuietly(silent);
    closeQuietly(active);
  } finally {
    await d.stop();
    await echo.close();
  }
});

Deno.test("limits: out of file descriptors, bal logs it, does not spin or die, and serves again", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [echo.port] });
  // About 26 fds at rest: 64 leave room for a dozen proxied connections, not 40.
  const { pid } = await startDaemon(home, config, port, { fdLimit: 64 });
  const conns: Deno.TcpConn[] = [];
  try {
    const results = await Promise.allSettled(Array.from({ length: 40 }, async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      conns.push(c);
      await writeAll(c, text("e"));
      const got = await Promise.race([
        readN(c, 1).then((b) => str(b)),
        new Promise<string>((r) => setTimeout(() => r("timeout"), 3000)),
      ]);
      return got;
    }));
    const served = results.filter((r) => r.status === "fulfilled" && r.value === "e").length;
    assert.ok(served > 0 && served < 40, `served ${served} of 40 with 64 fds`);
    await waitFor("an fd error in the log", () => {
      const lines = Deno.readTextFileSync(`${home}/bal.log`);
      return /"event":"(accept_failed|out_of_resources)"/.test(lines);
    }, 5000);
    // Our own fd shortage is not the backend's fault: it stays up, protection stays off.
    const log = Deno.readTextFileSync(`${home}/bal.log`);
    assert.doesNotMatch(log, /"event":"(backend_down|no_backend|protection_on)"/);
    // Not spinning: a second of EMFILE costs little CPU.
    const cpu = (p: number) => {
      const f = Deno.readTextFileSync(`/proc/${p}/stat`).split(") ")[1].split(" ");
      return Number(f[11]) + Number(f[12]);
    };
    const before = cpu(pid);
    await new Promise((r) => setTimeout(r, 1000));
    assert.ok(
      cpu(pid) - before < 50,
      `bal used ${cpu(pid) - before} ticks in 1 s while out of fds`,
    );
    assert.ok(alive(pid));
    conns.forEach(closeQuietly);
    conns.length = 0;
    await waitFor(
      "service again",
      () => echoing(port).then((c) => (closeQuietly(c), true)).catch(() => false),
      10_000,
    );
  } finally {
    conns.forEach(closeQuietly);
    const r = await bal(home, "stop");
    if (alive(pid)) Deno.kill(pid, "SIGKILL");
    assert.equal(r.code, 0, r.stderr);
    await echo.close();
  }
});
