/**
 * A TLS-terminating TCP proxy of the two stacks a Deno process has, for
 * `bench/tls.ts --probes` to measure against HAProxy and nginx: Deno's own
 * (`Deno.listenTls`, rustls) or Node's API (`node:tls`, rustls beneath
 * Deno's compatibility layer). Each client's handshake is completed, a
 * backend connected, and bytes relayed both ways until either side ends.
 *
 * `adapter` is bal's own way (src/engine/tls/node_io.ts): `node:tls` over a
 * Deno socket through a JS duplex, without the rest of bal. `fd` is the
 * way without the duplex: a descriptor accepted by libc, as the native
 * engines accept, under `node:tls` as Node's own TCP socket; with
 * `node-relay` after the backend port, its backend is a `node:net` socket
 * too, relayed on Node's stream events.
 *
 *   deno run --allow-net --allow-read --allow-ffi bench/tls_server.ts deno|node|adapter|fd PORT CERT KEY BACKEND_PORT [node-relay]
 *
 * @module
 */
const [stack, port, certFile, keyFile, backendPort] = Deno.args;
const cert = Deno.readTextFileSync(certFile);
const key = Deno.readTextFileSync(keyFile);
const backend = { hostname: "127.0.0.1", port: Number(backendPort) };

/** Copies `from` into `to` until the end or an error, then half-closes `to`. */
async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(32 * 1024);
  try {
    for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
      for (let off = 0; off < n;) off += await to.write(buf.subarray(off, n));
    }
    await to.closeWrite();
  } catch { /* the other side went away */ }
}

async function serveDeno(): Promise<void> {
  const listener = Deno.listenTls({ hostname: "127.0.0.1", port: Number(port), cert, key });
  for await (const conn of listener) {
    (async () => {
      try {
        await conn.handshake();
        const up = await Deno.connect(backend);
        await Promise.all([pump(conn, up), pump(up, conn)]);
        up.close();
      } catch { /* a client that left mid-handshake */ }
      try {
        conn.close();
      } catch { /* closed already */ }
    })();
  }
}

async function serveNode(): Promise<void> {
  const tls = await import("node:tls");
  const net = await import("node:net");
  const server = tls.createServer({ cert, key }, (client) => {
    const up = net.connect(backend.port, backend.hostname);
    client.pipe(up);
    up.pipe(client);
    const end = () => {
      client.destroy();
      up.destroy();
    };
    client.on("error", end);
    up.on("error", end);
    client.on("close", end);
    up.on("close", end);
  });
  server.on("tlsClientError", () => {});
  server.listen(Number(port), "127.0.0.1");
  await new Promise(() => {});
}

/** bal's adapters alone: a Deno socket under node:tls, the plain side relayed. */
async function serveAdapter(): Promise<void> {
  const { duplexOver, flow, loadNodeTls, tlsStream } = await import("../src/engine/tls/node_io.ts");
  const node = await loadNodeTls();
  const context = node.tls.createSecureContext({ cert, key });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(port) });
  for await (const conn of listener) {
    const held = flow();
    const socket = new node.tls.TLSSocket(duplexOver(node, conn, null, held), {
      isServer: true,
      secureContext: context,
    });
    socket.on("error", () => {});
    socket.once("secure", async () => {
      const client = tlsStream(socket, held);
      try {
        const up = await Deno.connect(backend);
        await Promise.all([pump(client as Deno.Conn, up), pump(up, client as Deno.Conn)]);
        up.close();
      } catch { /* a side went away */ }
      socket.destroy();
      try {
        conn.close();
      } catch { /* closed already */ }
    });
  }
}

/**
 * Accepted by libc (as bal's native engines accept), each descriptor then
 * given to `node:net` as a socket (Node's TCP handle) under `node:tls`:
 * no duplex. The plain side is relayed as the adapter's is.
 */
async function serveFd(): Promise<void> {
  const ffi = await import("../src/engine/linux/ffi.ts");
  const { encodeAddress, familyOf } = await import("../src/engine/linux/sockaddr.ts");
  const { flow, tlsStream } = await import("../src/engine/tls/node_io.ts");
  const tls = await import("node:tls");
  const net = await import("node:net");
  ffi.loadLibc();
  const context = tls.createSecureContext({ cert, key });
  const address = encodeAddress("127.0.0.1", Number(port));
  const listener = ffi.socket(familyOf(address));
  ffi.setIntOption(listener, ffi.C.SOL_SOCKET, ffi.C.SO_REUSEADDR, 1);
  if (ffi.bind(listener, address) < 0 || ffi.listen(listener, 1024) < 0) throw new Error("listen");
  const ep = ffi.epollCreate();
  ffi.epollCtl(ep, ffi.C.EPOLL_CTL_ADD, listener, ffi.C.EPOLLIN, 0);
  const events = ffi.eventBuffer(1);
  const peer = new Uint8Array(ffi.SOCKADDR_MAX);
  for (;;) {
    const fd = ffi.accept(listener, peer);
    if (fd < 0) {
      await ffi.epollWaitAsync(ep, events, -1);
      continue;
    }
    const held = flow();
    const socket = new tls.TLSSocket(new net.Socket({ fd, readable: true, writable: true }), {
      isServer: true,
      secureContext: context,
    });
    socket.on("error", () => {});
    if (RELAY_NODE) {
      socket.once("secure", () => relayNode(net, socket));
      continue;
    }
    socket.once("secure", async () => {
      const client = tlsStream(socket, held);
      try {
        const up = await Deno.connect(backend);
        await Promise.all([pump(client as Deno.Conn, up), pump(up, client as Deno.Conn)]);
        up.close();
      } catch { /* a side went away */ }
      socket.destroy();
    });
  }
}

const RELAY_NODE = Deno.args[5] === "node-relay";

/** Bytes both ways between two Node sockets by their events, each paused while the other is full. */
function relayNode(net: typeof import("node:net"), client: import("node:net").Socket) {
  const up = net.connect(backend.port, backend.hostname);
  up.setNoDelay(true);
  const oneWay = (from: import("node:net").Socket, to: import("node:net").Socket) => {
    from.on("data", (chunk: Uint8Array) => {
      if (!to.write(chunk)) {
        from.pause();
        to.once("drain", () => from.resume());
      }
    });
    from.on("end", () => to.end());
  };
  oneWay(client, up);
  oneWay(up, client);
  const end = () => {
    client.destroy();
    up.destroy();
  };
  up.on("error", end);
  client.on("error", end);
  client.on("close", end);
  up.on("close", end);
}

const serve = { node: serveNode, adapter: serveAdapter, fd: serveFd, deno: serveDeno };
await (serve[stack as keyof typeof serve] ?? serveDeno)();
