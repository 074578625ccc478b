/**
 * The admin endpoint end to end: /metrics checked by the real promtool and
 * scraped by a real Prometheus server, /status.json, the token, reloads.
 */
import assert from "node:assert/strict";
import {
  bal,
  echoBackend,
  freePort,
  missingTool,
  nameBackend,
  readN,
  runCommand,
  sha256,
  startDaemon,
  tempHome,
  text,
  waitFor,
  writeAll,
} from "../helpers.ts";

/** A config with an admin endpoint, started. */
async function balWithAdmin(backends: number[], admin: string, extra = "") {
  const home = tempHome();
  const port = freePort();
  const config = `${home}/admin.yaml`;
  Deno.writeTextFileSync(
    config,
    `port: ${port}\nbind_address: 127.0.0.1\nadmin: ${admin}\n${extra}backends: [${
      backends.map((p) => `"127.0.0.1:${p}"`).join(", ")
    }]\n`,
  );
  return { ...(await startDaemon(home, config, port)), config };
}

const metric = (body: string, line: RegExp) => Number(line.exec(body)?.[1] ?? NaN);

Deno.test({
  name:
    "admin: /metrics passes promtool, counts clients and bytes as they move; /status.json is status --json",
  ignore: missingTool("promtool"),
  fn: async () => {
    const echo = echoBackend();
    const adminPort = freePort();
    const d = await balWithAdmin([echo.port], `{listen: "127.0.0.1:${adminPort}"}`);
    const url = `http://127.0.0.1:${adminPort}`;
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: d.port });
    try {
      // A stream still open: its bytes are counted already.
      const payload = crypto.getRandomValues(new Uint8Array(60_000));
      await writeAll(conn, payload);
      assert.equal(sha256(await readN(conn, payload.length)), sha256(payload));
      const body = await (await fetch(`${url}/metrics`)).text();
      const check = new Deno.Command("promtool", {
        args: ["check", "metrics"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const w = check.stdin.getWriter();
      await w.write(text(body));
      await w.close();
      const out = await check.output();
      assert.equal(
        out.code,
        0,
        new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr),
      );
      const b = `service="default",backend="127\\.0\\.0\\.1:${echo.port}"`;
      assert.equal(
        metric(body, new RegExp(`^bal_backend_received_bytes_total\\{${b}\\} (\\d+)$`, "m")),
        60_000,
      );
      assert.equal(
        metric(body, new RegExp(`^bal_backend_sent_bytes_total\\{${b}\\} (\\d+)$`, "m")),
        60_000,
      );
      assert.equal(metric(body, /^bal_connections_accepted_total\{service="default"\} (\d+)$/m), 1);
      assert.equal(metric(body, /^bal_connections_active\{service="default"\} (\d+)$/m), 1);
      assert.equal(
        metric(
          body,
          new RegExp(`^bal_backend_connect_duration_seconds_count\\{${b}\\} (\\d+)$`, "m"),
        ),
        1,
      );
      assert.equal(metric(body, new RegExp(`^bal_backend_up\\{${b}\\} (\\d+)$`, "m")), 1);
      const status = await (await fetch(`${url}/status.json`)).json();
      // The engine in force: uring here unless BAL_ENGINE asks for another (the CI matrix).
      const asked = Deno.env.get("BAL_ENGINE") || "uring";
      assert.equal(status.engine, asked === "native" ? "epoll" : asked);
      assert.match(
        body,
        new RegExp(
          `^bal_build_info\\{version="[^"]+",engine="${status.engine}",engine_fallback=""\\} 1$`,
          "m",
        ),
      );
      const cli = JSON.parse((await bal(d.home, "status", "--json")).stdout);
      assert.deepEqual(Object.keys(status).sort(), Object.keys(cli).sort());
      assert.equal(status.port, d.port);
      assert.equal((await fetch(`${url}/nope`)).status, 404);
    } finally {
      conn.close();
      await d.stop();
      await echo.close();
    }
  },
});

Deno.test("admin: nothing listens unless configured; a token, when set, is required", async () => {
  const a = nameBackend("A");
  const adminPort = freePort();
  const token = "0123456789abcdef-secret";
  const d = await balWithAdmin([a.port], `{listen: "127.0.0.1:${adminPort}", token: "${token}"}`);
  try {
    const url = `http://127.0.0.1:${adminPort}/metrics`;
    const denied = await fetch(url);
    assert.equal(denied.status, 401);
    assert.equal(denied.headers.get("www-authenticate"), 'Bearer realm="bal"');
    await denied.body?.cancel();
    const wrong = await fetch(url, { headers: { authorization: "Bearer nope" } });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    // RFC 7235: the scheme is case-insensitive (issue 24, item 6: lowercase got 401).
    for (const scheme of ["Bearer", "bearer", "BEARER"]) {
      const ok = await fetch(url, { headers: { authorization: `${scheme} ${token}` } });
      assert.equal(ok.status, 200, scheme);
      await ok.body?.cancel();
    }
    const basic = await fetch(url, { headers: { authorization: `Basic ${token}` } });
    assert.equal(basic.status, 401);
    await basic.body?.cancel();
  } finally {
    await d.stop();
  }
  // Without an admin block, bal listens on its service port and nothing else.
  const plain = await balWithAdmin([a.port], "{}");
  try {
    const listening = await runCommand("ss", ["-Hltnp"]);
    const mine = listening.stdout.split("\n").filter((l) => l.includes(`pid=${plain.pid},`));
    assert.deepEqual(mine.map((l) => l.trim().split(/\s+/)[3]), [`127.0.0.1:${plain.port}`]);
  } finally {
    await plain.stop();
  }
  const home = tempHome();
  const exposed = `${home}/exposed.yaml`;
  Deno.writeTextFileSync(
    exposed,
    `admin: {listen: "0.0.0.0:${freePort()}"}\nbackends: ["127.0.0.1:9"]\n`,
  );
  const r = await bal(home, "check", "-c", exposed);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /:1:17: admin\.listen: 0\.0\.0\.0 is reachable from other machines, so admin\.token or admin\.tokens is required/,
  );
  Deno.writeTextFileSync(
    exposed,
    `admin: {listen: "0.0.0.0:${freePort()}", token: "${token}"}\nbind_address: 127.0.0.1\nbackends: ["127.0.0.1:9"]\n`,
  );
  const w = await bal(home, "check", "-c", exposed);
  assert.equal(w.code, 0, w.stderr);
  assert.match(
    w.stdout,
    /warning: admin\.listen: 0\.0\.0\.0 serves metrics and status to other machines/,
  );
});

Deno.test("admin: a reload moves the endpoint; a taken admin port fails the reload and changes nothing", async () => {
  const a = nameBackend("A");
  const [first, second, taken] = [freePort(), freePort(), freePort()];
  const d = await balWithAdmin([a.port], `{listen: "127.0.0.1:${first}"}`);
  const squatter = Deno.listen({ hostname: "127.0.0.1", port: taken });
  try {
    const up = async (port: number) => {
      const r = await fetch(`http://127.0.0.1:${port}/metrics`).catch(() => null);
      await r?.body?.cancel();
      return r?.status === 200;
    };
    assert.ok(await up(first));
    Deno.writeTextFileSync(
      d.config,
      Deno.readTextFileSync(d.config).replace(`:${first}"`, `:${taken}"`),
    );
    const failed = await bal(d.home, "graceful");
    assert.equal(failed.code, 1);
    assert.match(
      failed.stderr,
      new RegExp(
        `cannot listen on 127\\.0\\.0\\.1:${taken} \\(admin\\.listen\\): address already in use`,
      ),
    );
    assert.ok(await up(first), "the old endpoint stays");
    Deno.writeTextFileSync(
      d.config,
      Deno.readTextFileSync(d.config).replace(`:${taken}"`, `:${second}"`),
    );
    assert.equal((await bal(d.home, "graceful")).code, 0);
    assert.ok(await up(second));
    assert.equal(await up(first), false, "the old endpoint is closed");
    const body = await (await fetch(`http://127.0.0.1:${second}/metrics`)).text();
    assert.match(body, /^bal_reloads_total\{outcome="ok"\} 1$/m);
    assert.match(body, /^bal_reloads_total\{outcome="failed"\} 1$/m);
    assert.match(body, /^bal_config_generation 2$/m);
  } finally {
    squatter.close();
    await d.stop();
    await a.close();
  }
});

Deno.test({
  name:
    "admin: a real Prometheus server scrapes bal, and its API returns a counter that traffic moved",
  ignore: missingTool("prometheus"),
  fn: async () => {
    const a = nameBackend("A");
    const adminPort = freePort();
    const d = await balWithAdmin([a.port], `{listen: "127.0.0.1:${adminPort}"}`);
    const dir = tempHome();
    const promPort = freePort();
    Deno.writeTextFileSync(
      `${dir}/prometheus.yml`,
      `global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: bal\n    static_configs: [{targets: ["127.0.0.1:${adminPort}"]}]\n`,
    );
    const prom = new Deno.Command("prometheus", {
      args: [
        `--config.file=${dir}/prometheus.yml`,
        `--storage.tsdb.path=${dir}/data`,
        `--web.listen-address=127.0.0.1:${promPort}`,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      for (let i = 0; i < 5; i++) {
        const c = await Deno.connect({ hostname: "127.0.0.1", port: d.port });
        await readN(c, 1);
        c.close();
      }
      const query = `http://127.0.0.1:${promPort}/api/v1/query?query=${
        encodeURIComponent('bal_connections_accepted_total{service="default"}')
      }`;
      const value = await waitFor("Prometheus to have scraped the 5 clients", async () => {
        const r = await fetch(query).then((x) => x.json()).catch(() => null);
        const v = Number(r?.data?.result?.[0]?.value?.[1]);
        return v === 5 ? v : undefined;
      }, 30_000);
      assert.equal(value, 5);
    } finally {
      prom.kill("SIGTERM");
      await prom.status;
      await d.stop();
      await a.close();
    }
  },
});
