/**
 * `bal status` and the control socket end to end: real counts while
 * connections are open, failure counters by kind, the JSON contract.
 */
import assert from "node:assert/strict";
import {
  bal,
  closeQuietly,
  echoBackend,
  echoing,
  freePort,
  readAll,
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

// deno-lint-ignore no-explicit-any -- the status JSON is checked field by field below
type Json = any;

async function status(home: string, ...flags: string[]): Promise<Json> {
  const r = await bal(home, "status", "--json", ...flags);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, "");
  return JSON.parse(r.stdout);
}

const STATUS_KEYS = [
  "running",
  "pid",
  "config_path",
  "bind_address",
  "port",
  "method",
  "backend_total",
  "backend_reachable",
  "backends",
  "active_connections",
  "last_check_time",
  "protection_mode",
];
const BACKEND_KEYS = ["address", "reachable", "active_connections", "last_check_time", "counters"];

Deno.test("status: not running is a report too, exit 0", async () => {
  const home = tempHome();
  assert.deepEqual(await status(home), {
    running: false,
    pid: null,
    protection_mode: { enabled: false, reason: null, since: null },
  });
  const r = await bal(home, "status");
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^bal is not running$/m);
});

Deno.test("status: live counts while connections are open, and the JSON contract", async () => {
  const echo = echoBackend();
  const dead = freePort();
  const home = tempHome();
  const port = freePort();
  // The dead backend stays "healthy" so the data path keeps trying it: refused counts grow.
  const config = writeConfig(home, {
    port,
    backends: [echo.port, dead],
    runtime: { health_check_interval_ms: 60_000, health_check_fail_threshold: 1000 },
  });
  const d = await startDaemon(home, config, port);
  const held: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 3; i++) held.push(await echoing(port, "12345"));
    const s = await status(home);
    for (const key of STATUS_KEYS) assert.ok(key in s, `status lacks ${key}`);
    assert.equal(s.running, true);
    assert.equal(s.pid, d.pid);
    assert.equal(s.config_path, config);
    assert.equal(s.port, port);
    assert.equal(s.active_connections, 3);
    assert.equal(s.backend_total, 2);
    assert.deepEqual(s.protection_mode, { enabled: false, reason: null, since: null });
    const [live, down] = s.backends;
    for (const key of BACKEND_KEYS) assert.ok(key in live, `backend lacks ${key}`);
    assert.equal(live.address, `127.0.0.1:${echo.port}`);
    assert.equal(live.active_connections, 3);
    assert.equal(live.connections_served, 3);
    assert.ok(down.counters.refused >= 1, JSON.stringify(down.counters));
    assert.equal(down.connections_served, 0);
    assert.equal(down.connect_failure_streak, down.counters.refused);
    assert.equal(live.cooldown_remaining_ms, null);
    assert.equal(s.runtime.health_check_interval_ms, 60_000);
    assert.equal(s.runtime.max_concurrent_connections, 4000);

    held.forEach((c) => c.closeWrite());
    await Promise.all(held.map((c) => readAll(c)));
    held.forEach(closeQuietly);
    const after = await waitFor("the connections to end", async () => {
      const x = await status(home);
      return x.active_connections === 0 ? x : undefined;
    });
    assert.equal(after.backends[0].bytes_in, 15);
    assert.equal(after.backends[0].bytes_out, 15);

    const verbose = await bal(home, "status", "--verbose");
    assert.match(
      verbose.stdout,
      /^bal is running \(pid \d+\), 127\.0\.0\.1:\d+, 2\/2 backends reachable, 0 active connections$/m,
    );
    assert.match(verbose.stdout, /failed connects: 0 timeout, \d+ refused, 0 other/);
    assert.match(verbose.stdout, /^next: /m);
    assert.equal((await bal(home, "status", "--brief")).stdout.trim().split("\n").length, 1);
  } finally {
    held.forEach(closeQuietly);
    await d.stop();
    await echo.close();
  }
});

Deno.test("status: the control socket is private, survives garbage, and is gone after stop", async () => {
  const d = await startBal({ backends: [9] });
  const { home } = d;
  try {
    assert.equal(Deno.statSync(`${home}/bal.sock`).mode! & 0o777, 0o600);
    for (
      const garbage of [new Uint8Array([0, 255, 10]), text("[1,2]\n"), text('{"cmd":"nope"}\n')]
    ) {
      const c = await Deno.connect({ transport: "unix", path: `${home}/bal.sock` });
      await writeAll(c, garbage);
      const reply = JSON.parse(str(await readN(c, 4096)));
      assert.ok(typeof reply.error === "string", JSON.stringify(reply));
      closeQuietly(c);
    }
    // A peer that sends nothing is cut off (after 2 s), and status answers meanwhile.
    const silent = await Deno.connect({ transport: "unix", path: `${home}/bal.sock` });
    const opened = Date.now();
    assert.equal((await status(home)).running, true);
    const cut = await Promise.race([
      silent.read(new Uint8Array(16)).then((n) => n === null ? "closed" : "data", () => "closed"),
      new Promise((r) => setTimeout(() => r("still open"), 6000)),
    ]);
    assert.equal(cut, "closed");
    assert.ok(Date.now() - opened >= 1500, "cut by the request timeout, not at once");
    closeQuietly(silent);
  } finally {
    await d.stop();
  }
  assert.throws(() => Deno.statSync(`${home}/bal.sock`));
});

Deno.test("status: with two workers the counts of both planes add up", async () => {
  const echo = echoBackend();
  const d = await startBal({ backends: [echo.port], extra: "workers: 2" });
  const { home, port } = d;
  const held: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 20; i++) held.push(await echoing(port, "x"));
    // Worker counters arrive every second.
    const s = await waitFor("20 active in the sum", async () => {
      const x = await status(home);
      return x.active_connections === 20 ? x : undefined;
    }, 5000);
    assert.equal(s.workers, 2);
    assert.equal(s.backends[0].active_connections, 20);
    assert.equal(s.backends[0].connections_served, 20);
  } finally {
    held.forEach(closeQuietly);
    await d.stop();
    await echo.close();
  }
});

Deno.test("status: an IPv6 listener serves, and every command writes its address as [::1]:PORT", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const config = `${home}/v6.yaml`;
  Deno.writeTextFileSync(
    config,
    `port: ${port}\nbind_address: "::1"\nbackends: ["127.0.0.1:${echo.port}"]\n`,
  );
  const check = await bal(home, "check", "-c", config);
  assert.match(check.stdout, new RegExp(`^ {2}listen \\[::1\\]:${port}, `, "m"));
  const d = await startDaemon(home, config, port);
  try {
    const c = await Deno.connect({ hostname: "::1", port });
    await writeAll(c, text("six"));
    assert.equal(str(await readN(c, 3)), "six");
    c.close();
    const brief = await bal(home, "status", "--brief");
    assert.match(
      brief.stdout,
      new RegExp(`^bal is running \\(pid ${d.pid}\\), \\[::1\\]:${port}, `),
    );
  } finally {
    await d.stop();
    await echo.close();
  }
});
