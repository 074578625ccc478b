/**
 * `workers: 2`: two data planes share the port (SO_REUSEPORT); reload and
 * stop lose nothing on either.
 */
import assert from "node:assert/strict";
import {
  alive,
  askName,
  bal,
  echoBackend,
  freePort,
  missingTool,
  nameBackend,
  readAll,
  readN,
  runCommand,
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

interface Plane {
  id: number;
  accepted: number;
  active: number;
}

const planes = (home: string): Plane[] =>
  JSON.parse(Deno.readTextFileSync(`${home}/bal.state.json`)).data_planes;

Deno.test("workers: connections spread over both data planes, and the counts add up", async () => {
  const a = nameBackend("A");
  const d = await startBal({ backends: [a.port], extra: "workers: 2" });
  const { home, port } = d;
  try {
    assert.ok(
      d.log().some((l) =>
        l.event === "started" && (l.fields as Record<string, unknown>).workers === 2
      ),
    );
    const n = 200;
    for (let i = 0; i < n; i++) assert.equal(await askName(port), "A");
    // bal status asks the workers for their counters: exact at once, not a second later.
    const status = JSON.parse((await bal(home, "status", "--json")).stdout);
    assert.equal(status.connections_served, n);
    assert.equal(status.workers, 2);
    const counted = await waitFor("counters for every connection", () => {
      const p = planes(home);
      return p.length === 2 && p.reduce((s, x) => s + x.accepted, 0) === n ? p : undefined;
    }, 5000);
    for (const plane of counted) {
      assert.ok(plane.accepted > n / 10, `plane ${plane.id} took ${plane.accepted} of ${n}`);
    }
  } finally {
    await d.stop();
    await a.close();
  }
});

Deno.test("workers: a reload under streaming traffic loses no byte on either plane", async () => {
  const echo = echoBackend();
  const b = nameBackend("B");
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [echo.port], extra: "workers: 2" });
  const d = await startDaemon(home, config, port);
  try {
    // 40 clients stream 256 KiB each in 8 KiB pieces while the config is reloaded twice.
    const clients = Array.from({ length: 40 }, async (_, i) => {
      const data = new Uint8Array(256 * 1024).map((_, j) => (i * 31 + j) & 0xff);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const reading = readAll(conn);
      for (let off = 0; off < data.length; off += 8192) {
        await writeAll(conn, data.subarray(off, off + 8192));
        await new Promise((r) => setTimeout(r, 5));
      }
      await conn.closeWrite();
      const back = await reading;
      conn.close();
      return sha256(back) === sha256(data);
    });
    await new Promise((r) => setTimeout(r, 100));
    writeConfig(home, { port, backends: [echo.port, b.port], extra: "workers: 2" });
    assert.equal((await bal(home, "graceful")).code, 0);
    writeConfig(home, { port, backends: [b.port], extra: "workers: 2" });
    assert.equal((await bal(home, "graceful")).code, 0);
    assert.deepEqual(await Promise.all(clients), Array(40).fill(true));
    // Both planes follow the new config: only B answers now.
    for (let i = 0; i < 10; i++) assert.equal(await askName(port), "B");
  } finally {
    await d.stop();
    await Promise.all([echo.close(), b.close()]);
  }
});

Deno.test("workers: stop lets in-flight responses on both planes finish", async () => {
  // The second half of every response is held back until stop is under way, so the drain
  // has to wait for it (a drain that returned at once would cut all 20 short).
  let release = () => {};
  const released = new Promise<void>((r) => release = r);
  const slow = serveTcp(async (conn) => {
    await readN(conn, 3);
    await writeAll(conn, text("part1-"));
    await Promise.race([released, new Promise((r) => setTimeout(r, 15_000))]);
    await writeAll(conn, text("part2"));
  });
  const d = await startBal({ backends: [slow.port], extra: "workers: 2" });
  const { home, port } = d;
  try {
    const conns = await Promise.all(Array.from({ length: 20 }, async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(c, text("go!"));
      assert.equal(str(await readN(c, 6)), "part1-");
      return c;
    }));
    await waitFor(
      "both planes to hold connections",
      () => planes(home).every((p) => p.active > 0),
      3000,
    );
    const stopping = d.stop();
    // Once bal says it stopped accepting, no plane takes a new client.
    await waitFor("stopping", () => d.log().some((l) => l.event === "stopping"));
    for (let i = 0; i < 50; i++) {
      await assert.rejects(
        Deno.connect({ hostname: "127.0.0.1", port }),
        Deno.errors.ConnectionRefused,
      );
    }
    assert.ok(planes(home).some((p) => p.active > 0) || alive(d.pid), "still draining");
    release();
    const rest = await Promise.all(conns.map(async (c) => {
      const r = str(await readAll(c));
      c.close();
      return r;
    }));
    assert.deepEqual(rest, Array(20).fill("part2"));
    assert.equal((await stopping).code, 0);
    assert.ok(!d.log().some((l) => l.event === "drain_timeout"));
  } finally {
    await slow.close();
  }
});

Deno.test("workers: every data plane skips a cooling backend and reports clients with no backend", async () => {
  const live = nameBackend("L");
  const dead = freePort();
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, {
    port,
    backends: [dead, live.port],
    runtime: {
      health_check_interval_ms: 60_000,
      health_check_fail_threshold: 1000,
      failover_backoff_initial_ms: 5000,
      failover_backoff_max_ms: 5000,
      protection_trigger_threshold: 1000,
    },
    extra: "workers: 2",
  });
  const d = await startDaemon(home, config, port);
  try {
    const n = 100;
    for (let i = 0; i < n; i++) assert.equal(await askName(port), "L");
    const p = await waitFor("both planes' counters", () => {
      const x = planes(home);
      return x.reduce((s, y) => s + y.accepted, 0) === n ? x : undefined;
    }, 5000);
    assert.ok(p.every((plane) => plane.accepted > 0), JSON.stringify(p));
    // Each plane hears of the cooldown from the control plane: a couple of tries, not 50.
    const tries = d.log().filter((l) => l.event === "connect_failed").length;
    assert.ok(tries >= 1 && tries <= 4, `the dead backend was tried ${tries} times`);
    // Only the dead backend left: every client, on either plane, turns protection on.
    writeConfig(home, { port, backends: [dead], extra: "workers: 2" });
    assert.equal((await bal(home, "graceful")).code, 0);
    for (let i = 0; i < 10; i++) assert.equal(await askName(port).catch(() => ""), "");
    const s = JSON.parse((await bal(home, "status", "--json")).stdout);
    assert.equal(s.protection_mode.enabled, true);
    assert.match(s.protection_mode.reason, /no backend/);
  } finally {
    await d.stop();
    await live.close();
  }
});

Deno.test({
  name: "workers: a port another bal holds is refused at start and on reload, never shared",
  ignore: missingTool("ss"),
}, async () => {
  const echo = echoBackend();
  const first = await startBal({ backends: [echo.port], extra: "workers: 2" });
  const home = tempHome();
  const inUse = new RegExp(
    `^bal: cannot listen on 127\\.0\\.0\\.1:${first.port}: address already in use$`,
    "m",
  );
  try {
    // Both would listen with SO_REUSEPORT, which the kernel lets one user share.
    const config = writeConfig(home, {
      port: first.port,
      backends: [echo.port],
      extra: "workers: 2",
    });
    const refused = await bal(home, "start", "-d", "-c", config);
    assert.equal(refused.code, 1, refused.stdout);
    assert.match(refused.stderr, inUse);
    // Started on a free port, it cannot move onto the first one's either.
    const own = freePort();
    writeConfig(home, { port: own, backends: [echo.port], extra: "workers: 2" });
    const second = await startDaemon(home, config, own);
    try {
      writeConfig(home, { port: first.port, backends: [echo.port], extra: "workers: 2" });
      const reload = await bal(home, "graceful");
      assert.equal(reload.code, 1, reload.stdout);
      assert.match(reload.stdout + reload.stderr, /address already in use/);
      const listeners = (await runCommand("ss", ["-Hltnp", `sport = :${first.port}`])).stdout;
      assert.ok(!listeners.includes(`pid=${second.pid},`), listeners);
    } finally {
      await second.stop();
    }
  } finally {
    // Stops a second bal that started after all (the bug this test is about).
    await bal(home, "stop");
    await first.stop();
    await echo.close();
  }
});
