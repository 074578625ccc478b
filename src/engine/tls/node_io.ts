/**
 * The two adapters between Deno's sockets and `node:tls`, the TLS stack
 * that has what bal's TLS keys need (a certificate per server name, client
 * certificates, ALPN, the version): {@link duplexOver} lets a TLS socket
 * run over a connection bal already holds (its first bytes possibly read
 * already), and {@link tlsStream} lets the relay read and write the TLS
 * socket's plain bytes as it does a socket's. Both keep half-close: an
 * end of stream one way leaves the other open.
 *
 * @module
 */
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import { closeQuietly, type Stream, writeAll } from "../../net/stream.ts";

/** What bal loads of Node's API, once a TLS service exists. */
export interface NodeTls {
  tls: typeof import("node:tls");
  crypto: typeof import("node:crypto");
  Duplex: typeof Duplex;
}

let loaded: NodeTls | null = null;

/** Loads `node:tls` (and what goes with it) the first time a TLS service needs it. */
export async function loadNodeTls(): Promise<NodeTls> {
  if (loaded) return loaded;
  const [tls, crypto, stream] = await Promise.all([
    import("node:tls"),
    import("node:crypto"),
    import("node:stream"),
  ]);
  return loaded = { tls, crypto, Duplex: stream.Duplex };
}

/** The read size under TLS: a record is at most 16 KiB of payload. */
const READ_BYTES = 16 * 1024 + 512;

/**
 * Backpressure between a TLS socket's plain side and the connection under
 * it: while what was decrypted waits unread past a bound, the connection
 * is not read (pausing the TLS socket itself stalled Deno's `node:tls`
 * for good), so TCP slows the sender.
 */
export interface Flow {
  full: boolean;
  /** The read held back while full, run once the reader caught up. */
  held: (() => void) | null;
  /** Writes to the connection under it not yet done: a half-close waits for them. */
  writing: number;
  /** Called as each of them is done. */
  wrote: (() => void) | null;
}

/**
 * A Node duplex over `conn`: what it reads first is `first` (bytes already
 * read off the socket), then the socket, while `flow` is not full. Ending
 * it half-closes the socket; closing the socket stays the session's.
 */
export function duplexOver(
  node: NodeTls,
  conn: Stream,
  first: Uint8Array | null,
  flow: Flow,
): Duplex {
  let pending = first && first.length > 0 ? first : null;
  // One buffer per connection, its reads handed on as copies of what came: a handshake's
  // records are a few hundred bytes, so a fresh 16 KiB per read was mostly garbage.
  const buf = new Uint8Array(READ_BYTES);
  return new node.Duplex({
    allowHalfOpen: true,
    read() {
      if (pending) {
        const bytes = pending;
        pending = null;
        this.push(bytes);
        return;
      }
      const next = () => {
        conn.read(buf).then(
          (n) => this.push(n === null ? null : buf.slice(0, n)),
          (err) => this.destroy(err),
        );
      };
      if (flow.full) flow.held = next;
      else next();
    },
    write(chunk: Uint8Array, _encoding, done) {
      flow.writing++;
      const settled = (err?: Error) => {
        flow.writing--;
        done(err);
        const wrote = flow.wrote;
        flow.wrote = null;
        wrote?.();
      };
      writeAll(conn, chunk).then(() => settled(), settled);
    },
    final(done) {
      conn.closeWrite().then(() => done(), done);
    },
  });
}

/** Plain bytes queued from a TLS socket before the connection under it is no longer read. */
const QUEUE_HIGH = 64 * 1024;

/** A fresh {@link Flow}. */
export function flow(): Flow {
  return { full: false, held: null, writing: 0, wrote: null };
}

/**
 * The plain side of a TLS socket as a {@link Stream}. What it decrypts is
 * queued until read; past 64 KiB `flow` holds the reads of the connection
 * under it (so a slow reader slows the sender through TCP); a write
 * resolves once the socket took the bytes, so the relay never runs ahead.
 * Once the socket has closed (a peer's reset closes it without an error:
 * that is heard from `under`, the duplex beneath), a write fails and a
 * half-close is done at once: Node calls back neither on a closed socket,
 * and the relay would wait for them for good.
 */
export function tlsStream(socket: TLSSocket, flow: Flow, under?: Duplex): Stream {
  const st = heard(socket, flow, under);
  return {
    read: (buf) => readPlain(st, flow, buf),
    write: (bytes) =>
      new Promise((resolve, reject) => {
        const lost = () => reject(st.failure ?? new Error("the TLS connection is closed"));
        if (st.failure || st.closed) return lost();
        st.waiting.add(lost);
        // The relay reuses its buffer: the socket keeps a copy.
        socket.write(bytes.slice(), (err) => {
          st.waiting.delete(lost);
          if (err) reject(err);
          else resolve(bytes.length);
        });
      }),
    async closeWrite() {
      const ended = await endSocket(socket, st);
      // The socket calls back (or closes) once it handed its close_notify to the duplex
      // beneath, not once that was sent: the session closes the connection next, losing it.
      await sentAll(flow);
      if (!ended && st.failure) throw st.failure;
    },
    close() {
      socket.destroy();
    },
  };
}

/** What a TLS socket said: its decrypted bytes not read yet, its end, close or failure. */
interface Heard {
  chunks: Uint8Array[];
  queued: number;
  ended: boolean;
  closed: boolean;
  failure: Error | null;
  /** Wakes the read waiting for news. */
  wake: () => void;
  /** Writes and half-closes waiting on the socket, let go when it closes. */
  readonly waiting: Set<() => void>;
}

/** Listens to `socket` (and `under`, for its failures) from now on. */
function heard(socket: TLSSocket, flow: Flow, under?: Duplex): Heard {
  const st: Heard = {
    chunks: [],
    queued: 0,
    ended: false,
    closed: false,
    failure: null,
    wake: () => {},
    waiting: new Set(),
  };
  socket.on("data", (chunk: Uint8Array) => {
    st.chunks.push(chunk);
    st.queued += chunk.length;
    if (st.queued > QUEUE_HIGH) flow.full = true;
    st.wake();
  });
  socket.on("end", () => {
    st.ended = true;
    st.wake();
  });
  socket.on("close", () => {
    st.ended = st.closed = true;
    st.wake();
    for (const release of [...st.waiting]) release();
  });
  const fail = (err: Error) => {
    st.failure ??= err;
    st.wake();
  };
  socket.on("error", fail);
  under?.on("error", fail);
  return st;
}

/** Reads what was decrypted into `buf`; lets the connection be read again once the queue ebbs. */
async function readPlain(st: Heard, flow: Flow, buf: Uint8Array): Promise<number | null> {
  while (st.chunks.length === 0) {
    if (st.failure) throw st.failure;
    if (st.ended) return null;
    await new Promise<void>((resolve) => st.wake = resolve);
  }
  const head = st.chunks[0];
  const n = Math.min(head.length, buf.length);
  buf.set(head.subarray(0, n));
  if (n === head.length) st.chunks.shift();
  else st.chunks[0] = head.subarray(n);
  st.queued -= n;
  if (flow.full && st.queued <= QUEUE_HIGH / 2) {
    flow.full = false;
    const held = flow.held;
    flow.held = null;
    held?.();
  }
  return n;
}

/** Ends the socket's writing side: true once it called back, false when it closed first. */
function endSocket(socket: TLSSocket, st: Heard): Promise<boolean> {
  return new Promise((resolve) => {
    if (st.closed) return resolve(false);
    const lost = () => resolve(false);
    st.waiting.add(lost);
    socket.end(() => {
      st.waiting.delete(lost);
      resolve(true);
    });
  });
}

/**
 * Resolves once the connection under a TLS socket took every write begun:
 * a socket that ended both ways destroys its duplex with its close_notify
 * still being written, and that write goes on.
 */
async function sentAll(flow: Flow): Promise<void> {
  while (flow.writing > 0) {
    await new Promise<void>((resolve) => flow.wrote = resolve);
  }
}

/**
 * Waits for `socket`'s handshake (`event`: `secure` on a server,
 * `secureConnect` on a client) for at most `timeoutMs`: then `accept`
 * decides (a reason refuses it). Resolves to what `accept` made of it, or
 * why it failed in words; a failed socket is destroyed. The peer ending
 * its side of `under` fails it at once: no handshake finishes after that,
 * and the TLS socket above a duplex does not say so itself.
 */
export function handshake<T>(
  socket: TLSSocket,
  under: Duplex,
  event: "secure" | "secureConnect",
  timeoutMs: number,
  accept: () => T | string,
): Promise<T | string> {
  return new Promise((resolve) => {
    const fail = (why: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(why);
    };
    const timer = setTimeout(
      () => fail(`handshake not finished within ${timeoutMs} ms`),
      timeoutMs,
    );
    socket.once("error", (err: Error) => fail(err.message));
    const closed = () => fail("closed during the handshake");
    socket.once("close", closed);
    under.once("end", closed);
    socket.once(event, () => {
      clearTimeout(timer);
      under.removeListener("end", closed);
      socket.removeAllListeners("close");
      socket.removeAllListeners("error");
      const done = accept();
      if (typeof done === "string") fail(done);
      else resolve(done);
    });
  });
}

/** Closes a TLS socket and the connection beneath it. */
export function closeBoth(socket: TLSSocket | null, conn: Stream): void {
  socket?.destroy();
  closeQuietly(conn);
}
