/**
 * The adapters between Deno's sockets and `node:tls`, over real TCP with a
 * real TLS client (Deno's own, rustls) at the other end.
 */
import assert from "node:assert/strict";
import { duplexOver, flow, loadNodeTls, tlsStream } from "../../../../src/engine/tls/node_io.ts";
import type { Stream } from "../../../../src/net/stream.ts";
import { issue, makeCa } from "../../../e2e/tls_pki.ts";
import { tempHome } from "../../../helpers.ts";

/** `conn`, each write of it starting `ms` late: a send buffer the client drains slowly. */
function slowWrites(conn: Deno.Conn, ms: number): Stream {
  return {
    read: (buf) => conn.read(buf),
    write: async (bytes) => {
      await new Promise((r) => setTimeout(r, ms));
      return await conn.write(bytes);
    },
    closeWrite: () => conn.closeWrite(),
    close: () => conn.close(),
  };
}

Deno.test("node_io: a half-close resolves once its close_notify was sent, so closing next loses nothing", async () => {
  const home = tempHome();
  const ca = await makeCa(home, "ca");
  const cert = await issue(home, ca, "a.test", { names: ["a.test"] });
  const node = await loadNodeTls();
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  // bal's side, as a session runs it: echo until the client's end, end, then close at once.
  const serving = (async () => {
    const conn = await listener.accept();
    const held = flow();
    const under = duplexOver(node, slowWrites(conn, 20), null, held);
    const socket = new node.tls.TLSSocket(under, {
      isServer: true,
      secureContext: node.tls.createSecureContext({
        cert: Deno.readTextFileSync(cert.cert),
        key: Deno.readTextFileSync(cert.key),
      }),
    });
    await new Promise((resolve) => socket.once("secure", resolve));
    const plain = tlsStream(socket, held, under);
    const buf = new Uint8Array(4096);
    for (let n = await plain.read(buf); n !== null; n = await plain.read(buf)) {
      await plain.write(buf.subarray(0, n));
    }
    await plain.closeWrite();
    plain.close();
    conn.close();
  })();
  try {
    const raw = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    const client = await Deno.startTls(raw, {
      hostname: "a.test",
      caCerts: [Deno.readTextFileSync(ca.cert)],
    });
    const sent = new Uint8Array(1000).map((_, i) => i);
    await client.write(sent);
    await client.closeWrite();
    const got: number[] = [];
    const buf = new Uint8Array(4096);
    // A close without the close_notify fails this read (rustls: UnexpectedEof).
    for (let n = await client.read(buf); n !== null; n = await client.read(buf)) {
      got.push(...buf.subarray(0, n));
    }
    client.close();
    assert.deepEqual(new Uint8Array(got), sent);
  } finally {
    await serving;
    listener.close();
  }
});
