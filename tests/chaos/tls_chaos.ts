/**
 * TLS under faults: clients stream through a service that terminates TLS
 * and encrypts again towards a TLS echo backend, while its certificate is
 * rotated and its settings reloaded over and over, and other clients send
 * garbage, stop mid-handshake or reset. Every stream comes back byte for
 * byte, the broken clients are counted as refused, and bal's memory stays
 * bounded. Run twice: re-encrypting (on node:tls), and terminating only
 * (on OpenSSL beside a native engine), where some reloads also turn ALPN
 * on, which moves the service to node:tls and back while it streams.
 */
import assert from "node:assert/strict";
import { bal, echoBackend, freePort, startDaemon, tempHome } from "../helpers.ts";
import { issue, makeCa } from "../e2e/tls_pki.ts";
import { between, pick, randomBytes, record, rssKiB, sleep, streamEcho } from "./chaos.ts";

/** A TLS echo server (Deno's own TLS) with `cert`, until `close`. */
function tlsEcho(cert: { cert: string; key: string }) {
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: Deno.readTextFileSync(cert.cert),
    key: Deno.readTextFileSync(cert.key),
  });
  const serve = async (c: Deno.TlsConn) => {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (let n = await c.read(buf); n !== null; n = await c.read(buf)) {
        for (let off = 0; off < n;) off += await c.write(buf.subarray(off, n));
      }
      await c.closeWrite();
    } catch { /* bal went away */ }
    try {
      c.close();
    } catch { /* closed */ }
  };
  (async () => {
    for await (const c of listener) serve(c);
  })().catch(() => {});
  return { port: (listener.addr as Deno.NetAddr).port, close: () => listener.close() };
}

/** A client that breaks the handshake one way or another, then goes. */
async function brokenClient(port: number): Promise<void> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const way = between(0, 2);
    if (way === 0) await c.write(randomBytes(between(1, 2048)));
    if (way === 1) await c.write(new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
    await sleep(between(0, 50));
  } catch { /* bal closed it first */ }
  c.close();
}

Deno.test("chaos: TLS streams stay whole while certificates rotate and broken clients come and go", async () => {
  await rotationFaults(true);
});

Deno.test("chaos: the same, terminating only (OpenSSL), the service moving to node:tls and back", async () => {
  await rotationFaults(false);
});

async function rotationFaults(reencrypt: boolean): Promise<void> {
  const home = tempHome();
  const ca = await makeCa(home, "ca");
  const origin = await issue(home, ca, "origin.test", { names: ["origin.test"] });
  await issue(home, ca, "a.test", { names: ["a.test"] });
  const caPem = Deno.readTextFileSync(ca.cert);
  const backend = reencrypt ? tlsEcho(origin) : echoBackend();
  const port = freePort();
  const config = `${home}/tls.yaml`;
  const yaml = (i: number) =>
    `port: ${port}\nbind_address: 127.0.0.1\nbackends: ["127.0.0.1:${backend.port}"]\n` +
    `tls:\n    certificates: [{cert_file: a.test.crt, key_file: a.test.key}]\n` +
    `    handshake_timeout_ms: ${500 + i % 3 * 500}\n` +
    (reencrypt
      ? `backend_tls: {server_name: origin.test, ca_file: ca.crt}\n`
      : i % 4 === 3
      ? "    alpn: [http/1.1]\n"
      : "");
  Deno.writeTextFileSync(config, yaml(0));
  const d = await startDaemon(home, config, port);
  const clients = pick(40, 200);
  let reloads = 0;
  let storming = true;
  const storm = (async () => {
    for (let i = 1; storming && i < 1000; i++) {
      // A new certificate every other reload: new handshakes take it, live streams keep theirs.
      if (i % 2) await issue(home, ca, "a.test", { names: ["a.test"] });
      Deno.writeTextFileSync(config, yaml(i));
      const r = await bal(home, "reload");
      assert.equal(r.code, 0, r.stderr);
      reloads++;
      await sleep(150);
    }
  })();
  let broken = 0;
  const breaking = (async () => {
    while (storming) {
      await brokenClient(port).catch(() => {});
      broken++;
      await sleep(between(5, 30));
    }
  })();
  try {
    const before = rssKiB(d.pid);
    const connect = async () => {
      const raw = await Deno.connect({ hostname: "127.0.0.1", port });
      return await Deno.startTls(raw, { hostname: "a.test", caCerts: [caPem] });
    };
    const results = [];
    // Batches go on until the storm has reloaded 3 times among them, counted, not timed: a
    // fast machine streams the first clients within one or two reloads.
    const more = (i: number) => i < clients || (reloads < 3 && i < clients * 10);
    for (let i = 0; more(i); i += 10) {
      results.push(
        ...await Promise.all(
          Array.from(
            { length: i < clients ? Math.min(10, clients - i) : 10 },
            () =>
              streamEcho(port, randomBytes(between(1, 256 * 1024)), {
                halfClose: true,
                pauseMs: 10,
                connect,
              }),
          ),
        ),
      );
    }
    storming = false;
    await Promise.all([storm, breaking]);
    assert.ok(reloads >= 3, `${reloads} reloads while the clients streamed`);
    const failed = results.filter((r) => !r.intact);
    assert.deepEqual(failed, [], "every TLS client's stream came back whole");
    const grown = rssKiB(d.pid) - before;
    assert.ok(grown < 128 * 1024, `bal's RSS grew by ${grown} KiB`);
    const s = JSON.parse((await bal(home, "status", "--json")).stdout).services[0];
    assert.ok(s.refused_by_cause.tls_handshake >= broken / 2, JSON.stringify(s.refused_by_cause));
    record(reencrypt ? "tls_rotation_faults" : "tls_openssl_rotation_faults", {
      clients: results.length,
      reloads,
      broken_clients: broken,
      refused: s.refused_by_cause.tls_handshake,
      rss_growth_kib: grown,
    });
  } finally {
    storming = false;
    await storm.catch(() => {});
    await breaking.catch(() => {});
    await d.stop();
    await backend.close();
  }
}
