/**
 * Many services in one bal, end to end: the real CLI, real sockets, real
 * backends. Methods, weights, backups, limits, live backend control, and
 * reloads that add, change and remove services under load.
 */
import assert from "node:assert/strict";
import {
  askName,
  type Backend,
  bal,
  closeQuietly,
  freePort,
  nameBackend,
  readAll,
  readN,
  serveTcp,
  sha256,
  startDaemon,
  str,
  tempHome,
  text,
  waitFor,
  writeAll,
} from "../helpers.ts";

/** One service of a test config. */
interface ServiceSpec {
  name: string;
  port: number;
  method?: string;
  /** Backends: a port, or a YAML flow mapping such as `{host: 127.0.0.1, port: 1, weight: 3}`. */
  backends: (number | string)[];
  runtime?: Record<string, number>;
}

/** Writes a `services:` config with fast health checks and returns its path. */
function writeServices(
  home: string,
  services: ServiceSpec[],
  extra = "",
  name = "services.yaml",
): string {
  const lines = ["log_level: debug", extra, "runtime:"];
  for (
    const [k, v] of Object.entries({
      health_check_interval_ms: 100,
      health_check_timeout_ms: 90,
      backend_connect_timeout_ms: 300,
      shutdown_drain_timeout_ms: 5000,
    })
  ) lines.push(`  ${k}: ${v}`);
  lines.push("services:");
  for (const s of services) {
    lines.push(`  - name: ${s.name}`, "    bind_address: 127.0.0.1", `    port: ${s.port}`);
    if (s.method) lines.push(`    method: ${s.method}`);
    lines.push("    backends:");
    for (const b of s.backends) {
      lines.push(typeof b === "number" ? `      - {host: 127.0.0.1, port: ${b}}` : `      - ${b}`);
    }
    if (s.runtime) {
      lines.push("    runtime:");
      for (const [k, v] of Object.entries(s.runtime)) lines.push(`      ${k}: ${v}`);
    }
  }
  const path = `${home}/${name}`;
  Deno.writeTextFileSync(path, lines.join("\n") + "\n");
  return path;
}

/** A backend that says its name, then echoes until the client half-closes. */
function namedEcho(name: string, port = 0): Backend {
  return serveTcp(async (conn) => {
    await writeAll(conn, text(name));
    const buf = new Uint8Array(64 * 1024);
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
      await writeAll(conn, buf.subarray(0, n));
    }
    await conn.closeWrite();
  }, port);
}

/** Opens a connection through bal to a named echo backend; returns it and the name. */
async function hold(port: number): Promise<{ conn: Deno.TcpConn; name: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  return { conn, name: str(await readN(conn, 1)) };
}

/** The name a named echo backend says first; the connection is closed at once. */
async function peek(port: number): Promise<string> {
  const { conn, name } = await hold(port);
  conn.close();
  return name;
}

/** Names answered by `n` sequential clients (`ask` fits the backend kind). */
async function names(
  port: number,
  n: number,
  ask: (port: number) => Promise<string> = askName,
): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const name = await ask(port);
    counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
}

/** Sends `size` random bytes through `conn` (a named echo backend) and checks them back. */
async function roundTrip(conn: Deno.TcpConn, size: number): Promise<void> {
  const data = crypto.getRandomValues(new Uint8Array(size > 65536 ? 65536 : size));
  const payload = new Uint8Array(size);
  for (let off = 0; off < size; off += data.length) payload.set(data.subarray(0, size - off), off);
  const [, back] = await Promise.all([writeAll(conn, payload), readN(conn, size)]);
  assert.equal(sha256(back), sha256(payload), "bytes arrive complete and in order");
}

const json = async (home: string, ...args: string[]) => {
  const r = await bal(home, ...args);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  return JSON.parse(r.stdout);
};

Deno.test("services: two services on two ports at once; status, logs and check name each", async () => {
  const [a, b, c] = ["A", "B", "C"].map((n) => nameBackend(n));
  const home = tempHome();
  const [p1, p2] = [freePort(), freePort()];
  const config = writeServices(home, [
    { name: "web", port: p1, backends: [a.port, b.port] },
    { name: "db", port: p2, backends: [c.port] },
  ]);
  const d = await startDaemon(home, config, p1);
  try {
    assert.match(
      d.said,
      new RegExp(
        `^bal started in the background \\(pid \\d+\\), 2 services:\n  web  listening on 127\\.0\\.0\\.1:${p1}\n  db   listening on 127\\.0\\.0\\.1:${p2}\nlog: `,
      ),
    );
    assert.deepEqual(await names(p1, 4), { A: 2, B: 2 });
    assert.deepEqual(await names(p2, 2), { C: 2 });
    const s = await json(home, "status", "--json");
    // The original's top-level keys describe the first service; every service is listed.
    assert.equal(s.port, p1);
    assert.equal(s.backend_total, 2);
    assert.deepEqual(s.services.map((x: { name: string; port: number }) => [x.name, x.port]), [
      ["web", p1],
      ["db", p2],
    ]);
    assert.equal(s.services[1].connections_served, 2);
    assert.equal(s.services[1].backends[0].service, "db");
    const text = await bal(home, "status");
    assert.match(text.stdout, new RegExp(`service db on 127\\.0\\.0\\.1:${p2}, round_robin`));
    const started = d.log().find((l) => l.event === "started")!;
    assert.deepEqual((started.fields as Record<string, unknown>).listening, {
      web: `127.0.0.1:${p1}`,
      db: `127.0.0.1:${p2}`,
    });
    const check = await bal(home, "check", "-c", config, "--verbose");
    assert.match(check.stdout, /2 services, log_level debug/);
    assert.match(check.stdout, new RegExp(`service db: listen 127\\.0\\.0\\.1:${p2}, round_robin`));
  } finally {
    await d.stop();
    for (const x of [a, b, c]) await x.close();
  }
});

Deno.test("services: every method spreads clients by weight (coarse bounds)", async () => {
  const x = namedEcho("X");
  const y = namedEcho("Y");
  const home = tempHome();
  const ports = [freePort(), freePort(), freePort(), freePort()];
  const admin = freePort();
  const weighted = [x.port, `{host: 127.0.0.1, port: ${y.port}, weight: 3}`];
  const methods = ["round_robin", "least_connections", "source_hash", "random_two"];
  const config = writeServices(
    home,
    methods.map((method, i) => ({
      name: method.replace("_", "-"),
      port: ports[i],
      method,
      backends: weighted,
    })),
    `admin: {listen: "127.0.0.1:${admin}"}`,
  );
  const d = await startDaemon(home, config, ports[0]);
  const held: Deno.TcpConn[] = [];
  try {
    // Smooth weighted round robin: exactly 1:3.
    assert.deepEqual(await names(ports[0], 40, peek), { X: 10, Y: 30 });
    // Least connections, with every connection held: the live load settles at 1:3.
    const counts: Record<string, number> = {};
    for (let i = 0; i < 20; i++) {
      const h = await hold(ports[1]);
      held.push(h.conn);
      counts[h.name] = (counts[h.name] ?? 0) + 1;
    }
    assert.ok(counts.X >= 4 && counts.X <= 6, `least_connections: ${JSON.stringify(counts)}`);
    // One client address: one backend, every time.
    const sticky = await names(ports[2], 12, peek);
    assert.equal(Object.keys(sticky).length, 1, `source_hash: ${JSON.stringify(sticky)}`);
    // Two random choices by weight, idle backends: roughly 1:3, both used. With two backends
    // both are always drawn and the less loaded wins, so each client waits until bal has seen
    // the one before it end: a connection still closing would decide instead of the weights.
    const idle = async () => {
      const s = await (await fetch(`http://127.0.0.1:${admin}/status.json`)).json();
      return s.services.find((v: { name: string }) => v.name === "random-two")
        .active_connections === 0;
    };
    const random = await names(ports[3], 60, async (port) => {
      await waitFor("the clients before to have ended", idle);
      return await peek(port);
    });
    assert.ok(random.X >= 3 && random.X <= 25, `random_two: ${JSON.stringify(random)}`);
  } finally {
    held.forEach(closeQuietly);
    await d.stop();
    await x.close();
    await y.close();
  }
});

Deno.test("services: a backup takes over while the regular backend is down and hands back", async () => {
  let primary = nameBackend("P");
  const backup = nameBackend("B");
  const primaryPort = primary.port;
  const home = tempHome();
  const port = freePort();
  const config = writeServices(home, [{
    name: "svc",
    port,
    backends: [primaryPort, `{host: 127.0.0.1, port: ${backup.port}, backup: true}`],
  }]);
  const d = await startDaemon(home, config, port);
  try {
    assert.deepEqual(await names(port, 6), { P: 6 });
    await primary.close();
    // Every client is served: by the backup once the primary is found down.
    await waitFor("the backup to take clients", async () => (await askName(port)) === "B");
    assert.deepEqual(await names(port, 4), { B: 4 });
    primary = nameBackend("P", primaryPort);
    await waitFor("the primary to take clients back", async () => (await askName(port)) === "P");
    assert.deepEqual(await names(port, 4), { P: 4 });
  } finally {
    await d.stop();
    await primary.close();
    await backup.close();
  }
});

Deno.test("services: a backend at its max_connections is skipped for new clients", async () => {
  const a = namedEcho("A");
  const b = namedEcho("B");
  const home = tempHome();
  const port = freePort();
  const config = writeServices(home, [{
    name: "svc",
    port,
    backends: [`{host: 127.0.0.1, port: ${a.port}, max_connections: 2}`, b.port],
  }]);
  const d = await startDaemon(home, config, port);
  const held: { conn: Deno.TcpConn; name: string }[] = [];
  try {
    for (let i = 0; i < 8; i++) held.push(await hold(port));
    assert.equal(held.filter((h) => h.name === "A").length, 2);
    assert.equal(held.filter((h) => h.name === "B").length, 6);
    // One of A's connections ends: A has room again.
    const freed = held.find((h) => h.name === "A")!;
    freed.conn.close();
    held.splice(held.indexOf(freed), 1);
    await waitFor("A to take a client again", async () => {
      const h = await hold(port);
      held.push(h);
      return h.name === "A";
    });
  } finally {
    held.forEach((h) => closeQuietly(h.conn));
    await d.stop();
    await a.close();
    await b.close();
  }
});

Deno.test("services: drain, disable --kill, enable and weight act at once on live traffic", async () => {
  const a = namedEcho("A");
  const b = namedEcho("B");
  const home = tempHome();
  const port = freePort();
  const config = writeServices(home, [{ name: "api", port, backends: [a.port, b.port] }]);
  const d = await startDaemon(home, config, port);
  const A = `127.0.0.1:${a.port}`;
  try {
    const first = await hold(port);
    assert.equal(first.name, "A");
    const r = await bal(home, "backend", "drain", "api", A);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `api ${A}: draining, weight 1`);
    // New clients go elsewhere; the live stream through A finishes intact.
    assert.deepEqual(await names(port, 6, peek), { B: 6 });
    await roundTrip(first.conn, 4 << 20);
    const list = await json(home, "backend", "list", "api", "--json");
    const backendA = list.services[0].backends.find((x: { address: string }) => x.address === A);
    assert.equal(backendA.admin_state, "draining");
    assert.equal(backendA.active_connections, 1);

    // A reload keeps the operator's state while the backend stays in the config.
    assert.equal((await bal(home, "graceful")).code, 0);
    assert.deepEqual(await names(port, 4, peek), { B: 4 });

    // disable --kill closes the live connection too.
    const killed = await bal(home, "backend", "disable", "api", A, "--kill");
    assert.equal(killed.stdout.trim(), `api ${A}: disabled, weight 1, closed 1 live connections`);
    assert.equal((await readAll(first.conn)).length, 0, "the killed connection ends");
    first.conn.close();

    assert.equal((await bal(home, "backend", "enable", "api", A)).code, 0);
    assert.equal((await bal(home, "backend", "weight", "api", A, "3")).code, 0);
    assert.deepEqual(await names(port, 8, peek), { A: 6, B: 2 });
    const s = await json(home, "status", "--json");
    assert.deepEqual(
      s.services[0].backends.map((
        x: { admin_state: string; weight: number },
      ) => [x.admin_state, x.weight]),
      [["enabled", 3], ["enabled", 1]],
    );
    const events = d.log().filter((l) => l.event === "backend_admin").map((l) =>
      (l.fields as Record<string, unknown>).action
    );
    assert.deepEqual(events, ["drain", "disable", "enable", "weight"]);
  } finally {
    await d.stop();
    await a.close();
    await b.close();
  }
});

Deno.test("services: backend commands refuse unknown services, backends and weights in one line", async () => {
  const a = nameBackend("A");
  const home = tempHome();
  const port = freePort();
  const d = await startDaemon(
    home,
    writeServices(home, [{ name: "api", port, backends: [a.port] }]),
    port,
  );
  try {
    const cases: [string[], RegExp][] = [
      [["drain", "nope", "127.0.0.1:1"], /^bal: unknown service "nope"; known: api$/],
      [
        ["drain", "api", "127.0.0.1:1"],
        new RegExp(
          `^bal: service api has no backend "127\\.0\\.0\\.1:1"; its backends: 127\\.0\\.0\\.1:${a.port}$`,
        ),
      ],
      [
        ["weight", "api", `127.0.0.1:${a.port}`, "999"],
        /^bal: weight must be an integer from 0 to 256, got 999$/,
      ],
      [
        ["weight", "api", `127.0.0.1:${a.port}`, "-1"],
        /^bal: weight must be an integer from 0 to 256, got -1$/,
      ],
      [["list", "nope"], /^bal: unknown service "nope"; known: api$/],
    ];
    for (const [args, message] of cases) {
      const r = await bal(home, "backend", ...args);
      assert.equal(r.code, 1, args.join(" "));
      assert.match(r.stderr.trim(), message);
    }
    assert.equal((await bal(home, "backend", "drain", "api", `127.0.0.1:${a.port}`)).code, 0);
  } finally {
    await d.stop();
    await a.close();
  }
  const none = await bal(home, "backend", "list");
  assert.equal(none.code, 1);
  assert.match(none.stderr, /bal is not running/);
});

/** Clients that keep connecting and checking an echo until told to stop; counts failures. */
function load(port: number) {
  let stop = false;
  let ok = 0;
  const failures: string[] = [];
  const run = (async () => {
    while (!stop) {
      try {
        const { conn } = await hold(port);
        await roundTrip(conn, 32 * 1024);
        await conn.closeWrite();
        await readAll(conn);
        conn.close();
        ok++;
      } catch (err) {
        failures.push(String(err));
      }
    }
  })();
  return {
    async end() {
      stop = true;
      await run;
      return { ok, failures };
    },
  };
}

Deno.test("services: a reload adds, changes and removes services under load, losing no connection", async () => {
  const [a, b, c] = ["a", "b", "c"].map((n) => namedEcho(n));
  const home = tempHome();
  const [p1, p2, p3] = [freePort(), freePort(), freePort()];
  const config = writeServices(home, [
    { name: "one", port: p1, backends: [a.port] },
    { name: "two", port: p2, backends: [b.port] },
  ]);
  const d = await startDaemon(home, config, p1);
  try {
    const onOne = load(p1);
    const long = await hold(p2);
    await new Promise((r) => setTimeout(r, 300));
    // one changes its backends, two goes, three arrives.
    writeServices(home, [
      { name: "one", port: p1, backends: [a.port, c.port] },
      { name: "three", port: p3, backends: [c.port] },
    ]);
    const r = await bal(home, "graceful");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout,
      `reloaded: generation 2, 3 backends, 2 services:
  one    listening on 127.0.0.1:${p1}
  three  listening on 127.0.0.1:${p3}
services added: three; services removed: two; backends added: one/127.0.0.1:${c.port}, three/127.0.0.1:${c.port}; backends removed: two/127.0.0.1:${b.port}
`,
    );
    await new Promise((r) => setTimeout(r, 300));
    // The removed service refuses new clients; its live stream finishes intact.
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: p2 }));
    await roundTrip(long.conn, 2 << 20);
    long.conn.close();
    assert.equal(await peek(p3), "c");
    const { ok, failures } = await onOne.end();
    assert.deepEqual(failures, []);
    assert.ok(ok > 5, `only ${ok} clients went through`);
    const reload = d.log().find((l) => l.event === "reload_ok")!.fields as Record<string, unknown>;
    assert.deepEqual(reload.services_added, ["three"]);
    assert.deepEqual(reload.services_removed, ["two"]);
    assert.deepEqual(reload.services_changed, [], "one changed only its backends");
    const s = await json(home, "status", "--json");
    assert.deepEqual(s.services.map((x: { name: string }) => x.name), ["one", "three"]);
  } finally {
    await d.stop();
    for (const x of [a, b, c]) await x.close();
  }
});

Deno.test("services: a removed service's silent connection is closed at its drain timeout, said with the service, and bal goes on", async () => {
  const [a, b] = ["a", "b"].map((n) => namedEcho(n));
  const home = tempHome();
  const [p1, p2] = [freePort(), freePort()];
  const config = writeServices(home, [
    { name: "one", port: p1, backends: [a.port] },
    { name: "two", port: p2, backends: [b.port], runtime: { shutdown_drain_timeout_ms: 300 } },
  ]);
  const d = await startDaemon(home, config, p1);
  try {
    const silent = await hold(p2);
    writeServices(home, [{ name: "one", port: p1, backends: [a.port] }]);
    assert.equal((await bal(home, "graceful")).code, 0);
    // Closed by bal at the timeout: the read ends (end of stream or a reset).
    let timer: ReturnType<typeof setTimeout> | undefined;
    const ended = await Promise.race([
      readAll(silent.conn).then(() => "closed", () => "closed"),
      new Promise((r) => timer = setTimeout(() => r("still open after 10 s"), 10_000)),
    ]);
    clearTimeout(timer);
    assert.equal(ended, "closed");
    silent.conn.close();
    const line = await waitFor(
      "the drain_timeout line",
      () => d.log().find((l) => l.event === "drain_timeout"),
    );
    const f = line.fields as Record<string, unknown>;
    assert.deepEqual([f.service, f.forced, f.drain_ms], ["two", 1, 300]);
    assert.equal(await peek(p1), "a", "the daemon goes on");
  } finally {
    await d.stop();
    for (const x of [a, b]) await x.close();
  }
});

Deno.test("services: a reload whose new service's port is taken changes nothing", async () => {
  const a = nameBackend("A");
  const b = nameBackend("B");
  const home = tempHome();
  const [p1, p2] = [freePort(), freePort()];
  const config = writeServices(home, [{ name: "one", port: p1, backends: [a.port] }]);
  const d = await startDaemon(home, config, p1);
  const squatter = Deno.listen({ hostname: "127.0.0.1", port: p2 });
  try {
    writeServices(home, [
      { name: "one", port: p1, backends: [b.port] },
      { name: "two", port: p2, backends: [b.port] },
    ]);
    const r = await bal(home, "graceful");
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(`cannot listen on 127\\.0\\.0\\.1:${p2}: address already in use`),
    );
    // The running config stays: one still goes to A, and there is no service two.
    assert.deepEqual(await names(p1, 3), { A: 3 });
    const s = await json(home, "status", "--json");
    assert.equal(s.services.length, 1);
    assert.equal(s.reloads.last.generation, 1);
  } finally {
    squatter.close();
    await d.stop();
    await a.close();
    await b.close();
  }
});

Deno.test("services: workers: a drained backend gets no new client on any data plane", async () => {
  const a = nameBackend("A");
  const b = nameBackend("B");
  const home = tempHome();
  const port = freePort();
  const config = writeServices(
    home,
    [{ name: "svc", port, backends: [a.port, b.port] }],
    "workers: 2",
  );
  const d = await startDaemon(home, config, port);
  try {
    const before = await names(port, 20);
    assert.ok(before.A > 0 && before.B > 0);
    assert.equal((await bal(home, "backend", "drain", "svc", `127.0.0.1:${a.port}`)).code, 0);
    assert.deepEqual(await names(port, 30), { B: 30 });
    const s = await json(home, "status", "--json");
    assert.equal(s.workers, 2);
    assert.equal(s.services[0].connections_served, 50);
  } finally {
    await d.stop();
    await a.close();
    await b.close();
  }
});
