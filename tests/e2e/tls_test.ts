/**
 * TLS at the balancer end to end (issue 29), on whichever engine the suite
 * runs (beside a native engine, TLS services run on OpenSSL in an epoll
 * engine, or on Deno's sockets where they need ALPN or `backend_tls`):
 * `openssl s_client`, `curl` and `openssl s_server` as the real peers,
 * certificates made by a test CA (tls_pki.ts).
 */
import assert from "node:assert/strict";
import {
  alive,
  bal,
  dom,
  echoBackend,
  freePort,
  missingTool,
  nameBackend,
  readAll,
  runCommand,
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
import { issue, type Issued, makeCa } from "./tls_pki.ts";

/** The engine a service that terminates TLS without ALPN runs on: OpenSSL's beside a native one. */
const OPENSSL_ENGINE = Deno.env.get("BAL_ENGINE") === "deno" ? "deno" : "epoll";

/** Writes `yaml` (services listening on 127.0.0.1) and starts bal on it. */
async function balWith(home: string, yaml: string, port: number) {
  const config = `${home}/tls.yaml`;
  Deno.writeTextFileSync(config, yaml);
  return { ...(await startDaemon(home, config, port)), config };
}

/** bal with one service on `port` that terminates TLS for a.test in front of `backend`. */
function terminating(home: string, port: number, backend: number, extra = "") {
  return balWith(
    home,
    `bind_address: 127.0.0.1
port: ${port}
tls: {certificates: [{cert_file: a.test.crt, key_file: a.test.key}]}
backends: ["127.0.0.1:${backend}"]
${extra}`,
    port,
  );
}

// deno-lint-ignore no-explicit-any -- status JSON, read by key as a user's script would
async function status(home: string): Promise<any> {
  const r = await bal(home, "status", "--json");
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

/**
 * `openssl s_client` to `port` with `args`, sending `send` and reading until
 * as many bytes came back (an echo), then ended; what it got.
 */
async function sClientEcho(port: number, args: string[], send: Uint8Array): Promise<Uint8Array> {
  const child = new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, "-quiet", ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  const writing = writer.write(send).then(() => writer.close()).catch(() => {});
  const got = new Uint8Array(send.length);
  let n = 0;
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  for await (const chunk of child.stdout) {
    got.set(chunk.subarray(0, Math.min(chunk.length, got.length - n)), n);
    n += chunk.length;
    if (n >= send.length) break;
  }
  clearTimeout(timer);
  try {
    child.kill("SIGKILL");
  } catch {
    // It ended by itself.
  }
  await writing;
  const { code } = await child.status;
  const err = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
  assert.equal(
    n,
    send.length,
    `s_client ${args.join(" ")} got ${n} of ${send.length} bytes (exit ${code}): ${err}`,
  );
  return got;
}

/** The subject of the certificate `port` shows a client with `args`, or the error when none. */
async function subjectSeen(port: number, args: string[]): Promise<string> {
  const r = await runCommand("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, ...args]);
  return /^subject=(.*)$/m.exec(r.stdout)?.[1].replaceAll(" ", "") ?? `none: ${r.stderr}`;
}

/** A test's CA and the certificates of a.test and b.test. */
async function pki(home: string): Promise<{ ca: Issued; a: Issued; b: Issued }> {
  const ca = await makeCa(home, "ca");
  return {
    ca,
    a: await issue(home, ca, "a.test", { names: ["a.test"] }),
    b: await issue(home, ca, "b.test", { names: ["b.test", "*.b.test"] }),
  };
}

Deno.test("tls: terminates TLS 1.2 and 1.3 with the certificate the client's server name picks", async () => {
  const home = tempHome();
  const { a, b } = await pki(home);
  const echo = echoBackend();
  const [port, modern] = [freePort(), freePort()];
  const admin = freePort();
  const d = await balWith(
    home,
    `admin: {listen: "127.0.0.1:${admin}"}
services:
  - name: secure
    bind_address: 127.0.0.1
    port: ${port}
    tls:
      certificates:
        - {cert_file: a.test.crt, key_file: a.test.key}
        - {cert_file: ${b.cert}, key_file: ${b.key}}
    backends: ["127.0.0.1:${echo.port}"]
  - name: modern
    bind_address: 127.0.0.1
    port: ${modern}
    tls: {certificates: [{cert_file: a.test.crt, key_file: a.test.key}], min_version: "1.3"}
    backends: ["127.0.0.1:${echo.port}"]
`,
    port,
  );
  try {
    const data = crypto.getRandomValues(new Uint8Array(65536));
    const payload = new Uint8Array(4 * 1024 * 1024).map((_, i) => data[i & 65535]);
    for (const version of ["-tls1_2", "-tls1_3"]) {
      const back = await sClientEcho(port, [version, "-servername", "b.test"], payload);
      assert.equal(sha256(back), sha256(payload), `${version}: the echo differs`);
    }
    assert.equal(await subjectSeen(port, ["-servername", "a.test"]), "CN=a.test");
    assert.equal(await subjectSeen(port, ["-servername", "b.test"]), "CN=b.test");
    assert.equal(await subjectSeen(port, ["-servername", "x.b.test"]), "CN=b.test");
    assert.equal(await subjectSeen(port, ["-noservername"]), "CN=a.test");
    assert.equal(await subjectSeen(port, ["-servername", "other.test"]), "CN=a.test");
    assert.match(
      await subjectSeen(modern, ["-tls1_2"]),
      /^none/,
      "min_version 1.3 refuses TLS 1.2",
    );
    assert.equal(await subjectSeen(modern, ["-tls1_3"]), "CN=a.test");
    const s = await status(home);
    const svc = s.services.find((x: { name: string }) => x.name === "secure");
    assert.equal(svc.engine, OPENSSL_ENGINE);
    assert.deepEqual(svc.tls.certificates.map((c: { names: string[] }) => c.names), [
      ["a.test"],
      ["b.test", "*.b.test"],
    ]);
    assert.match(svc.tls.certificates[0].not_after, /^\d{4}-\d\d-\d\dT/);
    const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
    const expiry = new RegExp(
      `bal_tls_certificate_not_after_seconds\\{service="secure",route="",cert_file="${a.cert}",names="a.test"\\} (\\d+)`,
    ).exec(metrics);
    assert.ok(expiry, metrics.split("\n").filter((l) => l.includes("tls")).join("\n"));
    assert.equal(Number(expiry[1]) * 1000, Date.parse(svc.tls.certificates[0].not_after));
    assert.match(
      metrics,
      /bal_connections_rejected_total\{service="secure",cause="tls_handshake"\} 0/,
    );
    if (!missingTool("chromium")) {
      const page = await dom(`http://127.0.0.1:${admin}/`);
      assert.match(page, /data-certificate="secure" data-names="b\.test,\*\.b\.test"/);
      assert.match(page, /a\.test · expires \d{4}-\d\d-\d\d \(in 2\d days\)/);
    }
  } finally {
    await d.stop();
    await echo.close();
  }
});

/** `openssl s_server -www` with `cert` (and `extra` arguments) on a free port, until `stop`. */
async function sServer(cert: Issued, extra: string[] = []) {
  const port = freePort();
  const server = new Deno.Command("openssl", {
    args: [
      "s_server",
      "-accept",
      String(port),
      "-cert",
      cert.cert,
      "-key",
      cert.key,
      "-www",
      ...extra,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  await waitListening("openssl s_server", port);
  return {
    port,
    async stop() {
      server.kill("SIGKILL");
      await server.status;
    },
  };
}

Deno.test("tls: HTTPS through termination and backend_tls to openssl s_server; a wrong CA fails, counted and said", async () => {
  const home = tempHome();
  const { ca } = await pki(home);
  const other = await makeCa(home, "other-ca");
  const origin = await issue(home, ca, "origin.test", { names: ["origin.test"] });
  await issue(home, ca, "bal-client", { file: "client" });
  const server = await sServer(origin);
  // This one asks every client for a certificate signed by the test CA.
  const strict = await sServer(origin, ["-Verify", "1", "-CAfile", ca.cert]);
  const [port, wrong, plain] = [freePort(), freePort(), freePort()];
  let d: Awaited<ReturnType<typeof balWith>> | null = null;
  try {
    d = await balWith(
      home,
      `services:
  - name: https
    bind_address: 127.0.0.1
    port: ${port}
    tls: {certificates: [{cert_file: a.test.crt, key_file: a.test.key}]}
    backend_tls: {server_name: origin.test, ca_file: ca.crt}
    backends: ["127.0.0.1:${server.port}"]
  - name: wrong
    bind_address: 127.0.0.1
    port: ${wrong}
    tls: {certificates: [{cert_file: a.test.crt, key_file: a.test.key}]}
    backend_tls: {server_name: origin.test, ca_file: ${other.cert}}
    backends: ["127.0.0.1:${server.port}"]
  - name: plain
    bind_address: 127.0.0.1
    port: ${plain}
    backends:
      - host: 127.0.0.1
        port: ${strict.port}
        backend_tls: {server_name: origin.test, ca_file: ca.crt, cert_file: client.crt, key_file: client.key}
`,
      port,
    );
    const curl = (url: string, p: number) =>
      runCommand("curl", [
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        ca.cert,
        "--resolve",
        `a.test:${p}:127.0.0.1`,
        url,
      ]);
    const ok = await curl(`https://a.test:${port}/`, port);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /s_server -www|Ciphers supported/);
    // Plain in, TLS out, with bal's client certificate.
    const fromPlain = await curl(`http://127.0.0.1:${plain}/`, plain);
    assert.equal(fromPlain.code, 0, fromPlain.stderr);
    assert.match(fromPlain.stdout, /s_server -www|Ciphers supported/);
    const bad = await curl(`https://a.test:${wrong}/`, wrong);
    assert.notEqual(
      bad.code,
      0,
      "a backend whose certificate the CA did not sign must not be reached",
    );
    await waitFor(
      `the failed TLS to be said (curl: ${bad.stderr})`,
      () =>
        d!.log().some((l) =>
          l.event === "backend_tls_failed" && (l.fields as { service: string }).service === "wrong"
        ),
    );
    const s = await status(home);
    const backend = s.services.find((x: { name: string }) => x.name === "wrong").backends[0];
    assert.ok(backend.counters.tls >= 1, JSON.stringify(backend.counters));
    assert.equal(s.services.find((x: { name: string }) => x.name === "plain").engine, "deno");
  } finally {
    await d?.stop();
    await server.stop();
    await strict.stop();
  }
});

/** The TLVs of the PROXY v2 header at the start of `bytes`, by type, and the header's length. */
function proxyTlvs(bytes: Uint8Array): { tlvs: Map<number, Uint8Array>; length: number } {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const length = 16 + view.getUint16(14);
  const addresses = (bytes[13] >> 4) === 1 ? 12 : 36;
  const tlvs = new Map<number, Uint8Array>();
  for (let at = 16 + addresses; at + 3 <= length;) {
    const size = view.getUint16(at + 1);
    tlvs.set(bytes[at], bytes.subarray(at + 3, at + 3 + size));
    at += 3 + size;
  }
  return { tlvs, length };
}

Deno.test("tls: client certificates are required and verified; the PROXY v2 header tells the backend what TLS said", async () => {
  await clientCertificates(true);
});

Deno.test("tls: the same on OpenSSL (no ALPN): client certificates verified, the PROXY v2 header's TLVs", async () => {
  await clientCertificates(false);
});

/**
 * mTLS through a service with or without `alpn` (with it, the service runs
 * on node:tls; without, on OpenSSL beside a native engine).
 */
async function clientCertificates(alpn: boolean): Promise<void> {
  const home = tempHome();
  const { ca } = await pki(home);
  const client = await issue(home, ca, "client-1", { file: "client" });
  const stranger = await makeCa(home, "stranger");
  const headers: Uint8Array[] = [];
  const recorder = recordingBackend(headers);
  const port = freePort();
  const d = await balWith(
    home,
    `services:
  - name: mtls
    bind_address: 127.0.0.1
    port: ${port}
    send_proxy: v2
    tls:
      certificates: [{cert_file: a.test.crt, key_file: a.test.key}]
      client_ca_file: ca.crt
${alpn ? "      alpn: [h2, http/1.1]\n" : ""}    backends: ["127.0.0.1:${recorder.port}"]
`,
    port,
  );
  const sClient = (args: string[]) =>
    runCommand("sh", [
      "-c",
      `printf 'ping\\n' | timeout 10 openssl s_client -connect 127.0.0.1:${port} -servername a.test -ign_eof ${
        args.join(" ")
      } 2>&1`,
    ]);
  try {
    const none = await sClient([]);
    assert.doesNotMatch(none.stdout, /hello from the backend/, "no client certificate: refused");
    const strange = await sClient(["-cert", stranger.cert, "-key", stranger.key]);
    assert.doesNotMatch(
      strange.stdout,
      /hello from the backend/,
      "a certificate of another CA: refused",
    );
    assert.equal(headers.length, 0, "no refused client reached the backend");
    const ok = await sClient(["-cert", client.cert, "-key", client.key, "-alpn", "http/1.1"]);
    assert.match(ok.stdout, /hello from the backend/, ok.stdout);
    await waitFor("the header to be recorded", () => headers.length === 1);
    const { tlvs } = proxyTlvs(headers[0]);
    assert.equal(str(tlvs.get(0x02)!), "a.test", "PP2_TYPE_AUTHORITY is the server name");
    assert.equal(tlvs.has(0x01) ? str(tlvs.get(0x01)!) : null, alpn ? "http/1.1" : null, "ALPN");
    const ssl = tlvs.get(0x20)!;
    assert.equal(ssl[0], 0x07, "PP2_CLIENT_SSL | CERT_CONN | CERT_SESS");
    assert.equal(new DataView(ssl.buffer, ssl.byteOffset).getUint32(1), 0, "verified");
    assert.match(str(ssl.subarray(5)), /TLSv1\.3[\s\S]*client-1/);
    const s = await status(home);
    const svc = s.services.find((x: { name: string }) => x.name === "mtls");
    assert.equal(svc.refused_by_cause.tls_handshake, 2);
    assert.equal(svc.tls.client_auth, "required");
    assert.equal(svc.engine, alpn ? "deno" : OPENSSL_ENGINE);
  } finally {
    await d.stop();
    await recorder.close();
  }
}

Deno.test("tls: a PROXY header and the ClientHello in one segment: the name picks the certificate, the header the client", async () => {
  const home = tempHome();
  const { b } = await pki(home);
  const headers: Uint8Array[] = [];
  const recorder = recordingBackend(headers);
  const port = freePort();
  const d = await balWith(
    home,
    `services:
  - name: proxied
    bind_address: 127.0.0.1
    port: ${port}
    accept_proxy: true
    proxy_trusted: [127.0.0.1]
    send_proxy: v1
    tls:
      certificates:
        - {cert_file: a.test.crt, key_file: a.test.key}
        - {cert_file: ${b.cert}, key_file: ${b.key}}
    backends: ["127.0.0.1:${recorder.port}"]
`,
    port,
  );
  // In front of bal, as a PROXY-speaking balancer: the header and the client's first bytes
  // (its ClientHello) go in one write, so bal reads part of the handshake with the header.
  const front = serveTcp(async (conn) => {
    const up = await Deno.connect({ hostname: "127.0.0.1", port });
    const buf = new Uint8Array(65536);
    const n = await conn.read(buf);
    if (n === null) return up.close();
    const header = text("PROXY TCP4 192.0.2.9 198.51.100.1 40000 443\r\n");
    await writeAll(up, new Uint8Array([...header, ...buf.subarray(0, n)]));
    await Promise.all([
      up.readable.pipeTo(conn.writable).catch(() => {}),
      conn.readable.pipeTo(up.writable).catch(() => {}),
    ]);
  });
  try {
    const r = await runCommand("sh", [
      "-c",
      `printf 'ping\\n' | timeout 10 openssl s_client -connect 127.0.0.1:${front.port} -servername x.b.test -ign_eof 2>&1`,
    ]);
    assert.match(r.stdout, /hello from the backend/, r.stdout);
    assert.match(r.stdout.replaceAll(" ", ""), /^subject=CN=b\.test$/m);
    assert.match(str(headers[0]), /^PROXY TCP4 192\.0\.2\.9 /);
    assert.equal((await status(home)).services[0].engine, OPENSSL_ENGINE);
  } finally {
    await d.stop();
    await front.close();
    await recorder.close();
  }
});

/** A backend that keeps the first bytes of each connection (its PROXY header) and greets it. */
function recordingBackend(headers: Uint8Array[]) {
  return serveTcp(async (conn) => {
    const buf = new Uint8Array(4096);
    const n = await conn.read(buf);
    if (n === null) return;
    headers.push(buf.slice(0, n));
    await writeAll(conn, text("hello from the backend\n"));
  });
}

/** A TLS client of `port` for a.test, trusting `ca`. */
async function tlsClient(port: number, ca: string): Promise<Deno.TlsConn> {
  const raw = await Deno.connect({ hostname: "127.0.0.1", port });
  return await Deno.startTls(raw, { hostname: "a.test", caCerts: [Deno.readTextFileSync(ca)] });
}

/** Sends `line` on `conn` and reads the echo back. */
async function echoes(conn: Deno.Conn, line: string): Promise<string> {
  await writeAll(conn, text(line));
  const buf = new Uint8Array(line.length);
  let n = 0;
  while (n < line.length) {
    const k = await conn.read(buf.subarray(n));
    if (k === null) break;
    n += k;
  }
  return str(buf.subarray(0, n));
}

/** The certificate (PEM) `port` shows for a.test. */
async function certShown(port: number): Promise<string> {
  const r = await runCommand("openssl", [
    "s_client",
    "-connect",
    `127.0.0.1:${port}`,
    "-servername",
    "a.test",
  ]);
  return /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.stdout)?.[0] ?? "";
}

/** bal serving one TLS service, `name`, with a.test's certificate, over an echo backend. */
async function echoTls(name: string) {
  const home = tempHome();
  const { ca } = await pki(home);
  const echo = echoBackend();
  const port = freePort();
  const d = await balWith(
    home,
    `services:
  - name: ${name}
    bind_address: 127.0.0.1
    port: ${port}
    tls: {certificates: [{cert_file: a.test.crt, key_file: a.test.key}]}
    backends: ["127.0.0.1:${echo.port}"]
`,
    port,
  );
  return {
    home,
    ca,
    port,
    d,
    async stop() {
      await d.stop();
      await echo.close();
    },
  };
}

Deno.test("tls: new certificate files are served after bal graceful; a live session keeps streaming", async () => {
  const { home, ca, port, d, stop } = await echoTls("rotating");
  try {
    const before = await certShown(port);
    assert.equal(before.trim(), Deno.readTextFileSync(`${home}/a.test.crt`).trim());
    const live = await tlsClient(port, ca.cert);
    assert.equal(await echoes(live, "before\n"), "before\n");
    await issue(home, ca, "a.test", { names: ["a.test"] });
    const renewed = Deno.readTextFileSync(`${home}/a.test.crt`).trim();
    assert.notEqual(renewed, before.trim());
    const r = await bal(home, "graceful", "-c", d.config);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.equal((await certShown(port)).trim(), renewed, "new handshakes get the new certificate");
    for (let i = 0; i < 20; i++) assert.equal(await echoes(live, `line ${i}\n`), `line ${i}\n`);
    live.close();
    // A broken file is a failed reload: the running certificate stays.
    Deno.writeTextFileSync(`${home}/a.test.crt`, "not a certificate\n");
    const bad = await bal(home, "graceful", "-c", d.config);
    assert.notEqual(bad.code, 0);
    assert.match(
      bad.stderr + bad.stdout,
      /tls\.yaml:\d+:\d+: services\[0\]\.tls\.certificates\[0\]\.cert_file: .*holds no PEM certificate/,
    );
    assert.equal((await certShown(port)).trim(), renewed, "the running certificate is kept");
  } finally {
    await stop();
  }
});

Deno.test("tls: garbage, a hello cut short, a silent client and 1,000 handshakes at once leave bal up and bounded", async () => {
  const home = tempHome();
  const { ca } = await pki(home);
  const echo = echoBackend();
  const port = freePort();
  const crowd = freePort();
  const d = await balWith(
    home,
    `services:
  - name: edge
    bind_address: 127.0.0.1
    port: ${port}
    tls:
      certificates: [{cert_file: a.test.crt, key_file: a.test.key}]
      handshake_timeout_ms: 400
    backends: ["127.0.0.1:${echo.port}"]
  - name: crowd
    bind_address: 127.0.0.1
    port: ${crowd}
    # A busy CI machine may take seconds for 1,000 handshakes: only a failure may fail one here.
    tls:
      certificates: [{cert_file: a.test.crt, key_file: a.test.key}]
      handshake_timeout_ms: 60000
    # ...and 1,000 connects at once overflow the test's echo backend's accept queue: the
    # kernel's SYN retry (1 s) must fit in the connect timeout.
    runtime: {backend_connect_timeout_ms: 10000}
    backends: ["127.0.0.1:${echo.port}"]
`,
    port,
  );
  /** Sends `bytes` (and half-closes with `end`), then waits for bal to close: ms it took. */
  const closedAfter = async (bytes: Uint8Array, end: boolean): Promise<number> => {
    const begun = Date.now();
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    if (bytes.length) await writeAll(c, bytes);
    if (end) await c.closeWrite();
    const buf = new Uint8Array(4096);
    try {
      while (await c.read(buf) !== null) { /* an alert, then the close */ }
    } catch {
      // A reset is a close too.
    }
    c.close();
    return Date.now() - begun;
  };
  try {
    await closedAfter(text("GET / HTTP/1.0\r\n\r\n"), false);
    // A handshake record announcing 512 bytes, of which 40 come.
    const cut = new Uint8Array(45);
    cut.set([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);
    await closedAfter(cut, true);
    const silent = await closedAfter(new Uint8Array(0), false);
    assert.ok(silent >= 350 && silent < 5000, `a silent client closed after ${silent} ms`);
    const s = await status(home);
    assert.equal(s.services[0].refused_by_cause.tls_handshake, 3);
    const rssBefore = rss(d.pid);
    const results = await Promise.allSettled(
      Array.from({ length: 1000 }, async (_, i) => {
        const c = await tlsClient(crowd, ca.cert);
        try {
          return await echoes(c, `client ${i}\n`) === `client ${i}\n`;
        } finally {
          c.close();
        }
      }),
    );
    const ok = results.filter((r) => r.status === "fulfilled" && r.value).length;
    const failed = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    const refused = ok < 1000
      ? JSON.stringify((await status(home)).services[1].refused_by_cause)
      : "";
    assert.equal(
      ok,
      1000,
      `${ok} of 1,000 TLS clients echoed: ${failed?.reason}; refused ${refused}`,
    );
    const grown = rss(d.pid) - rssBefore;
    assert.ok(grown < 256 * 1024 * 1024, `RSS grew by ${Math.round(grown / 1048576)} MiB`);
    const last = await tlsClient(port, ca.cert);
    assert.equal(await echoes(last, "still up\n"), "still up\n");
    last.close();
  } finally {
    await d.stop();
    await echo.close();
  }
});

Deno.test("tls: a peer that closes mid-handshake ends the session then, not at the handshake or connect timeout", async () => {
  const home = tempHome();
  await pki(home);
  // A "TLS" backend that takes the connection and closes it before a byte of handshake.
  const hangUp = serveTcp(async (c) => {
    await Promise.resolve();
    c.close();
  });
  const echo = echoBackend();
  const [port, out] = [freePort(), freePort()];
  const d = await balWith(
    home,
    `services:
  - name: edge
    bind_address: 127.0.0.1
    port: ${port}
    tls:
      certificates: [{cert_file: a.test.crt, key_file: a.test.key}]
      handshake_timeout_ms: 60000
    backends: ["127.0.0.1:${echo.port}"]
  - name: out
    bind_address: 127.0.0.1
    port: ${out}
    runtime: {backend_connect_timeout_ms: 60000}
    backend_tls: {verify: false}
    backends: ["127.0.0.1:${hangUp.port}"]
`,
    port,
  );
  try {
    // A hello cut short, then closed; and a client that closes without a byte.
    const cut = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(cut, new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
    cut.close();
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    await waitFor("both to be refused well before the 60 s handshake timeout", async () => {
      const edge = (await status(home)).services[0];
      return edge.refused_by_cause.tls_handshake === 2 && edge.active_connections === 0;
    });
    // The backend hung up mid-handshake: the client is closed now, not after 60 s.
    const c = await Deno.connect({ hostname: "127.0.0.1", port: out });
    const closed = c.read(new Uint8Array(16)).catch(() => null);
    const at = await Promise.race([
      closed,
      new Promise((r) => setTimeout(() => r("open"), 10_000)),
    ]);
    c.close();
    assert.equal(at, null, "the client was closed once the backend hung up");
    const backend = (await status(home)).services[1].backends[0];
    assert.ok(backend.counters.tls >= 1, JSON.stringify(backend.counters));
  } finally {
    await d.stop();
    await hangUp.close();
    await echo.close();
  }
});

Deno.test("tls: a client that resets right after its handshake leaves no session behind", async () => {
  const home = tempHome();
  await pki(home);
  const echo = echoBackend();
  const port = freePort();
  const d = await terminating(home, port, echo.port);
  try {
    // openssl s_time closes each connection after its handshake with the server's session
    // tickets unread, so the kernel resets it: the TLS socket closes without an error, and
    // the relay's half-close toward it must not wait for a callback that never comes.
    const r = await runCommand("openssl", [
      "s_time",
      "-connect",
      `127.0.0.1:${port}`,
      "-new",
      "-time",
      "1",
    ]);
    const made = Number(/(\d+) connections in/.exec(r.stdout)?.[1] ?? 0);
    assert.ok(made > 10, r.stdout + r.stderr);
    await waitFor("every session to have ended", async () => {
      const edge = (await status(home)).services[0];
      return edge.active_connections === 0 && edge.connections_accepted >= made;
    });
  } finally {
    await d.stop();
    await echo.close();
  }
});

Deno.test("tls: a client that stays gets its session tickets, and resumes its session with one", async () => {
  const home = tempHome();
  await pki(home);
  const echo = echoBackend();
  const port = freePort();
  const d = await terminating(home, port, echo.port);
  const session = `${home}/session.pem`;
  try {
    // The echo comes after the tickets: once it is back, s_client has saved one.
    await sClientEcho(port, ["-sess_out", session], text("hello\n"));
    assert.ok(Deno.statSync(session).size > 0, "a session ticket was saved");
    const again = await runStdin(
      "openssl",
      ["s_client", "-connect", `127.0.0.1:${port}`, "-sess_in", session],
      "",
    );
    assert.match(str(again.stdout), /^Reused, TLSv1\.3/m, str(again.stdout).slice(0, 400));
  } finally {
    await d.stop();
    await echo.close();
  }
});

Deno.test("tls: a client that ends right after its handshake gets no backend connection; one that sent bytes first does", async () => {
  const home = tempHome();
  await pki(home);
  const got: string[] = [];
  const recorder = serveTcp(async (c) => void got.push(str(await readAll(c))));
  const port = freePort();
  const d = await terminating(home, port, recorder.port, "health_check: {type: none}\n");
  const quit = async (input: string) => {
    const hop = heldFlight(port);
    const r = await runStdin(
      "openssl",
      ["s_client", "-connect", `127.0.0.1:${hop.port}`, "-quiet", "-no_ign_eof"],
      input,
    );
    await hop.done;
    return r;
  };
  try {
    // Its last flight and its close_notify reach bal together: nothing would pass on a backend.
    await quit("");
    await waitFor("the session to end", async () => {
      const edge = (await status(home)).services[0];
      return edge.connections_accepted === 1 && edge.active_connections === 0 && edge;
    });
    // On OpenSSL (node:tls, on the deno engine, has connected a backend by then).
    const dialed = OPENSSL_ENGINE === "epoll" ? 0 : 1;
    assert.equal(recorder.accepted, dialed, "no backend connection for a client that left");
    // The same, with bytes before the close_notify: they reach the backend, then its end.
    await quit("hello\n");
    await waitFor("the bytes at the backend", () => got.includes("hello\n"));
    assert.equal(recorder.accepted, dialed + 1);
    const edge = (await status(home)).services[0];
    assert.equal(edge.refused_by_cause.tls_handshake ?? 0, 0, JSON.stringify(edge));
  } finally {
    await d.stop();
    await recorder.close();
  }
});

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Runs `cmd` with `input` on its stdin, then its end; what it said (killed after 20 s). */
async function runStdin(cmd: string, args: string[], input: string): Promise<Deno.CommandOutput> {
  const child = new Deno.Command(cmd, { args, stdin: "piped", stdout: "piped", stderr: "piped" })
    .spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input));
  await writer.close();
  const out = await child.output();
  clearTimeout(timer);
  return out;
}

/**
 * A hop in front of bal's `port` for one TLS client: its first record (the
 * ClientHello) goes on at once, the rest is held until the client ends,
 * then sent in one write with the end. bal thus reads the client's last
 * handshake flight, whatever followed it and its close together, as from a
 * client that leaves as soon as its handshake is done.
 */
function heldFlight(port: number): { port: number; done: Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const client = await listener.accept();
    listener.close();
    const upstream = await Deno.connect({ hostname: "127.0.0.1", port });
    const back = (async () => {
      const buf = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await upstream.read(buf).catch(() => null);
        if (n === null) break;
        await writeAll(client, buf.subarray(0, n)).catch(() => {});
      }
    })();
    let held: Uint8Array = new Uint8Array(0);
    let passed = false;
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await client.read(buf).catch(() => null);
      if (n === null) break;
      held = concat(held, buf.subarray(0, n));
      const first = held.length >= 5 ? 5 + ((held[3] << 8) | held[4]) : Infinity;
      if (passed || held.length < first) continue;
      await writeAll(upstream, held.subarray(0, first));
      held = held.slice(first);
      passed = true;
    }
    await writeAll(upstream, held);
    await upstream.closeWrite();
    await back;
    upstream.close();
    client.close();
  })();
  return { port: (listener.addr as Deno.NetAddr).port, done };
}

/** bal's resident memory, in bytes. */
function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return Number(m![1]) * 1024;
}

Deno.test("tls: bal check refuses an expired certificate and a key of another, and warns of one expiring soon", async () => {
  const home = tempHome();
  const ca = await makeCa(home, "ca");
  await issue(home, ca, "old.test", { names: ["old.test"], days: -1 });
  await issue(home, ca, "soon.test", { names: ["soon.test"], days: 5 });
  await issue(home, ca, "b.test", { names: ["b.test"] });
  const config = `${home}/check.yaml`;
  const write = (certs: string) =>
    Deno.writeTextFileSync(
      config,
      `bind_address: 127.0.0.1
port: ${freePort()}
tls:
  certificates:
${certs}
backends: ["127.0.0.1:9"]
`,
    );
  write("    - {cert_file: old.test.crt, key_file: old.test.key}");
  let r = await bal(home, "check", "-c", config);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /check\.yaml:5:\d+: tls\.certificates\[0\]\.cert_file: .*old\.test\.crt expired on \d{4}-/,
  );
  write("    - {cert_file: b.test.crt, key_file: soon.test.key}");
  r = await bal(home, "check", "-c", config);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /tls\.certificates\[0\]\.key_file: .*soon\.test\.key is not the key of .*b\.test\.crt/,
  );
  write(
    "    - {cert_file: soon.test.crt, key_file: soon.test.key}\n    - {cert_file: missing.crt, key_file: b.test.key}",
  );
  r = await bal(home, "check", "-c", config);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /:6:\d+: tls\.certificates\[1\]\.cert_file: cannot read .*missing\.crt: not found/,
  );
  write("    - {cert_file: soon.test.crt, key_file: soon.test.key}");
  r = await bal(home, "check", "-c", config);
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    /warning: tls\.certificates\[0\]\.cert_file: .*soon\.test\.crt expires on .* \(in [45] days\)/,
  );
  assert.match(r.stdout, /tls: terminates.*soon\.test/);
});

Deno.test("tls: SNI routes on a terminating service: the server name picks the route and its own certificate", async () => {
  const home = tempHome();
  const { ca } = await pki(home);
  await issue(home, ca, "r.test", { names: ["r.test"] });
  const r = nameBackend("backend R");
  const a = nameBackend("backend A");
  const port = freePort();
  const d = await balWith(
    home,
    `services:
  - name: routed
    bind_address: 127.0.0.1
    port: ${port}
    tls: {certificates: [{cert_file: a.test.crt, key_file: a.test.key}]}
    routes:
      - sni: r.test
        certificates: [{cert_file: r.test.crt, key_file: r.test.key}]
        backends: ["127.0.0.1:${r.port}"]
      - sni: a.test
        backends: ["127.0.0.1:${a.port}"]
    default_route: a.test
`,
    port,
  );
  const reach = async (name: string) => {
    const out = await runCommand("sh", [
      "-c",
      `timeout 10 openssl s_client -connect 127.0.0.1:${port} -servername ${name} -ign_eof < /dev/null 2>&1`,
    ]);
    const subject = /^subject=(.*)$/m.exec(out.stdout)?.[1].replaceAll(" ", "");
    return `${subject} ${/backend [AR]/.exec(out.stdout)?.[0]}`;
  };
  try {
    assert.equal(await reach("r.test"), "CN=r.test backend R");
    assert.equal(await reach("a.test"), "CN=a.test backend A");
    assert.equal(await reach("else.test"), "CN=a.test backend A");
    const s = await status(home);
    assert.deepEqual(
      s.services[0].tls.route_certificates["r.test"].map((c: { names: string[] }) => c.names),
      [["r.test"]],
    );
  } finally {
    await d.stop();
    await r.close();
    await a.close();
  }
});

Deno.test("tls: a reload turns TLS on and off for a service; a connection from before keeps going", async () => {
  const home = tempHome();
  const { ca } = await pki(home);
  const echo = echoBackend();
  const port = freePort();
  const config = (tls: boolean) =>
    `services:
  - name: switch
    bind_address: 127.0.0.1
    port: ${port}
${
      tls
        ? "    tls: {certificates: [{cert_file: a.test.crt, key_file: a.test.key}]}\n"
        : ""
    }    backends: ["127.0.0.1:${echo.port}"]
`;
  const d = await balWith(home, config(false), port);
  const reload = async (tls: boolean) => {
    Deno.writeTextFileSync(d.config, config(tls));
    const r = await bal(home, "graceful", "-c", d.config);
    assert.equal(r.code, 0, r.stderr + r.stdout);
  };
  try {
    const plain = await Deno.connect({ hostname: "127.0.0.1", port });
    assert.equal(await echoes(plain, "plain\n"), "plain\n");
    await reload(true);
    const secure = await tlsClient(port, ca.cert);
    assert.equal(await echoes(secure, "secure\n"), "secure\n");
    assert.equal(await echoes(plain, "still plain\n"), "still plain\n");
    assert.equal((await status(home)).services[0].engine, OPENSSL_ENGINE);
    await reload(false);
    const again = await Deno.connect({ hostname: "127.0.0.1", port });
    assert.equal(await echoes(again, "plain again\n"), "plain again\n");
    assert.equal(await echoes(secure, "secure still\n"), "secure still\n");
    for (const c of [plain, secure, again]) c.close();
  } finally {
    await d.stop();
    await echo.close();
  }
});

Deno.test("tls: bal upgrade keeps a TLS service listening; a session from before keeps streaming on the old bal", async () => {
  const { home, ca, port, d, stop } = await echoTls("upgraded");
  let newPid = 0;
  try {
    const live = await tlsClient(port, ca.cert);
    assert.equal(await echoes(live, "before\n"), "before\n");
    const r = await bal(home, "upgrade");
    assert.equal(r.code, 0, `bal upgrade failed: ${r.stderr}${r.stdout}`);
    newPid = (await status(home)).pid;
    assert.notEqual(newPid, d.pid);
    const fresh = await tlsClient(port, ca.cert);
    assert.equal(await echoes(fresh, "after\n"), "after\n");
    assert.equal(await echoes(live, "still\n"), "still\n");
    live.close();
    fresh.close();
  } finally {
    await stop();
    if (newPid && alive(newPid)) Deno.kill(newPid, "SIGKILL");
  }
});
