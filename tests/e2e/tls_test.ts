/**
 * TLS at the balancer end to end (issue 29), on whichever engine the suite
 * runs (TLS services run on Deno's sockets beside a native engine):
 * `openssl s_client`, `curl` and `openssl s_server` as the real peers,
 * certificates made by a test CA (tls_pki.ts).
 */
import assert from "node:assert/strict";
import {
  bal,
  echoBackend,
  freePort,
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

/** Writes `yaml` (services listening on 127.0.0.1) and starts bal on it. */
async function balWith(home: string, yaml: string, port: number) {
  const config = `${home}/tls.yaml`;
  Deno.writeTextFileSync(config, yaml);
  return { ...(await startDaemon(home, config, port)), config };
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
  const port = freePort();
  const d = await balWith(
    home,
    `services:
  - name: secure
    bind_address: 127.0.0.1
    port: ${port}
    tls:
      certificates:
        - {cert_file: a.test.crt, key_file: a.test.key}
        - {cert_file: ${b.cert}, key_file: ${b.key}}
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
    const s = await status(home);
    const svc = s.services.find((x: { name: string }) => x.name === "secure");
    assert.equal(svc.engine, "deno");
    assert.deepEqual(svc.tls.certificates.map((c: { names: string[] }) => c.names), [
      ["a.test"],
      ["b.test", "*.b.test"],
    ]);
    assert.match(svc.tls.certificates[0].not_after, /^\d{4}-\d\d-\d\dT/);
    void a;
  } finally {
    await d.stop();
    await echo.close();
  }
});

Deno.test("tls: HTTPS through termination and backend_tls to openssl s_server; a wrong CA fails, counted and said", async () => {
  const home = tempHome();
  const { ca, a } = await pki(home);
  const other = await makeCa(home, "other-ca");
  const origin = await issue(home, ca, "origin.test", { names: ["origin.test"] });
  const serverPort = freePort();
  const server = new Deno.Command("openssl", {
    args: [
      "s_server",
      "-accept",
      String(serverPort),
      "-cert",
      origin.cert,
      "-key",
      origin.key,
      "-www",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const port = freePort();
  const wrong = freePort();
  let d: Awaited<ReturnType<typeof balWith>> | null = null;
  try {
    await waitListening("openssl s_server", serverPort);
    d = await balWith(
      home,
      `services:
  - name: https
    bind_address: 127.0.0.1
    port: ${port}
    tls: {certificates: [{cert_file: a.test.crt, key_file: a.test.key}]}
    backend_tls: {server_name: origin.test, ca_file: ca.crt}
    health_check: {type: tcp}
    backends: ["127.0.0.1:${serverPort}"]
  - name: wrong
    bind_address: 127.0.0.1
    port: ${wrong}
    tls: {certificates: [{cert_file: a.test.crt, key_file: a.test.key}]}
    backend_tls: {server_name: origin.test, ca_file: ${other.cert}}
    backends: ["127.0.0.1:${serverPort}"]
`,
      port,
    );
    const curl = (p: number) =>
      runCommand("curl", [
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        ca.cert,
        "--resolve",
        `a.test:${p}:127.0.0.1`,
        `https://a.test:${p}/`,
      ]);
    const ok = await curl(port);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /s_server -www|Ciphers supported/);
    const bad = await curl(wrong);
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
    ).catch((err) => {
      throw new Error(`${err.message}\n${d!.log().map((l) => JSON.stringify(l)).join("\n")}`);
    });
    const s = await status(home);
    const backend = s.services.find((x: { name: string }) => x.name === "wrong").backends[0];
    assert.ok(backend.counters.tls >= 1, JSON.stringify(backend.counters));
    void a;
  } finally {
    await d?.stop();
    server.kill("SIGKILL");
    await server.status;
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
  const home = tempHome();
  const { ca } = await pki(home);
  const client = await issue(home, ca, "client-1", { file: "client" });
  const stranger = await makeCa(home, "stranger");
  const headers: Uint8Array[] = [];
  const recorder = serveTcp(async (conn) => {
    const buf = new Uint8Array(4096);
    const n = await conn.read(buf);
    if (n === null) return;
    headers.push(buf.slice(0, n));
    await writeAll(conn, text("hello from the backend\n"));
  });
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
      alpn: [h2, http/1.1]
    backends: ["127.0.0.1:${recorder.port}"]
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
    assert.equal(str(tlvs.get(0x01)!), "http/1.1", "PP2_TYPE_ALPN");
    const ssl = tlvs.get(0x20)!;
    assert.equal(ssl[0], 0x07, "PP2_CLIENT_SSL | CERT_CONN | CERT_SESS");
    assert.equal(new DataView(ssl.buffer, ssl.byteOffset).getUint32(1), 0, "verified");
    assert.match(str(ssl.subarray(5)), /TLSv1\.3[\s\S]*client-1/);
    const s = await status(home);
    const svc = s.services.find((x: { name: string }) => x.name === "mtls");
    assert.equal(svc.refused_by_cause.tls_handshake, 2);
    assert.equal(svc.tls.client_auth, "required");
  } finally {
    await d.stop();
    await recorder.close();
  }
});
