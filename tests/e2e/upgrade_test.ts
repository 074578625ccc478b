/**
 * `bal upgrade` and `bal restart` end to end: the new bal takes the
 * listening sockets, so under a steady load no client is refused, reset
 * or cut; the old bal drains and exits; every failure leaves it serving.
 * On the deno engine (no descriptor hand-over) the same load measures
 * what overlapping SO_REUSEPORT listeners lose.
 */
import assert from "node:assert/strict";
import {
  alive,
  bal,
  closeQuietly,
  echoBackend,
  freePort,
  readAll,
  readPid,
  ROOT,
  runCommand,
  sha256,
  startBal,
  str,
  tempHome,
  text,
  waitFor,
  writeAll,
} from "../helpers.ts";

const DENO_ENGINE = Deno.env.get("BAL_ENGINE") === "deno";

/** Outcomes of the short-connection load. */
interface Load {
  ok: number;
  failed: Map<string, number>;
  stop(): Promise<void>;
}

/** One request and its echoed answer on a new connection. */
async function oneRequest(port: number, n: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const body = `request ${n}\n`;
    await writeAll(conn, text(body));
    await conn.closeWrite();
    const got = str(await readAll(conn));
    if (got !== body) throw new Error(`answer ${JSON.stringify(got.slice(0, 40))}`);
  } finally {
    closeQuietly(conn);
  }
}

/** About `perSecond` new connections a second, each a request and its answer, until stopped. */
function shortLoad(port: number, perSecond: number): Load {
  const load: Load = { ok: 0, failed: new Map(), stop: async () => {} };
  let running = true;
  const inFlight = new Set<Promise<void>>();
  const loop = (async () => {
    // Batches every 10 ms: a timer per connection runs late, and the rate with it.
    const started = Date.now();
    for (let n = 0; running;) {
      const due = Math.floor((Date.now() - started) * perSecond / 1000);
      for (; n < due; n++) {
        const p = oneRequest(port, n).then(
          () => void load.ok++,
          (e) => {
            const why = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
            load.failed.set(why, (load.failed.get(why) ?? 0) + 1);
          },
        );
        inFlight.add(p);
        p.finally(() => inFlight.delete(p));
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  load.stop = async () => {
    running = false;
    await loop;
    await Promise.all(inFlight);
  };
  return load;
}

/** A long connection streaming checked data through the echo backend until told to end. */
function longStream(port: number) {
  let ending = false;
  const sent: Uint8Array[] = [];
  const done = (async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const reading = readAll(conn);
    // Awaited below; a test that fails first must not leave its rejection unhandled.
    reading.catch(() => {});
    for (let i = 0; !ending && i < 2000; i++) {
      const chunk = crypto.getRandomValues(new Uint8Array(4096));
      sent.push(chunk);
      await writeAll(conn, chunk);
      await new Promise((r) => setTimeout(r, 20));
    }
    await conn.closeWrite();
    const got = await reading;
    closeQuietly(conn);
    const all = new Uint8Array(sent.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of sent) (all.set(c, at), at += c.length);
    return sha256(got) === sha256(all) && got.length === all.length;
  })();
  return { end: () => (ending = true), done };
}

async function upgrade(home: string, ...args: string[]) {
  const r = await bal(home, "upgrade", ...args);
  assert.equal(r.code, 0, `bal upgrade failed: ${r.stderr}${r.stdout}`);
  return r;
}

Deno.test("upgrade: ten upgrades under load refuse, reset and cut no one; old bals drain and exit", async () => {
  const echo = echoBackend();
  const b = await startBal({
    backends: [echo.port],
    runtime: { shutdown_drain_timeout_ms: 60000 },
    extra: "workers: 2",
  });
  const first = b.pid;
  const load = shortLoad(b.port, 300);
  const streams = Array.from({ length: 20 }, () => longStream(b.port));
  const pids = [first];
  // Requests served by the end of each upgrade: the load must run through all ten.
  const served: number[] = [];
  try {
    await new Promise((r) => setTimeout(r, 300));
    served.push(load.ok);
    for (let i = 0; i < 10; i++) {
      const r = await upgrade(b.home);
      assert.match(r.stdout, /upgraded: bal pid \d+ -> pid \d+/);
      // The deno engine hands over no socket: its listeners overlap through SO_REUSEPORT.
      assert.match(
        r.stdout,
        DENO_ENGINE ? /0 listening sockets/ : /2 listening sockets handed over/,
      );
      pids.push(readPid(b.home)!);
      served.push(load.ok);
    }
    await new Promise((r) => setTimeout(r, 300));
    await load.stop();
    // The long connections stay with the bal that accepted them: the first.
    assert.ok(alive(first), "the first bal drains its long connections");
    const status = JSON.parse((await bal(b.home, "status", "--json")).stdout);
    assert.equal(status.pid, pids.at(-1));
    assert.equal(status.upgrades, 10);
    assert.deepEqual(status.draining?.map((d: { pid: number }) => d.pid), [first]);
    assert.equal(status.draining[0].active_connections, 20);
    const text = (await bal(b.home, "status")).stdout;
    assert.match(
      text,
      new RegExp(`draining: pid ${first} \\(before an upgrade\\), 20 connections`),
    );
    for (const s of streams) s.end();
    const intact = await Promise.all(streams.map((s) => s.done));
    const failed = [...load.failed].map(([why, n]) => `${n} x ${why}`).join("; ");
    if (DENO_ENGINE) {
      console.log(`deno engine: ${load.ok} served, failed: ${failed || "none"}`);
    } else {
      assert.equal(failed, "", `failed requests: ${failed}`);
    }
    // Counted, not timed: a slow machine runs fewer requests, but some during every upgrade.
    const idle = served.slice(1).filter((n, i) => n === served[i]).length;
    assert.equal(idle, 0, `no request was served during ${idle} upgrades (${served})`);
    assert.deepEqual(intact, Array(20).fill(true), "every long stream arrived whole");
    await waitFor("every old bal to exit", () => pids.slice(0, -1).every((p) => !alive(p)));
  } finally {
    await load.stop();
    for (const s of streams) s.end();
    await Promise.allSettled(streams.map((s) => s.done));
    await b.stop();
    for (const p of pids) if (alive(p)) Deno.kill(p, "SIGKILL");
    await echo.close();
  }
});

/** The inode of the socket listening on `port`, and the pid holding it (`ss -e`). */
async function listenSocket(port: number): Promise<{ inode: string; pid: number }[]> {
  const { stdout } = await runCommand("ss", ["-Hltnep", `sport = :${port}`]);
  return stdout.split("\n").filter((l) => l).map((l) => ({
    inode: /ino:(\d+)/.exec(l)?.[1] ?? "?",
    pid: Number(/pid=(\d+)/.exec(l)?.[1]),
  }));
}

Deno.test("upgrade: the same listening socket serves on, and clients queued in its backlog are all served", async () => {
  const echo = echoBackend();
  const b = await startBal({ backends: [echo.port], runtime: { tcp_backlog: 1024 } });
  try {
    const before = await listenSocket(b.port);
    Deno.kill(b.pid, "SIGSTOP");
    // The kernel completes these handshakes into the backlog; nobody accepts yet.
    const queued = Array.from({ length: 200 }, (_, i) => oneRequest(b.port, i));
    await new Promise((r) => setTimeout(r, 300));
    const upgrading = bal(b.home, "upgrade");
    await new Promise((r) => setTimeout(r, 100));
    Deno.kill(b.pid, "SIGCONT");
    const r = await upgrading;
    assert.equal(r.code, 0, r.stderr);
    const results = await Promise.allSettled(queued);
    const lost = results.filter((x) => x.status === "rejected");
    assert.equal(lost.length, 0, `${lost.length} of 200 queued clients were lost`);
    await waitFor("the old bal to exit", () => !alive(b.pid));
    const after = await listenSocket(b.port);
    assert.deepEqual(after.map((s) => s.pid), [readPid(b.home)]);
    // Never closed: the kernel's socket is the one the first bal opened (the deno engine
    // cannot hand its socket over, and opens one of its own beside it).
    if (!DENO_ENGINE) assert.equal(after[0].inode, before[0].inode);
  } finally {
    await b.stop();
    if (alive(b.pid)) Deno.kill(b.pid, "SIGKILL");
    await echo.close();
  }
});

Deno.test("upgrade: an invalid config, a crashing or hanging new bal, and a second upgrade leave the old one serving", async () => {
  const echo = echoBackend();
  const b = await startBal({ backends: [echo.port] });
  const runFaulty = (fault: string, ...args: string[]) =>
    runCommand(Deno.execPath(), ["task", "-q", "bal", "upgrade", ...args], {
      cwd: ROOT,
      env: { BAL_HOME: b.home, NO_COLOR: "1", BAL_TEST_FAULT: fault },
    });
  const stillServing = async () => {
    assert.equal(readPid(b.home), b.pid);
    assert.ok(alive(b.pid));
    await oneRequest(b.port, 1);
    const s = JSON.parse((await bal(b.home, "status", "--json")).stdout);
    assert.equal(s.pid, b.pid);
    assert.deepEqual(
      [...Deno.readDirSync(b.home)].map((e) => e.name).filter((n) => /upgrade|ready/.test(n)),
      [],
      "no hand-over socket or ready file is left",
    );
    const procs = (await runCommand("pgrep", ["-f", b.home])).stdout.trim().split("\n");
    assert.deepEqual(procs, [String(b.pid)], "no stray bal is left");
  };
  try {
    const good = Deno.readTextFileSync(b.config);
    Deno.writeTextFileSync(b.config, good.replace("backends:", "backendz:"));
    let r = await bal(b.home, "upgrade");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /test\.yaml:\d+:\d+: backendz: unknown key/);
    assert.match(r.stderr, /not upgraded: the running bal is unchanged/);
    Deno.writeTextFileSync(b.config, good);
    await stillServing();

    r = await runFaulty("crash_after_handover");
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(
        `upgrade failed; bal \\(pid ${b.pid}\\) serves on, unchanged: the daemon exited with code 70`,
      ),
    );
    await stillServing();

    r = await runFaulty("hang_after_handover", "--timeout", "1");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /did not report ready within 6 s/);
    await stillServing();

    // An old bal that does not answer (paused): the new one gives up at its timeout.
    Deno.kill(b.pid, "SIGSTOP");
    r = await bal(b.home, "upgrade", "--timeout", "1");
    Deno.kill(b.pid, "SIGCONT");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /the running bal did not answer the hand-over within 1 s/);
    await new Promise((r) => setTimeout(r, 300));
    await stillServing();

    // A second upgrade while one hangs in its hand-over is refused.
    const hanging = runFaulty("hang_after_handover", "--timeout", "3");
    await new Promise((r) => setTimeout(r, 1500));
    r = await bal(b.home, "upgrade");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /an upgrade is already under way \(new bal pid \d+\)/);
    assert.equal((await hanging).code, 1);
    await stillServing();
  } finally {
    await b.stop();
    await echo.close();
  }
});

Deno.test("upgrade: a config that adds a service and drops another; restart is the same hand-over", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const [a, c, admin] = [freePort(), freePort(), freePort()];
  const svc = (name: string, port: number) =>
    `  - name: ${name}\n    port: ${port}\n    bind_address: 127.0.0.1\n    backends: [{host: 127.0.0.1, port: ${echo.port}}]\n`;
  const head = `admin:\n  listen: 127.0.0.1:${admin}\nservices:\n`;
  const path = `${home}/test.yaml`;
  const dropped = freePort();
  Deno.writeTextFileSync(path, head + svc("a", a) + svc("b", dropped));
  const start = await bal(home, "start", "-d", "-c", path);
  assert.equal(start.code, 0, start.stderr);
  const first = readPid(home)!;
  try {
    Deno.writeTextFileSync(path, head + svc("a", a) + svc("c", c));
    const r = await upgrade(home);
    assert.match(r.stdout, /listening on/);
    await oneRequest(a, 1);
    await oneRequest(c, 2);
    const status = JSON.parse((await bal(home, "status", "--json")).stdout);
    assert.deepEqual(status.services.map((s: { name: string }) => s.name), ["a", "c"]);
    const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
    assert.match(metrics, /^bal_upgrades_total 1$/m);
    const restart = await bal(home, "restart", "--wait");
    assert.equal(restart.code, 0, restart.stderr);
    assert.match(restart.stdout, /upgraded: bal pid \d+ -> pid \d+/);
    assert.match(restart.stdout, /drained and exited/);
    await oneRequest(a, 3);
    assert.ok(!alive(first));
    // The dropped service's socket closed once the old bal let go of it too.
    assert.deepEqual(await listenSocket(dropped), []);
  } finally {
    await bal(home, "stop");
    const pid = readPid(home);
    if (pid && alive(pid)) Deno.kill(pid, "SIGKILL");
    await echo.close();
  }
});

Deno.test("upgrade under systemd: READY=1 at start, then the new bal's MAINPID= and READY=1; a foreground bal's successor logs where it did", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const config = `${home}/test.yaml`;
  Deno.writeTextFileSync(
    config,
    `port: ${port}\nbind_address: 127.0.0.1\nbackends: [{host: 127.0.0.1, port: ${echo.port}}]\n`,
  );
  const notify = `${home}/notify.sock`;
  const sd = Deno.listenDatagram({ transport: "unixpacket", path: notify });
  const said = async () => new TextDecoder().decode((await sd.receive())[0]);
  const env = { BAL_HOME: home, NO_COLOR: "1", NOTIFY_SOCKET: notify };
  // ExecStart: bal in the foreground, as the unit runs it.
  const foreground = new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "bal", "start", "-c", config],
    cwd: ROOT,
    env,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let newPid: number | null = null;
  try {
    assert.equal(await said(), "READY=1\n");
    const first = readPid(home)!;
    // ExecReload: bal upgrade; its standard error stands for the journal.
    const journal = `${home}/journal.txt`;
    const r = await runCommand("sh", [
      "-c",
      `"${Deno.execPath()}" task -q bal upgrade 2>"${journal}"`,
    ], { cwd: ROOT, env });
    assert.equal(r.code, 0, Deno.readTextFileSync(journal));
    newPid = readPid(home)!;
    assert.notEqual(newPid, first);
    assert.equal(await said(), `MAINPID=${newPid}\nREADY=1\n`);
    assert.match(r.stdout, /the new bal logs to this command's standard error/);
    assert.equal((await foreground.status).code, 0, "the foreground bal drained and exited");
    await oneRequest(port, 1);
    await waitFor(
      "the new bal's start in the journal",
      () => /upgraded from pid \d+/.test(Deno.readTextFileSync(journal)),
    );
  } finally {
    await bal(home, "stop");
    if (newPid && alive(newPid)) Deno.kill(newPid, "SIGKILL");
    try {
      foreground.kill("SIGKILL");
    } catch {
      // exited
    }
    await foreground.status;
    sd.close();
    await echo.close();
  }
});

Deno.test("upgrade: health and admin states carry over; a down backend gets no client before a check passes", async () => {
  const up = echoBackend();
  const drained = echoBackend();
  const deadPort = freePort();
  const b = await startBal({
    backends: [up.port, drained.port, deadPort],
    runtime: { health_check_interval_ms: 300 },
  });
  const backendsOf = async () =>
    JSON.parse((await bal(b.home, "status", "--json")).stdout).backends as {
      address: string;
      reachable: boolean;
      admin_state: string;
    }[];
  const byPort = (list: Awaited<ReturnType<typeof backendsOf>>, port: number) =>
    list.find((x) => x.address.endsWith(`:${port}`))!;
  try {
    const r = await bal(b.home, "backend", "drain", "default", `127.0.0.1:${drained.port}`);
    assert.equal(r.code, 0, r.stderr);
    await waitFor(
      "the dead backend to be down",
      async () => !byPort(await backendsOf(), deadPort).reachable,
    );
    // Checks far apart now: a fresh start would show every backend up for seconds.
    Deno.writeTextFileSync(
      b.config,
      Deno.readTextFileSync(b.config).replace(
        /health_check_interval_ms: \d+/,
        "health_check_interval_ms: 60000",
      ),
    );
    await upgrade(b.home);
    const after = await backendsOf();
    assert.equal(byPort(after, deadPort).reachable, false, "the down backend stays down");
    assert.equal(byPort(after, drained.port).admin_state, "draining");
    assert.equal(byPort(after, up.port).reachable, true);
    // Its health checks connect too: count only what the requests bring (checks are a minute apart).
    await new Promise((r) => setTimeout(r, 300));
    const before = drained.accepted;
    for (let i = 0; i < 20; i++) await oneRequest(b.port, i);
    assert.equal(drained.accepted - before, 0, "the drained backend got no new client");
  } finally {
    await b.stop();
    if (alive(b.pid)) Deno.kill(b.pid, "SIGKILL");
    await up.close();
    await drained.close();
  }
});

Deno.test("upgrade: to fewer data planes and back, under load, with no client lost", async () => {
  const echo = echoBackend();
  const b = await startBal({ backends: [echo.port], extra: "workers: 2" });
  const load = shortLoad(b.port, 300);
  const setWorkers = (n: number) =>
    Deno.writeTextFileSync(
      b.config,
      Deno.readTextFileSync(b.config).replace(/workers: \d+/, `workers: ${n}`),
    );
  try {
    await new Promise((r) => setTimeout(r, 300));
    setWorkers(1);
    await upgrade(b.home);
    const one = readPid(b.home)!;
    await waitFor("the old bal to exit", () => !alive(b.pid));
    const sockets = await listenSocket(b.port);
    if (!DENO_ENGINE) {
      // The second plane's socket is served by the one plane left, not closed.
      assert.deepEqual(sockets.map((s) => s.pid), [one, one]);
    }
    setWorkers(2);
    await upgrade(b.home);
    await waitFor("the one-plane bal to exit", () => !alive(one));
    if (!DENO_ENGINE) {
      // Back to two planes, each takes one of the two sockets: none closes, none is added.
      const two = await listenSocket(b.port);
      assert.deepEqual(two.map((s) => s.inode).sort(), sockets.map((s) => s.inode).sort());
    }
    await new Promise((r) => setTimeout(r, 300));
    await load.stop();
    const failed = [...load.failed].map(([why, n]) => `${n} x ${why}`).join("; ");
    if (DENO_ENGINE) console.log(`deno engine: ${load.ok} served, failed: ${failed || "none"}`);
    else assert.equal(failed, "", `failed requests: ${failed}`);
    assert.ok(load.ok > 200, `only ${load.ok} requests ran`);
    const status = JSON.parse((await bal(b.home, "status", "--json")).stdout);
    assert.equal(status.workers, 2);
  } finally {
    await load.stop();
    await bal(b.home, "stop");
    const pid = readPid(b.home);
    if (pid && alive(pid)) Deno.kill(pid, "SIGKILL");
    await echo.close();
  }
});

Deno.test("restart: a bal from before upgrades is restarted cold once, and upgrades work after", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const config = `${home}/test.yaml`;
  Deno.writeTextFileSync(
    config,
    `port: ${port}\nbind_address: 127.0.0.1\nbackends: [{host: 127.0.0.1, port: ${echo.port}}]\n`,
  );
  // BAL_TEST_FAULT=no_handover: the daemon answers `handover` as an older bal does.
  const start = await runCommand(Deno.execPath(), [
    "task",
    "-q",
    "bal",
    "start",
    "-d",
    "-c",
    config,
  ], {
    cwd: ROOT,
    env: { BAL_HOME: home, NO_COLOR: "1", BAL_TEST_FAULT: "no_handover" },
  });
  assert.equal(start.code, 0, start.stderr);
  const old = readPid(home)!;
  try {
    const up = await bal(home, "upgrade");
    assert.equal(up.code, 1);
    assert.match(up.stderr, /the running bal predates bal upgrade; restart it cold once/);
    assert.equal(readPid(home), old);
    const restart = await bal(home, "restart");
    assert.equal(restart.code, 0, restart.stderr);
    assert.match(restart.stdout, /predates bal upgrade: restarting it cold \(stop, then start\)/);
    assert.match(restart.stdout, new RegExp(`bal stopped \\(pid ${old}\\)`));
    await upgrade(home);
    await oneRequest(port, 1);
  } finally {
    await bal(home, "stop");
    for (const p of [old, readPid(home)]) if (p && alive(p)) Deno.kill(p, "SIGKILL");
    await echo.close();
  }
});
