/**
 * Health checks against real servers: redis-server for send/expect, an
 * HTTP backend that starts failing, HTTPS for `http` over TLS and `tls`,
 * an agent that drains, and slow start measured through connections.
 */
import assert from "node:assert/strict";
import {
  askName,
  bal,
  freePort,
  missingTool,
  nameBackend,
  runCommand,
  startDaemon,
  tempHome,
  waitFor,
  waitListening,
} from "../helpers.ts";

/** Writes a config from YAML lines (fast checks by default) and starts bal on it. */
async function balWith(port: number, yaml: string, home = tempHome()) {
  const config = `${home}/checks.yaml`;
  Deno.writeTextFileSync(
    config,
    `port: ${port}\nbind_address: 127.0.0.1\nlog_level: debug\nruntime:\n  health_check_interval_ms: 100\n  health_check_timeout_ms: 400\n  health_check_fail_threshold: 1\n${yaml}\n`,
  );
  return await startDaemon(home, config, port);
}

// deno-lint-ignore no-explicit-any -- status JSON, read field by field
type Json = any;
const backendOf = async (home: string, i = 0): Promise<Json> =>
  JSON.parse((await bal(home, "status", "--json")).stdout).backends[i];

/** A redis-server of the test's own on a free loopback port, no persistence. */
async function redis() {
  const port = freePort();
  const dir = tempHome();
  const child = new Deno.Command("redis-server", {
    args: [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await waitListening("redis", port);
  return {
    port,
    async command(line: string): Promise<string> {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      await c.write(new TextEncoder().encode(`${line}\r\n`));
      const buf = new Uint8Array(256);
      const n = await c.read(buf);
      c.close();
      return new TextDecoder().decode(buf.subarray(0, n ?? 0));
    },
    async stop() {
      child.kill("SIGKILL");
      await child.status;
    },
  };
}

Deno.test({
  name:
    "checks: send/expect against redis-server: PING/+PONG up; requirepass makes it fail, with the reason",
  ignore: missingTool("redis-server"),
  fn: async () => {
    const r = await redis();
    const port = freePort();
    const d = await balWith(
      port,
      `health_check:\n  type: send_expect\n  steps: [{send: "PING\\r\\n"}, {expect: "+PONG"}]\nbackends: ["127.0.0.1:${r.port}"]`,
    );
    try {
      await waitFor(
        "a passing check",
        async () => (await backendOf(d.home)).last_check_result === "ok",
      );
      assert.equal((await backendOf(d.home)).check_type, "send_expect");
      assert.match(await r.command("CONFIG SET requirepass s3cret"), /\+OK/);
      const down = await waitFor(
        "backend_down",
        () => d.log().find((l) => l.event === "backend_down"),
      );
      const error = (down.fields as Record<string, string>).error;
      assert.match(error, /^expect "\+PONG": .*got "-NOAUTH Authentication required\.\\r\\n"$/);
      const b = await backendOf(d.home);
      assert.equal(b.reachable, false);
      assert.equal(b.last_error, error);
    } finally {
      await d.stop();
      await r.stop();
    }
  },
});

Deno.test("checks: http: 200 is up, 503 is down with the status, 200 again is up", async () => {
  let status = 200;
  const http = Deno.serve({ hostname: "127.0.0.1", port: freePort(), onListen() {} }, (req) => {
    const url = new URL(req.url);
    return new Response(
      url.pathname === "/health" ? `{"status":"${status === 200 ? "ok" : "busy"}"}` : "x",
      { status },
    );
  });
  const port = freePort();
  const d = await balWith(
    port,
    `health_check: {type: http, path: /health, expect_body: '"status":"ok"'}\nbackends: ["127.0.0.1:${http.addr.port}"]`,
  );
  try {
    await waitFor("up", async () => (await backendOf(d.home)).last_check_result === "ok");
    status = 503;
    await waitFor("down", async () => (await backendOf(d.home)).reachable === false);
    assert.equal((await backendOf(d.home)).last_error, "HTTP status 503, expected 200-399");
    status = 200;
    await waitFor("up again", async () => (await backendOf(d.home)).reachable === true);
  } finally {
    await d.stop();
    await http.shutdown();
  }
});

/** A CA and a certificate it signed for `backend.test`, written into `dir` by openssl. */
async function certificates(dir: string) {
  const run = async (...args: string[]) => {
    const r = await runCommand("openssl", args, { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
  };
  await run(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=bal test CA",
  );
  await run(
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "key.pem",
    "-out",
    "req.csr",
    "-subj",
    "/CN=backend.test",
  );
  Deno.writeTextFileSync(`${dir}/ext.cnf`, "subjectAltName=DNS:backend.test\n");
  await run(
    "x509",
    "-req",
    "-in",
    "req.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "cert.pem",
    "-days",
    "2",
    "-extfile",
    "ext.cnf",
  );
  return {
    ca: `${dir}/ca.pem`,
    cert: Deno.readTextFileSync(`${dir}/cert.pem`),
    key: Deno.readTextFileSync(`${dir}/key.pem`),
  };
}

Deno.test({
  name:
    "checks: https for http with tls and for tls: unverified by default, verified against a CA, expiry reported",
  ignore: missingTool("openssl"),
  fn: async () => {
    const home = tempHome();
    const pki = await certificates(home);
    const serve = () =>
      Deno.serve(
        { hostname: "127.0.0.1", port: freePort(), cert: pki.cert, key: pki.key, onListen() {} },
        () => new Response("ok"),
      );
    const https = serve();
    const https2 = serve();
    const port = freePort();
    const d = await balWith(
      port,
      `backends:
  - {host: 127.0.0.1, port: ${https.addr.port}, health_check: {type: http, tls: true, tls_server_name: backend.test}}
  - {host: 127.0.0.1, port: ${https2.addr.port}, health_check: {type: tls, tls_verify: true, tls_ca_file: "${pki.ca}", tls_server_name: backend.test, expiry_warning_days: 7}}`,
      home,
    );
    try {
      await waitFor("both checks to pass", async () => {
        const s = JSON.parse((await bal(d.home, "status", "--json")).stdout);
        return s.backends.every((b: Json) => b.last_check_result === "ok");
      });
      const tls = await backendOf(d.home, 1);
      assert.equal(tls.check_type, "tls");
      const days = (Date.parse(tls.cert_expires_at) - Date.now()) / 86_400_000;
      assert.ok(days > 1 && days <= 2, `expires in ${days} days`);
      // Within the warning days: said once.
      await waitFor(
        "certificate_expiring",
        () => d.log().some((l) => l.event === "certificate_expiring"),
      );
      assert.equal(d.log().filter((l) => l.event === "certificate_expiring").length, 1);
    } finally {
      await d.stop();
    }
    // Verification on without the CA: not trusted.
    const port2 = freePort();
    const d2 = await balWith(
      port2,
      `health_check: {type: tls, tls_verify: true, tls_server_name: backend.test}\nbackends: ["127.0.0.1:${https.addr.port}"]`,
    );
    try {
      await waitFor("down", async () => (await backendOf(d2.home)).reachable === false);
      assert.match((await backendOf(d2.home)).last_error, /^TLS certificate not trusted: /);
    } finally {
      await d2.stop();
      await https.shutdown();
      await https2.shutdown();
    }
  },
});

Deno.test("checks: an agent that says drain takes its backend out of rotation, and up puts it back", async () => {
  const a = nameBackend("A");
  const b = nameBackend("B");
  let answer = "up\n";
  const agent = Deno.listen({ hostname: "127.0.0.1", port: freePort() });
  const serving = (async () => {
    for await (const conn of agent) {
      await conn.write(new TextEncoder().encode(answer)).catch(() => {});
      conn.close();
    }
  })();
  const port = freePort();
  const d = await balWith(
    port,
    `backends:
  - {host: 127.0.0.1, port: ${a.port}, health_check: {type: agent, agent_port: ${
      (agent.addr as Deno.NetAddr).port
    }}}
  - 127.0.0.1:${b.port}`,
  );
  try {
    await waitFor("both answer", async () => (await askName(port)) === "A");
    answer = "drain\n";
    await waitFor(
      "the agent's drain",
      async () => (await backendOf(d.home)).agent?.mode === "drain",
    );
    const drained = new Set<string>();
    for (let i = 0; i < 6; i++) drained.add(await askName(port));
    assert.deepEqual([...drained], ["B"]);
    assert.equal((await backendOf(d.home)).reachable, true, "draining is not down");
    answer = "up 50%\n";
    await waitFor("back in rotation", async () => (await askName(port)) === "A");
    assert.deepEqual((await backendOf(d.home)).agent, { mode: "ready", weight_percent: 50 });
    answer = "down\n";
    await waitFor("down", async () => (await backendOf(d.home)).reachable === false);
    assert.equal((await backendOf(d.home)).last_error, "the agent says down");
  } finally {
    await d.stop();
    agent.close();
    await serving.catch(() => {});
    await a.close();
    await b.close();
  }
});

Deno.test("checks: slow start: a backend back up gets a share that grows from 10 % to its full weight", async () => {
  let a = nameBackend("A");
  const aPort = a.port;
  const b = nameBackend("B");
  const port = freePort();
  const home = tempHome();
  const config = `${home}/slow.yaml`;
  Deno.writeTextFileSync(
    config,
    `port: ${port}\nbind_address: 127.0.0.1\nruntime:\n  health_check_interval_ms: 100\n  health_check_timeout_ms: 300\n  health_check_fail_threshold: 1\n  slow_start_ms: 3000\nbackends: ["127.0.0.1:${aPort}", "127.0.0.1:${b.port}"]\n`,
  );
  const slow = await startDaemon(home, config, port);
  try {
    await a.close();
    await waitFor("A down", async () => (await backendOf(home)).reachable === false);
    a = nameBackend("A", aPort);
    await waitFor("A up", async () => (await backendOf(home)).reachable === true);
    const share = async (n: number) => {
      let got = 0;
      for (let i = 0; i < n; i++) if ((await askName(port)) === "A") got++;
      return got / n;
    };
    const early = await share(40);
    assert.ok((await backendOf(home)).slow_start_remaining_ms > 0);
    await waitFor(
      "the ramp to end",
      async () => (await backendOf(home)).slow_start_remaining_ms === null,
    );
    const late = await share(40);
    assert.ok(early < 0.3, `early share ${early}`);
    assert.ok(late > 0.4 && late < 0.6, `late share ${late}`);
  } finally {
    await slow.stop();
    await a.close();
    await b.close();
  }
});
