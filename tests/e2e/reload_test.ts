/**
 * `bal graceful` and SIGHUP end to end: the config swaps atomically, live
 * connections are untouched, a bad config changes nothing.
 */
import assert from "node:assert/strict";
import { configChanges, describeChanges } from "../../src/config/changes.ts";
import { parseConfig } from "../../src/config/mod.ts";
import { request } from "../../src/instance/control_socket.ts";
import {
  askName,
  bal,
  checkRounds,
  echoBackend,
  freePort,
  nameBackend,
  readAll,
  readN,
  startDaemon,
  str,
  tempHome,
  text,
  waitFor,
  writeAll,
  writeConfig,
} from "../helpers.ts";

const fieldsOf = (line: Record<string, unknown>) => line.fields as Record<string, unknown>;

Deno.test("reload: adding and removing backends keeps a connection opened before it working", async () => {
  const echo = echoBackend();
  const b = nameBackend("B");
  const c = nameBackend("C");
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [echo.port] });
  const d = await startDaemon(home, config, port);
  try {
    const old = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(old, text("before"));
    assert.equal(str(await readN(old, 6)), "before");

    // The old connection's backend leaves the config; the connection must not notice.
    writeConfig(home, { port, backends: [b.port, c.port] });
    const r = await bal(home, "graceful");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout.trim(),
      `reloaded: generation 2, 2 backends, listening on 127.0.0.1:${port}\nbackends added: 127.0.0.1:${b.port}, 127.0.0.1:${c.port}; backends removed: 127.0.0.1:${echo.port}`,
    );
    const again = await bal(home, "graceful");
    assert.match(
      again.stdout,
      /^reloaded: generation 3, 2 backends, listening on \S+\nno change\n$/,
    );

    // The old connection still works, both ways.
    await writeAll(old, text("after"));
    assert.equal(str(await readN(old, 5)), "after");
    await old.closeWrite();
    assert.equal((await readAll(old)).length, 0);
    old.close();

    // New connections follow the new config.
    const names = new Set<string>();
    for (let i = 0; i < 4; i++) names.add(await askName(port));
    assert.deepEqual([...names].sort(), ["B", "C"]);
    const line = d.log().find((l) => l.event === "reload_ok")!;
    assert.deepEqual(fieldsOf(line).added, [`127.0.0.1:${b.port}`, `127.0.0.1:${c.port}`]);
    assert.deepEqual(fieldsOf(line).removed, [`127.0.0.1:${echo.port}`]);
  } finally {
    await d.stop();
    await Promise.all([echo.close(), b.close(), c.close()]);
  }
});

Deno.test("reload: graceful with an invalid config says why, sends nothing, keeps the old config", async () => {
  const a = nameBackend("A");
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [a.port] });
  const d = await startDaemon(home, config, port);
  try {
    Deno.writeTextFileSync(config, `port: ${port}\nbackends:\n  - {host: 127.0.0.1, port: nope}\n`);
    const r = await bal(home, "graceful");
    assert.equal(r.code, 1);
    assert.deepEqual(r.stderr.trim().split("\n"), [
      `bal: ${config}:3:29: backends[0].port: expected an integer from 1 to 65535, got the text "nope"`,
      "bal: not reloaded: the running config is unchanged",
    ]);
    const state = JSON.parse(Deno.readTextFileSync(`${home}/bal.state.json`));
    assert.equal(state.reloads, 0, "graceful must not signal bal when the config is invalid");
    assert.equal(await askName(port), "A");
  } finally {
    await d.stop();
    await a.close();
  }
});

Deno.test("reload: SIGHUP with an invalid config logs why and keeps serving the old config", async () => {
  const a = nameBackend("A");
  const b = nameBackend("B");
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [a.port] });
  const d = await startDaemon(home, config, port);
  try {
    Deno.writeTextFileSync(config, `port: ${port}\nbackends: []\n`);
    Deno.kill(d.pid, "SIGHUP");
    const failed = await waitFor(
      "reload_failed",
      () => d.log().find((l) => l.event === "reload_failed"),
    );
    assert.equal(failed.level, "error");
    assert.match(
      String(fieldsOf(failed).error),
      new RegExp(`${config}:2:11: backends: expected a non-empty list`),
    );
    assert.equal(await askName(port), "A");
    const state = JSON.parse(Deno.readTextFileSync(`${home}/bal.state.json`));
    assert.equal(state.last_reload.ok, false);
    assert.equal(state.last_reload.generation, 1);

    // Fixed, it applies.
    writeConfig(home, { port, backends: [b.port] });
    const r = await bal(home, "graceful");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await askName(port), "B");
  } finally {
    await d.stop();
    await Promise.all([a.close(), b.close()]);
  }
});

Deno.test("reload: a changed port opens the new listener first and keeps old connections", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const next = freePort();
  const config = writeConfig(home, { port, backends: [echo.port] });
  const d = await startDaemon(home, config, port);
  try {
    const old = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(old, text("x"));
    assert.equal(str(await readN(old, 1)), "x");
    writeConfig(home, { port: next, backends: [echo.port] });
    const r = await bal(home, "graceful");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`listening on 127\\.0\\.0\\.1:${next}`));
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port }),
      Deno.errors.ConnectionRefused,
    );
    const fresh = await Deno.connect({ hostname: "127.0.0.1", port: next });
    await writeAll(fresh, text("y"));
    assert.equal(str(await readN(fresh, 1)), "y");
    fresh.close();
    await writeAll(old, text("z"));
    assert.equal(str(await readN(old, 1)), "z");
    old.close();
  } finally {
    await d.stop();
    await echo.close();
  }
});

Deno.test("reload: a port that cannot be bound fails the reload and keeps the old listener", async () => {
  const a = nameBackend("A");
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const busyPort = (busy.addr as Deno.NetAddr).port;
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [a.port] });
  const d = await startDaemon(home, config, port);
  try {
    writeConfig(home, { port: busyPort, backends: [a.port] });
    const r = await bal(home, "graceful");
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr.trim(),
      `bal: reload failed, the running config is unchanged: cannot listen on 127.0.0.1:${busyPort}: address already in use`,
    );
    assert.equal(await askName(port), "A");
  } finally {
    busy.close();
    await d.stop();
    await a.close();
  }
});

Deno.test("reload: backends that stay keep their health state", async () => {
  const a = nameBackend("A");
  const b = nameBackend("B");
  const dead = freePort();
  const home = tempHome();
  const port = freePort();
  const runtime = { health_check_interval_ms: 100, health_check_fail_threshold: 1 };
  const config = writeConfig(home, { port, backends: [a.port, dead], runtime });
  const d = await startDaemon(home, config, port);
  try {
    await waitFor("backend_down", () => d.log().some((l) => l.event === "backend_down"));
    writeConfig(home, { port, backends: [a.port, dead, b.port], runtime });
    assert.equal((await bal(home, "graceful")).code, 0);
    await checkRounds(home, `127.0.0.1:${dead}`, 3);
    // Had the reload reset it to healthy, a second backend_down would follow.
    const downs = d.log().filter((l) => l.event === "backend_down");
    assert.equal(downs.length, 1);
  } finally {
    await d.stop();
    await Promise.all([a.close(), b.close()]);
  }
});

Deno.test("reload: runtime keys and log_level apply without a restart", async () => {
  const echo = echoBackend();
  const dead = freePort();
  const home = tempHome();
  const port = freePort();
  // The dead backend never turns unhealthy and cools down for 1 ms only, so round robin tries
  // it every other client: each try is a debug line (connect_failed) at debug level.
  const runtime = {
    health_check_fail_threshold: 1000,
    shutdown_drain_timeout_ms: 20_000,
    failover_backoff_initial_ms: 1,
    failover_backoff_max_ms: 1,
    backend_cooldown_ms: 0,
  };
  const config = writeConfig(home, { port, backends: [echo.port, dead], runtime });
  const d = await startDaemon(home, config, port);
  const hold = async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, text("hold"));
    assert.equal(str(await readN(conn, 4)), "hold");
    return conn;
  };
  try {
    // log_level debug: failed connects to the dead backend are logged.
    (await hold()).close();
    (await hold()).close();
    await waitFor("a debug line", () => d.log().some((l) => l.event === "connect_failed"));

    writeConfig(home, {
      port,
      backends: [echo.port, dead],
      runtime: { ...runtime, shutdown_drain_timeout_ms: 200 },
    });
    Deno.writeTextFileSync(
      config,
      Deno.readTextFileSync(config).replace("log_level: debug", "log_level: info"),
    );
    assert.equal((await bal(home, "graceful")).code, 0);
    const refused = async () =>
      JSON.parse((await bal(home, "status", "--json")).stdout).backends[1].counters.refused;
    const debugBefore = d.log().filter((l) => l.level === "debug").length;
    const triedBefore = await refused();
    for (let i = 0; i < 3; i++) (await hold()).close();
    const open = await hold();
    // The dead backend was tried again, and at info level that left no debug line.
    assert.ok((await refused()) > triedBefore, "the setup makes debug lines");
    assert.equal(d.log().filter((l) => l.level === "debug").length, debugBefore);

    // The new drain timeout is the one stop waits for.
    const started = Date.now();
    assert.equal((await d.stop()).code, 0);
    assert.ok(Date.now() - started < 5000, "stop waited for the old 20 s drain timeout");
    assert.equal(
      (d.log().find((l) => l.event === "drain_timeout")!.fields as Record<string, unknown>)
        .drain_ms,
      200,
    );
    open.close();
  } finally {
    await d.stop();
    await echo.close();
  }
});

Deno.test("reload: every runtime key is reloaded without a restart (status shows each); the limit and the backoff are seen acting", async () => {
  const echo = echoBackend();
  const dead = freePort();
  const home = tempHome();
  const port = freePort();
  const before = {
    health_check_interval_ms: 200,
    health_check_timeout_ms: 150,
    health_check_fail_threshold: 1000,
    health_check_success_threshold: 3,
    backend_connect_timeout_ms: 300,
    max_failover_attempts: 3,
    failover_backoff_initial_ms: 100,
    failover_backoff_max_ms: 100,
    backend_cooldown_ms: 0,
    protection_trigger_threshold: 1000,
    protection_window_ms: 10_000,
    protection_stable_success_threshold: 50,
    shutdown_drain_timeout_ms: 5000,
    max_concurrent_connections: 100,
    connection_idle_timeout_ms: 60_000,
    tcp_backlog: 1024,
    slow_start_ms: 0,
    proxy_header_timeout_ms: 3000,
    tls_hello_timeout_ms: 5000,
    dns_min_ttl_ms: 1000,
    dns_max_ttl_ms: 300000,
    max_connections_per_client: 0,
    connection_rate_per_client: 0,
  };
  const after = {
    health_check_interval_ms: 300,
    health_check_timeout_ms: 250,
    health_check_fail_threshold: 999,
    health_check_success_threshold: 2,
    backend_connect_timeout_ms: 400,
    max_failover_attempts: 2,
    failover_backoff_initial_ms: 1700,
    failover_backoff_max_ms: 1700,
    backend_cooldown_ms: 5,
    protection_trigger_threshold: 999,
    protection_window_ms: 20_000,
    protection_stable_success_threshold: 60,
    shutdown_drain_timeout_ms: 4000,
    max_concurrent_connections: 1,
    connection_idle_timeout_ms: 50_000,
    tcp_backlog: 2048,
    slow_start_ms: 500,
    proxy_header_timeout_ms: 2000,
    tls_hello_timeout_ms: 700,
    dns_min_ttl_ms: 2000,
    dns_max_ttl_ms: 60000,
    max_connections_per_client: 50,
    connection_rate_per_client: 500,
  };
  const config = writeConfig(home, { port, backends: [dead, echo.port], runtime: before });
  const d = await startDaemon(home, config, port);
  const status = async () => JSON.parse((await bal(home, "status", "--json")).stdout);
  try {
    assert.deepEqual((await status()).runtime, { ...before, overload_policy: "reject" });
    writeConfig(home, { port, backends: [dead, echo.port], runtime: after });
    assert.equal((await bal(home, "graceful")).code, 0);
    assert.deepEqual((await status()).runtime, { ...after, overload_policy: "reject" });
    // max_concurrent_connections 1: a second client is closed at once.
    const first = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(first, text("a"));
    assert.equal(str(await readN(first, 1)), "a");
    const second = await Deno.connect({ hostname: "127.0.0.1", port });
    assert.equal((await readAll(second)).length, 0, "the second client was closed");
    second.close();
    first.close();
    // The new backoff sizes the dead backend's cooldown.
    await waitFor("a cooldown under the new backoff", async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      await new Promise((r) => setTimeout(r, 50));
      c.close();
      return d.log().some((l) =>
        l.event === "backend_cooldown" && fieldsOf(l).cooldown_ms === 1700
      );
    });
  } finally {
    await d.stop();
    await echo.close();
  }
});

Deno.test("reload: graceful says what changed, in a line, from the configs alone", () => {
  const parse = (yaml: string) => parseConfig(yaml, "test.yaml");
  const one = parse("bind_address: 127.0.0.1\nport: 9001\nbackends: ['127.0.0.1:1']\n");
  const moved = parse("bind_address: 127.0.0.1\nport: 9002\nbackends: ['127.0.0.1:1']\n");
  assert.equal(describeChanges(configChanges(one, one), true), "no change");
  assert.equal(describeChanges(configChanges(one, moved), true), "settings changed");
  // A backend's own settings (its weight, its bandwidth) are a change of that backend.
  const limited = parse(
    "bind_address: 127.0.0.1\nport: 9001\nbackends: [{host: 127.0.0.1, port: 1, bandwidth: {upload_bytes_per_s: 1MB}}]\n",
  );
  assert.equal(describeChanges(configChanges(one, limited), true), "backends changed: 127.0.0.1:1");
  // Eight backends move the runtime defaults to another tier: the settings change too.
  const many = parse(
    "bind_address: 127.0.0.1\nport: 9001\nbackends: [" +
      Array.from({ length: 8 }, (_, i) => `'127.0.0.1:${i + 1}'`).join(", ") + "]\n",
  );
  assert.equal(
    describeChanges(configChanges(one, many), true),
    "settings changed; backends added: 127.0.0.1:2, 127.0.0.1:3, 127.0.0.1:4, 127.0.0.1:5, 127.0.0.1:6 and 2 more",
  );
});

Deno.test("reload: the control socket's reload command answers with the outcome; SIGHUP runs the same reload", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [echo.port] });
  const d = await startDaemon(home, config, port);
  try {
    const sock = `${home}/bal.sock`;
    const same = await request(sock, { cmd: "reload" }) as Record<string, unknown>;
    assert.deepEqual([same.ok, same.generation, same.changes], [true, 2, "no change"]);
    Deno.writeTextFileSync(config, "port: [\n");
    const bad = await request(sock, { cmd: "reload" }) as Record<string, unknown>;
    assert.equal(bad.ok, false);
    assert.match(String(bad.error), /\.yaml:\d+:\d+: /);
    writeConfig(home, { port, backends: [echo.port, 9] });
    Deno.kill(d.pid, "SIGHUP");
    await waitFor(
      "the SIGHUP's reload",
      () => d.log().filter((l) => l.event === "reload_ok").length === 2,
    );
    const after = JSON.parse((await bal(home, "status", "--json")).stdout);
    assert.equal(after.reloads.count, 3);
    assert.equal(after.reloads.last.changes, "backends added: 127.0.0.1:9");
  } finally {
    await d.stop();
    await echo.close();
  }
});
