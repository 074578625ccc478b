/**
 * SNI routing end to end: bal reads each client's ClientHello, picks the
 * route by its server name and passes every byte on unchanged, so the
 * backend completes the handshake. Real TLS: `openssl s_server` backends,
 * each with its own certificate, and `openssl s_client -servername` and
 * node's `tls.connect` as clients: the certificate a client receives
 * proves the route. Raw sockets for what a TLS library will not do: a
 * ClientHello split over segments, a PROXY header before it, bytes that
 * are not TLS, and a client that sends nothing.
 */
import assert from "node:assert/strict";
import {
  bal,
  echoBackend,
  freePort,
  missingTool,
  readAll,
  readN,
  serveTcp,
  sha256,
  startDaemon,
  str,
  tempHome,
  text,
  waitFor,
  waitListening,
  writeAll,
} from "../helpers.ts";

const noOpenssl = missingTool("openssl");
const fixtures = new URL("../fixtures/client_hello/", import.meta.url);
const captured = (name: string) =>
  Uint8Array.from(
    Deno.readTextFileSync(new URL(`${name}.hex`, fixtures)).trim().match(/../g)!,
    (h) => parseInt(h, 16),
  );

const RUNTIME = `runtime:
  health_check_interval_ms: 200
  health_check_timeout_ms: 150
  backend_connect_timeout_ms: 300
  shutdown_drain_timeout_ms: 5000
  tls_hello_timeout_ms: 400
`;

/** Writes a config of `body` (routes and such) listening on `port`; returns its path. */
function config(home: string, port: number, body: string): string {
  const path = `${home}/sni.yaml`;
  Deno.writeTextFileSync(
    path,
    `port: ${port}\nbind_address: 127.0.0.1\nlog_level: debug\naccess_log: true\n${body}${RUNTIME}`,
  );
  return path;
}

/** `openssl s_server` on a fresh port with a fresh self-signed certificate for `cn`. */
async function tlsServer(dir: string, cn: string) {
  const port = freePort();
  const out = await new Deno.Command("openssl", {
    args: [
      "req",
      ...["-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
      ...["-subj", `/CN=${cn}`, "-days", "1", "-keyout", `${dir}/${cn}.key`],
      ...["-out", `${dir}/${cn}.crt`],
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const child = new Deno.Command("openssl", {
    args: [
      "s_server",
      ...["-accept", `127.0.0.1:${port}`, "-cert", `${dir}/${cn}.crt`],
      ...["-key", `${dir}/${cn}.key`, "-www", "-quiet"],
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  await waitListening(`s_server ${cn}`, port);
  return {
    port,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

/** The CN of the certificate `openssl s_client` got from `port` asking for `name` (null: none). */
async function certVia(port: number, name: string | null): Promise<string> {
  const out = await new Deno.Command("openssl", {
    args: [
      "s_client",
      ...["-connect", `127.0.0.1:${port}`],
      ...(name === null ? ["-noservername"] : ["-servername", name]),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  return /^subject=.*CN ?= ?([^\s,/]+)/m.exec(new TextDecoder().decode(out.stdout))?.[1] ?? "";
}

/** The CN of the certificate node's TLS client got from `port` asking for `name`. */
async function certViaNode(port: number, name: string): Promise<string> {
  const tls = await import("node:tls");
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      servername: name,
      rejectUnauthorized: false,
    });
    socket.on("secureConnect", () => {
      const cn = socket.getPeerCertificate().subject?.CN;
      socket.destroy();
      resolve(typeof cn === "string" ? cn : String(cn));
    });
    socket.on("error", reject);
  });
}

Deno.test({
  name: "sni routing: openssl and node clients get the certificate of the route their name picks",
  ignore: noOpenssl,
  fn: async () => {
    const home = tempHome();
    const [app, api, fallback] = [
      await tlsServer(home, "app.test"),
      await tlsServer(home, "api.test"),
      await tlsServer(home, "default.test"),
    ];
    const port = freePort();
    const path = config(
      home,
      port,
      `routes:
  - name: app
    sni: [app.test, "*.app.test"]
    backends: ["127.0.0.1:${app.port}"]
  - sni: [API.Test]
    method: least_connections
    backends: ["127.0.0.1:${api.port}"]
  - name: fallback
    backends: ["127.0.0.1:${fallback.port}"]
default_route: fallback
`,
    );
    const d = await startDaemon(home, path, port);
    try {
      assert.equal(await certVia(port, "app.test"), "app.test");
      assert.equal(await certVia(port, "v2.app.test"), "app.test", "wildcard");
      assert.equal(await certVia(port, "api.test"), "api.test", "named in capitals in the config");
      assert.equal(await certVia(port, "other.test"), "default.test", "no route: the default");
      assert.equal(await certVia(port, null), "default.test", "no SNI: the default");
      assert.equal(await certViaNode(port, "APP.test"), "app.test", "names compare in any case");
      assert.equal(await certViaNode(port, "x.y.app.test"), "app.test");
      assert.equal(await certViaNode(port, "api.test"), "api.test");
      const status = JSON.parse((await bal(home, "status", "--json", "-c", path)).stdout);
      assert.deepEqual(
        status.backends.map((b: { route: string; connections_served: number }) => [
          b.route,
          b.connections_served,
        ]),
        [["app", 4], ["api.test", 2], ["fallback", 2]],
      );
      // Access lines are written in batches, after the connection has ended on bal's side too.
      await waitFor(
        "8 access lines",
        () => d.log().filter((l) => l.event === "access").length === 8,
      );
    } finally {
      await d.stop();
      for (const s of [app, api, fallback]) await s.stop();
    }
  },
});

/** Reads all a connection brings until the peer closes, then answers `name` and the bytes' hash. */
const recorder = (name: string) =>
  serveTcp(async (conn) => {
    const got = await readAll(conn);
    await writeAll(conn, text(`${name} ${got.length} ${sha256(got)}`));
  });

Deno.test("sni routing: a ClientHello split over segments reaches its route unchanged; other bytes go to default_route", async () => {
  const app = recorder("app");
  const other = recorder("other");
  // The default speaks first, as SSH or SMTP servers do, then echoes.
  const greeter = serveTcp(async (conn) => {
    await writeAll(conn, text("greeting\n"));
    await writeAll(conn, await readAll(conn));
  });
  const home = tempHome();
  const port = freePort();
  const path = config(
    home,
    port,
    `routes:
  - name: app
    sni: ["*.example.com"]
    backends: ["127.0.0.1:${app.port}"]
  - name: other
    sni: [api.example.org]
    backends: ["127.0.0.1:${other.port}"]
  - name: plain
    backends: ["127.0.0.1:${greeter.port}"]
default_route: plain
`,
  );
  const d = await startDaemon(home, path, port);
  try {
    // Three segments 100 ms apart, then the client's own data after the ClientHello.
    const hello = captured("tls13_sni");
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const sent = new Uint8Array([...hello, ...text("after the hello")]);
    for (const [from, to] of [[0, 3], [3, 120], [120, sent.length]]) {
      await writeAll(conn, sent.subarray(from, to));
      await new Promise((r) => setTimeout(r, 100));
    }
    await conn.closeWrite();
    assert.equal(str(await readAll(conn)), `app ${sent.length} ${sha256(sent)}`);
    conn.close();

    // Not TLS: the default route, bytes and half-close intact.
    const ssh = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(ssh, text("SSH-2.0-client\r\n"));
    await ssh.closeWrite();
    assert.equal(str(await readAll(ssh)), "greeting\nSSH-2.0-client\r\n");
    ssh.close();

    // Silent: after tls_hello_timeout_ms (400) the default route, which speaks first.
    const silent = await Deno.connect({ hostname: "127.0.0.1", port });
    const greeting = new Uint8Array(9);
    const begun = Date.now();
    assert.equal(await silent.read(greeting), 9);
    assert.equal(str(greeting), "greeting\n");
    assert.ok(Date.now() - begun >= 350, "waited for the ClientHello first");
    await writeAll(silent, text("late"));
    await silent.closeWrite();
    assert.equal(str(await readAll(silent)), "late");
    silent.close();
    assert.ok(d.log().some((l) => l.event === "no_sni"), "said at debug why there was no name");
  } finally {
    await d.stop();
    for (const b of [app, other, greeter]) await b.close();
  }
});

Deno.test("sni routing: without default_route an unrouted client is closed, counted and logged; with accept_proxy and send_proxy the header goes on and the ClientHello follows unchanged", async () => {
  const app = recorder("app");
  const home = tempHome();
  const port = freePort();
  const path = config(
    home,
    port,
    `accept_proxy: true
proxy_trusted: [127.0.0.1]
send_proxy: v1
routes:
  - sni: [app.example.com]
    backends: ["127.0.0.1:${app.port}"]
`,
  );
  const d = await startDaemon(home, path, port);
  try {
    const header = "PROXY TCP4 192.0.2.9 198.51.100.1 40000 443\r\n";
    const hello = captured("tls12_sni");
    // tls12_sni asks for api.example.com: no route, no default.
    const refused = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(refused, new Uint8Array([...text(header), ...hello]));
    assert.equal((await readAll(refused)).length, 0, "closed without a byte");
    refused.close();

    const routed = await Deno.connect({ hostname: "127.0.0.1", port });
    const ok = captured("tls13_sni");
    await writeAll(routed, text(header));
    await new Promise((r) => setTimeout(r, 50));
    await writeAll(routed, ok);
    await routed.closeWrite();
    const expected = new Uint8Array([...text(header), ...ok]);
    assert.equal(str(await readAll(routed)), `app ${expected.length} ${sha256(expected)}`);
    routed.close();

    // A header, then silence: the ClientHello's deadline (400 ms) applies from the header on,
    // not the header's own (proxy_header_timeout_ms, 3000 by default).
    const silent = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(silent, text(header));
    const began = performance.now();
    assert.equal((await readAll(silent)).length, 0, "closed without a byte");
    const waited = performance.now() - began;
    assert.ok(waited > 300 && waited < 2500, `closed after ${Math.round(waited)} ms`);
    silent.close();

    const status = JSON.parse((await bal(home, "status", "--json", "-c", path)).stdout);
    assert.equal(status.refused_by_cause.route, 2);
    const said = d.log().find((l) => l.event === "no_route");
    assert.ok(said, "the refusal is logged");
    assert.match(String(said.message), /192\.0\.2\.9/);
    const accessLines = () => d.log().filter((l) => l.event === "access");
    // The line of a refused client follows its close.
    await waitFor("three access lines", () => accessLines().length === 3);
    const access = accessLines().map((l) => l.fields) as { ended: string; client: string }[];
    assert.deepEqual(access.map((a) => a.ended).sort(), ["client_closed", "no_route", "no_route"]);
    assert.ok(access.every((a) => a.client.startsWith("192.0.2.9:")), JSON.stringify(access));
  } finally {
    await d.stop();
    await app.close();
  }
});

Deno.test("sni routing: a reload that moves a name to another route applies to new clients; a live one keeps its backend", async () => {
  const first = echoBackend();
  const second = recorder("second");
  const home = tempHome();
  const port = freePort();
  const write = (to: number) =>
    config(
      home,
      port,
      `routes:
  - name: app
    sni: [app.example.com]
    backends: ["127.0.0.1:${to}"]
`,
    );
  const path = write(first.port);
  const d = await startDaemon(home, path, port);
  try {
    const hello = captured("tls13_sni");
    const live = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(live, hello);
    assert.deepEqual(await readN(live, hello.length), hello, "echoed by the first backend");
    write(second.port);
    assert.equal((await bal(home, "graceful", "-c", path)).code, 0);
    await waitFor("reload", () => d.log().some((l) => l.event === "reload_ok"));
    const fresh = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(fresh, hello);
    await fresh.closeWrite();
    assert.equal(str(await readAll(fresh)), `second ${hello.length} ${sha256(hello)}`);
    fresh.close();
    // The live connection still moves bytes both ways through the first backend.
    await writeAll(live, text("still here"));
    assert.equal(str(await readN(live, 10)), "still here");
    live.close();
  } finally {
    await d.stop();
    await first.close();
    await second.close();
  }
});
