/**
 * Seeing bal work: the dashboard in a real headless Chromium, access logs,
 * and `bal status --watch`.
 */
import assert from "node:assert/strict";
import {
  bal,
  dom,
  echoBackend,
  freePort,
  missingTool,
  nameBackend,
  readAll,
  readN,
  ROOT,
  runCommand,
  startDaemon,
  tempHome,
  text,
  waitFor,
  writeAll,
} from "../helpers.ts";

/** Starts bal on a config written from `yaml` (after port and bind_address). */
async function balWith(yaml: string) {
  const home = tempHome();
  const port = freePort();
  const config = `${home}/observe.yaml`;
  Deno.writeTextFileSync(config, `port: ${port}\nbind_address: 127.0.0.1\n${yaml}\n`);
  return { ...(await startDaemon(home, config, port)), config };
}

/** Each backend row's address and state, from the rendered page. */
const rows = (html: string) =>
  [...html.matchAll(/<tr data-service="([^"]+)" data-backend="([^"]+)" data-state="([^"]+)"/g)]
    .map((m) => `${m[1]} ${m[2]} ${m[3]}`);

Deno.test({
  name: "dashboard: headless Chromium renders every backend and its state, and sees one go down",
  ignore: missingTool("chromium"),
  fn: async () => {
    const a = nameBackend("A");
    const b = nameBackend("B");
    const admin = freePort();
    const d = await balWith(
      `admin: {listen: "127.0.0.1:${admin}"}\nruntime: {health_check_interval_ms: 100, health_check_fail_threshold: 1}\nbackends: ["127.0.0.1:${a.port}", "127.0.0.1:${b.port}"]`,
    );
    try {
      const url = `http://127.0.0.1:${admin}/`;
      assert.deepEqual(rows(await dom(url)), [
        `default 127.0.0.1:${a.port} up`,
        `default 127.0.0.1:${b.port} up`,
      ]);
      await b.close();
      await waitFor(
        "bal to see B down",
        async () =>
          JSON.parse((await bal(d.home, "status", "--json")).stdout).backend_reachable === 1,
      );
      assert.deepEqual(rows(await dom(url)), [
        `default 127.0.0.1:${a.port} up`,
        `default 127.0.0.1:${b.port} down`,
      ]);
      // Who changed what last (issue 28).
      const added = await bal(d.home, "backend", "add", "default", `127.0.0.1:${b.port + 1}`);
      assert.equal(added.code, 0, added.stderr);
      assert.match(
        await dom(url),
        new RegExp(
          `<div id="change" class="meta">last change: added backend 127\\.0\\.0\\.1:${
            b.port + 1
          } to default, by uid \\d+ \\(control socket\\) at \\d{4}-`,
        ),
      );
    } finally {
      await d.stop();
      await a.close();
    }
  },
});

Deno.test({
  name: "dashboard: with a token the page asks for it, and shows nothing without it",
  ignore: missingTool("chromium"),
  fn: async () => {
    const a = nameBackend("A");
    const admin = freePort();
    const d = await balWith(
      `admin: {listen: "127.0.0.1:${admin}", token: "0123456789abcdef-page"}\nbackends: ["127.0.0.1:${a.port}"]`,
    );
    try {
      const html = await dom(`http://127.0.0.1:${admin}/`);
      assert.match(html, /<form id="login">/, "the token form is shown (not hidden)");
      assert.deepEqual(rows(html), []);
      assert.match(html, /id="meta">this bal asks for its admin token</, "not stuck on loading…");
    } finally {
      await d.stop();
      await a.close();
    }
  },
});

/** A chart's data-* attributes, by service and chart name, from the rendered page. */
function charts(html: string): Map<string, Record<string, number>> {
  const found = new Map<string, Record<string, number>>();
  const figure =
    /<figure data-service="([^"]+)" data-chart="([^"]+)" data-points="(\d+)" data-last="([^"]+)" data-peak="([^"]+)"/g;
  for (const m of html.matchAll(figure)) {
    found.set(`${m[1]} ${m[2]}`, { points: +m[3], last: +m[4], peak: +m[5] });
  }
  return found;
}

Deno.test({
  name:
    "dashboard: charts move while a load runs; a backup backend is marked; one data plane said so",
  ignore: missingTool("chromium"),
  fn: async () => {
    const echo = echoBackend();
    const spare = nameBackend("S");
    const admin = freePort();
    const d = await balWith(
      `admin: {listen: "127.0.0.1:${admin}"}\nbackends: ["127.0.0.1:${echo.port}", {host: 127.0.0.1, port: ${spare.port}, backup: true}]`,
    );
    let running = true;
    // Clients all along, each a few bytes each way: the page samples the counters once a second.
    const load = (async () => {
      while (running) {
        const c = await Deno.connect({ hostname: "127.0.0.1", port: d.port });
        await writeAll(c, text("ping"));
        await readN(c, 4);
        c.close();
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    try {
      const html = await dom(`http://127.0.0.1:${admin}/`, 6000);
      const seen = charts(html);
      const conn = seen.get("default conn_rate")!;
      assert.ok(conn.points >= 2, `${conn.points} samples`);
      assert.ok(conn.peak > 0, "connections/s moved");
      assert.ok(seen.get("default bytes_in_rate")!.peak > 0, "bytes in/s moved");
      assert.ok(seen.get("default bytes_out_rate")!.peak > 0, "bytes out/s moved");
      assert.equal(seen.get("default refused_rate")!.peak, 0, "nobody refused");
      assert.match(
        html,
        new RegExp(`data-backend="127\\.0\\.0\\.1:${spare.port}"[^>]*data-backup="true"`),
      );
      assert.match(html, /\b1 data plane,/, "one data plane, not 'data plane(s)'");
    } finally {
      running = false;
      await load;
      await d.stop();
      await echo.close();
      await spare.close();
    }
  },
});

Deno.test({
  name:
    "dashboard: 3 and 30 services, screenshots taken; many services fold and a filter box shows",
  ignore: missingTool("chromium"),
  fn: async () => {
    const echoes = [echoBackend(), echoBackend()];
    const shots = Deno.env.get("BAL_SCREENSHOTS") ?? tempHome();
    for (const count of [3, 30]) {
      const admin = freePort();
      const home = tempHome();
      const ports = Array.from({ length: count }, () => freePort());
      const names = ["web", "api", "db", "cache", "queue", "search"];
      // The first has a DNS name nobody answers; the second, a backend that is down; the
      // third, none up at all: its clients are refused and protection mode turns on.
      const backends = (i: number) =>
        [
          i === 2 ? `"127.0.0.1:${freePort()}"` : `"127.0.0.1:${echoes[0].port}"`,
          i === 1 || i === 2 ? `"127.0.0.1:${freePort()}"` : `"127.0.0.1:${echoes[1].port}"`,
          ...(i === 0 ? [`{dns: "app.internal:8080"}`] : []),
        ].join(", ");
      const services = ports.map((p, i) =>
        `  - name: ${names[i % names.length]}${
          i >= names.length ? `-${i}` : ""
        }\n    port: ${p}\n    bind_address: 127.0.0.1\n    backends: [${backends(i)}]`
      );
      const config = `${home}/many.yaml`;
      Deno.writeTextFileSync(
        config,
        `admin: {listen: "127.0.0.1:${admin}"}\nresolver: "127.0.0.1:${freePort()}"\nruntime: {health_check_interval_ms: 200}\nservices:\n${
          services.join("\n")
        }\n`,
      );
      const d = await startDaemon(home, config, ports[0]);
      let running = true;
      const load = (async () => {
        for (let i = 0; running; i++) {
          const c = await Deno.connect({ hostname: "127.0.0.1", port: ports[i % 3] });
          await writeAll(c, text("x".repeat(1000 * (1 + i % 3))));
          await readN(c, 1000 * (1 + i % 3)).catch(() => {});
          c.close();
          await new Promise((r) => setTimeout(r, i % 3));
        }
      })();
      try {
        const url = `http://127.0.0.1:${admin}/`;
        const html = await dom(url, 4000);
        assert.equal([...html.matchAll(/<details data-service=/g)].length, count);
        const open = [...html.matchAll(/<details data-service="[^"]+" open/g)].length;
        assert.equal(open, count > 6 ? 0 : count, "more than six services start folded");
        assert.equal(/<input id="filter"[^>]*hidden/.test(html), count <= 6, "the filter box");
        assert.match(html, /data-discovery="dns app\.internal" data-discovery-state="pending"/);
        assert.match(html, /<span class="tag bad">1 backend down<\/span>/);
        assert.match(html, /<details data-service="db"[^>]*>.*?data-protection="on"/s);
        assert.ok(charts(html).get("db refused_rate")!.peak > 0, "db's refusals/s moved");
        const png = `${shots}/dashboard-${count}-services.png`;
        const r = await runCommand("chromium", [
          "--headless=new",
          "--no-sandbox",
          "--disable-gpu",
          "--hide-scrollbars",
          "--virtual-time-budget=8000",
          `--window-size=1100,${count > 6 ? 700 : 1050}`,
          `--screenshot=${png}`,
          url,
        ]);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(Deno.statSync(png).size > 10_000, "a screenshot with something in it");
      } finally {
        running = false;
        await load;
        await d.stop();
      }
    }
    for (const e of echoes) await e.close();
  },
});

Deno.test("access log: one NDJSON line per finished connection, saying how it ended", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const config = `${home}/access.yaml`;
  Deno.writeTextFileSync(
    config,
    `port: ${port}\nbind_address: 127.0.0.1\naccess_log: true\naccess_log_path: access.log\nlog_level: warn\nruntime: {max_concurrent_connections: 1}\nbackends: ["127.0.0.1:${echo.port}"]\n`,
  );
  const d = await startDaemon(home, config, port);
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(c, text("hello"));
    await c.closeWrite();
    assert.equal((await readAll(c)).length, 5);
    // With one connection held, the next is refused at the limit.
    c.close();
    const held = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(held, text("x"));
    // Its echo read, so closing sends a FIN: a socket closed with unread bytes sends a reset.
    assert.equal((await readN(held, 1)).length, 1);
    const refused = await Deno.connect({ hostname: "127.0.0.1", port });
    await readAll(refused);
    refused.close();
    held.close();
    const lines = await waitFor("three access lines", () => {
      try {
        const l = Deno.readTextFileSync(`${home}/access.log`).trim().split("\n").map((x) =>
          JSON.parse(x)
        );
        return l.length >= 3 && l;
      } catch {
        return false;
      }
    });
    const fields = lines.map((l: { event: string; fields: Record<string, unknown> }) => {
      assert.equal(l.event, "access");
      return l.fields;
    });
    const first = fields[0];
    assert.equal(first.service, "default");
    assert.match(first.client as string, /^127\.0\.0\.1:\d+$/);
    assert.equal(first.backend, `127.0.0.1:${echo.port}`);
    assert.deepEqual([first.bytes_in, first.bytes_out, first.ended], [5, 5, "client_closed"]);
    assert.equal(typeof first.connect_ms, "number");
    assert.equal(typeof first.duration_ms, "number");
    assert.deepEqual(fields.map((f: Record<string, unknown>) => f.ended).sort(), [
      "client_closed",
      "client_closed",
      "limit",
    ]);
    // Not in bal.log too, and written whatever log_level says.
    assert.ok(!d.log().some((l) => l.event === "access"));
    // SIGUSR1 reopens it, as logrotate expects.
    Deno.renameSync(`${home}/access.log`, `${home}/access.log.1`);
    Deno.kill(d.pid, "SIGUSR1");
    await waitFor("a line in a new access.log", async () => {
      const again = await Deno.connect({ hostname: "127.0.0.1", port });
      await again.closeWrite();
      await readAll(again);
      again.close();
      await new Promise((r) => setTimeout(r, 300));
      return Deno.readTextFileSync(`${home}/access.log`).includes('"event":"access"');
    }).catch(() => {});
    assert.ok(Deno.readTextFileSync(`${home}/access.log`).includes('"event":"access"'));
  } finally {
    await d.stop();
    await echo.close();
  }
});

/** A backend (python) on `port` that answers each client's first bytes with `reply`, then resets. */
function resettingBackend(port: number, reply: string): Deno.ChildProcess {
  const script = `
import socket, struct, sys, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(16)
print("ready", flush=True)
while True:
    c, _ = srv.accept()
    c.recv(64)
    c.sendall(sys.argv[2].encode())
    time.sleep(0.3)  # bal forwards the reply before the reset comes
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
`;
  return new Deno.Command("python3", {
    args: ["-c", script, String(port), reply],
    stdout: "piped",
    stderr: "null",
  }).spawn();
}

Deno.test('access log: a backend that resets mid-stream is ended "reset", with the bytes it sent', async () => {
  const backendPort = freePort();
  const backend = resettingBackend(backendPort, "partial answer");
  const reader = backend.stdout.getReader();
  await reader.read(); // "ready"
  reader.releaseLock();
  const d = await balWith(
    `access_log: true\naccess_log_path: access.log\nbackends: ["127.0.0.1:${backendPort}"]`,
  );
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: d.port });
    await writeAll(c, text("question"));
    assert.equal(new TextDecoder().decode(await readN(c, 14)), "partial answer");
    await readAll(c).catch(() => new Uint8Array()); // the reset, passed on as a close
    c.close();
    const line = await waitFor("the access line", () => {
      try {
        return JSON.parse(Deno.readTextFileSync(`${d.home}/access.log`).trim().split("\n")[0]);
      } catch {
        return false;
      }
    });
    assert.equal(line.fields.ended, "reset");
    assert.deepEqual([line.fields.bytes_in, line.fields.bytes_out], [8, 14]);
  } finally {
    await d.stop();
    backend.kill("SIGKILL");
    await backend.status;
    await backend.stdout.cancel().catch(() => {});
  }
});

Deno.test("status --watch: frames with rates; plain when piped, redrawn in place on a terminal", async () => {
  const a = nameBackend("A");
  const d = await balWith(`backends: ["127.0.0.1:${a.port}"]`);
  try {
    const piped = await bal(d.home, "status", "--watch", "--interval", "0.2", "--count", "2");
    assert.equal(piped.code, 0, piped.stderr);
    const frames = piped.stdout.trim().split("\n\n");
    assert.equal(frames.length, 2);
    assert.match(
      frames[1],
      /^SERVICE +BACKEND +STATE +ADMIN +W +ACTIVE +CONN\/S +SERVED +IN +OUT$/m,
    );
    assert.match(
      frames[1],
      new RegExp(`^default +127\\.0\\.0\\.1:${a.port} +up +enabled +1 +0 +0\\.0 +0 `, "m"),
    );
    assert.ok(!piped.stdout.includes("\x1b["), "no escape codes when piped");
    // On a terminal (script gives it one): cursor home and clear, one write per frame.
    const tty = await runCommand("script", [
      "-qec",
      `${Deno.execPath()} task -q bal status --watch --interval 0.2 --count 2`,
      "/dev/null",
    ], { cwd: ROOT, env: { BAL_HOME: d.home, NO_COLOR: "1" } });
    assert.equal(tty.code, 0, tty.stderr);
    assert.equal(tty.stdout.split("\x1b[H\x1b[J").length - 1, 2);
    const bad = await bal(d.home, "status", "--watch", "--interval", "0");
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /--interval takes seconds from 0\.1 to 3600/);
  } finally {
    await d.stop();
    await a.close();
  }
});

Deno.test("access log: with two data planes, every connection of both is logged once", async () => {
  const a = nameBackend("A");
  const home = tempHome();
  const port = freePort();
  const config = `${home}/access.yaml`;
  Deno.writeTextFileSync(
    config,
    `port: ${port}\nbind_address: 127.0.0.1\nworkers: 2\naccess_log: true\naccess_log_path: ${home}/access.log\nbackends: ["127.0.0.1:${a.port}"]\n`,
  );
  const d = await startDaemon(home, config, port);
  try {
    for (let i = 0; i < 30; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      await readAll(c);
      c.close();
    }
    await d.stop();
    const lines = Deno.readTextFileSync(`${home}/access.log`).trim().split("\n");
    assert.equal(lines.length, 30);
    const clients = new Set(lines.map((l) => JSON.parse(l).fields.client));
    assert.equal(clients.size, 30, "each connection once");
  } finally {
    await a.close();
  }
});
