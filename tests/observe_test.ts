/**
 * Seeing bal work: the dashboard in a real headless Chromium, access logs,
 * and `bal status --watch`.
 */
import assert from "node:assert/strict";
import {
  bal,
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
} from "./helpers.ts";

/** Starts bal on a config written from `yaml` (after port and bind_address). */
async function balWith(yaml: string) {
  const home = tempHome();
  const port = freePort();
  const config = `${home}/observe.yaml`;
  Deno.writeTextFileSync(config, `port: ${port}\nbind_address: 127.0.0.1\n${yaml}\n`);
  return { ...(await startDaemon(home, config, port)), config };
}

/** The page's DOM after its scripts ran, as headless Chromium renders it. */
async function dom(url: string): Promise<string> {
  const r = await runCommand("chromium", [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--virtual-time-budget=3000",
    "--dump-dom",
    url,
  ]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
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
    } finally {
      await d.stop();
      await a.close();
    }
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
