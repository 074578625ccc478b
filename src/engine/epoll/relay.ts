/**
 * The native engine's relay between a client and a backend socket, both
 * nonblocking and registered once, edge-triggered, for reads, writes and
 * hang-ups: the loop reports each change of readiness once, the relay keeps
 * it in two flags per socket, and no epoll_ctl is spent while bytes flow
 * (measured on this machine, a system call costs about a microsecond of
 * kernel entry alone; level-triggered watching took five epoll_ctl per
 * short connection, this takes two).
 *
 * Bytes go through one buffer shared by the whole data plane: a read is
 * sent on at once, so nothing stays in it. Only when a peer is slow (its
 * send returns short or EAGAIN) does the rest move to a buffer of that
 * connection's own, and its source is not read until the slow side has
 * taken everything: backpressure, with no memory held by connections whose
 * peers keep up, idle ones included.
 *
 * An end of stream is passed on as `shutdown(SHUT_WR)` once what was read
 * before it is delivered (half-close); a reset or error on either side ends
 * both.
 *
 * A client whose TLS bal terminated (tls_accept.ts) is read and written
 * through OpenSSL instead: the same flow, with close_notify before the
 * half-close, and its socket read until OpenSSL says it waits, since a
 * record may hold more than one read takes.
 *
 * @module
 */
import * as sys from "../linux/ffi.ts";
import * as ssl from "../linux/ffi_ssl.ts";
import type { Loop } from "./loop.ts";
import { moved } from "../plane.ts";
import { relayFailed } from "../relayed.ts";
import { type Gate, hold, paid, room } from "../throttle.ts";
import type { MirrorLink } from "../mirror.ts";

/** Size of the plane's shared buffer (one per thread). */
export const SHARED_BUFFER = 64 * 1024;
const shared = new Uint8Array(SHARED_BUFFER);

/** What a relayed socket is registered for, once. */
export const RELAY_EVENTS = sys.C.EPOLLIN | sys.C.EPOLLOUT | sys.C.EPOLLRDHUP | sys.C.EPOLLET;
const READ_EVENTS = sys.C.EPOLLIN | sys.C.EPOLLRDHUP | sys.C.EPOLLHUP | sys.C.EPOLLERR;
const WRITE_EVENTS = sys.C.EPOLLOUT | sys.C.EPOLLHUP | sys.C.EPOLLERR;

/** One socket of a relay. */
export interface Side {
  readonly fd: number;
  token: number;
  /** Readiness reported and not used up yet (a read that came back short or EAGAIN uses it up). */
  readable: boolean;
  writable: boolean;
  /** Still reading from it (its end of stream not read yet). */
  reading: boolean;
  /** Its peer's FIN (or a reset) has arrived: read on to the end, whatever a short read suggests. */
  closing: boolean;
  /** Bytes read from the other side that this one has not taken yet. */
  pending: Uint8Array | null;
  /** The bandwidth limit on reading it, or null. */
  readonly gate: Gate | null;
  /** Its TLS, when bal terminates it: bytes go through OpenSSL. */
  readonly tls: ssl.Tls | null;
  /** An end (0) or failure (-errno) TLS met after bytes it returned first; 1: none. */
  deferred: number;
}

/** A relay between a client (`a`) and a backend (`b`). */
export interface Relay {
  readonly a: Side;
  readonly b: Side;
  aToB: number;
  bToA: number;
  /** A read or write failed (reset, broken pipe): both were ended. */
  failed: boolean;
  /** Whose stream ended first (end of stream, or the side a failure came from). */
  firstEnd: "a" | "b" | null;
  done: boolean;
  /** Epoch ms bytes last moved. */
  readonly activity: { at: number };
  /** The backend's byte counters, moved as bytes are read. */
  readonly counters: { bytes_in: number; bytes_out: number };
  /** Called once, when both directions are done or one failed. */
  readonly onEnd: () => void;
  /** Where a copy of the client's bytes goes (its service's mirror), or null. */
  readonly mirror: MirrorLink | null;
}

/** A side of a relay for an open socket, its reads limited by `gate`. */
export function side(
  fd: number,
  token = 0,
  gate: Gate | null = null,
  tls: ssl.Tls | null = null,
): Side {
  return {
    fd,
    token,
    readable: false,
    writable: false,
    reading: true,
    closing: false,
    pending: null,
    gate,
    tls,
    deferred: 1,
  };
}

/**
 * Starts relaying: the client joins the loop (its readiness is reported
 * at once), unless it is there already (its PROXY header was read: then
 * `clientEvents` are the events seen meanwhile, and it is read on from
 * where the header ended); the backend, registered at its connect, gets
 * the relay's handler, and the event that said it connected is used now
 * (edges come once). `header` (a PROXY header, the client's early bytes)
 * goes to the backend before anything else.
 */
export function startRelay(
  loop: Loop,
  r: Relay,
  backendEvents: number,
  client: { events: number; drained: boolean },
  header: Uint8Array | null,
): void {
  const { a, b } = r;
  // Before the client joins the loop: what this reads is not reported again as ready.
  if (header) sendHeader(r, header, (backendEvents & WRITE_EVENTS) !== 0 && !client.drained);
  if (r.done) return;
  const handler = (ev: number) => onEvent(r, a, ev);
  if (a.token > 0) loop.rebind(a.token, handler);
  else a.token = loop.add(a.fd, RELAY_EVENTS, handler);
  if (a.token < 0) return fail(r, a);
  loop.rebind(b.token, (ev) => onEvent(r, b, ev));
  onEvent(r, b, backendEvents);
  // An inspected client whose socket was emptied is read again at its next edge.
  const seen = client.drained ? client.events & ~sys.C.EPOLLIN : client.events | sys.C.EPOLLIN;
  if (client.events) onEvent(r, a, seen);
}

/**
 * Sends the backend header together with what the client has sent already, when
 * it has (the common case: its request waited while bal connected): one
 * send instead of two, which measured 1.19x the CPU per short connection.
 * When the client has nothing yet (or `read` is false: its socket is known
 * to be empty) the header goes alone, before anything else, as servers
 * that accept the PROXY protocol wait for it.
 */
function sendHeader(r: Relay, header: Uint8Array, read: boolean): void {
  const { a, b } = r;
  const space = room(a.gate, SHARED_BUFFER - header.length);
  const n = read && space > 0 ? readFrom(a, shared.subarray(header.length), space) : -1;
  if (n <= 0) {
    b.pending = header;
    // An end of stream or error is read again, by the relay.
    if (n === 0 || (n < -1 && n !== -sys.E.EAGAIN)) a.readable = true;
    return;
  }
  shared.set(header);
  fromClient(r, shared.subarray(header.length, header.length + n));
  a.readable = n === space;
  b.writable = true;
  forward(r, b, header.length + n);
}

/** Notes what an event says of a socket's readiness, then moves what can move. */
function onEvent(r: Relay, x: Side, ev: number): void {
  if (r.done) return;
  // TLS may need the socket's other direction to read or write (a key update): any edge retries.
  if (ev & READ_EVENTS || (x.tls && ev)) x.readable = true;
  if (ev & (sys.C.EPOLLRDHUP | sys.C.EPOLLHUP | sys.C.EPOLLERR)) x.closing = true;
  if (ev & WRITE_EVENTS || (x.tls && ev)) x.writable = true;
  progress(r);
  // A socket error that no read or write met (the side was held back):
  // the connection is gone all the same, and the edge will not come again.
  if (!r.done && ev & sys.C.EPOLLERR) fail(r, x);
}

/** Moves what can move both ways, then ends the relay if both directions are done. */
function progress(r: Relay): void {
  pump(r, r.a, r.b);
  if (!r.done) pump(r, r.b, r.a);
  if (r.done) return;
  const { a, b } = r;
  if (a.reading || b.reading || a.pending || b.pending) return;
  r.done = true;
  r.onEnd();
}

/** Direction x → y: first what waits for y, then fresh reads from x until one side blocks. */
function pump(r: Relay, x: Side, y: Side): void {
  if (y.pending && y.writable) flush(r, y);
  while (!r.done && !y.pending && x.reading && x.readable) {
    const cap = room(x.gate, SHARED_BUFFER);
    if (cap === 0) return pause(r, x);
    const n = readFrom(x, shared, cap);
    if (n > 0) {
      if (x === r.a) fromClient(r, shared.subarray(0, n));
      else moved(r, r.counters, r.activity, false, n);
      paid(x.gate, n);
      // A short read emptied the socket: the next arrival is a new edge. Not
      // so for a FIN that came with the data: its edge is spent already.
      if (n < cap && !x.closing && !x.tls) x.readable = false;
      forward(r, y, n);
    } else if (n === 0) {
      ended(r, x, y);
    } else if (n === -sys.E.EAGAIN) {
      x.readable = false;
    } else if (n !== -sys.E.EINTR) {
      fail(r, x);
    }
  }
}

/** Bytes read from the client: counted, and copied to the mirror when there is one. */
function fromClient(r: Relay, bytes: Uint8Array): void {
  moved(r, r.counters, r.activity, true, bytes.length);
  r.mirror?.copy(bytes);
}

/** `x`'s limit is spent: it is read again when the budget is back (its readiness is kept). */
function pause(r: Relay, x: Side): void {
  const gate = x.gate!;
  hold(gate, () => {
    if (!gate.released && !r.done) progress(r);
  });
}

/** Sends `n` bytes of the shared buffer to `y`; what it does not take waits in `y.pending`. */
function forward(r: Relay, y: Side, n: number): void {
  const sent = y.writable ? writeTo(y, shared, n) : -sys.E.EAGAIN;
  if (sent === n) return;
  if (sent < 0 && sent !== -sys.E.EAGAIN && sent !== -sys.E.EINTR) return fail(r, y);
  y.writable = false;
  y.pending = shared.slice(Math.max(0, sent), n);
}

/** Sends what waits for `x`. */
function flush(r: Relay, x: Side): void {
  const pending = x.pending!;
  const sent = writeTo(x, pending, pending.byteLength);
  if (sent < 0 && sent !== -sys.E.EAGAIN && sent !== -sys.E.EINTR) return fail(r, x);
  if (sent < pending.byteLength) {
    x.writable = false;
    x.pending = pending.subarray(Math.max(0, sent));
    return;
  }
  x.pending = null;
  r.activity.at = Date.now();
}

/**
 * `x`'s stream ended: passed on to `y` at once. `y` has taken all that came
 * before it, since `pump` reads `x` only while nothing waits for `y`.
 */
function ended(r: Relay, x: Side, y: Side): void {
  x.reading = false;
  x.readable = false;
  r.firstEnd ??= x === r.a ? "a" : "b";
  if (x === r.a) r.mirror?.end();
  if (y.tls) ssl.closeNotify(y.tls);
  // When y's own stream is over too, the relay is done: closing sends the FIN.
  if (y.reading || x.pending) sys.shutdownWrite(y.fd);
}

/**
 * Reads from a side, through its TLS when it has one: bytes, 0 at the end,
 * or -errno. TLS gives a record per read: records are read on until `len`
 * is filled or it waits, so the other side gets one send, not one per
 * record. An end or failure after some bytes is kept for the next read.
 */
function readFrom(x: Side, buf: Uint8Array, len: number): number {
  if (!x.tls) return sys.recv(x.fd, buf, len);
  if (x.deferred !== 1) return x.deferred;
  let got = 0;
  while (got < len) {
    const n = ssl.read(x.tls, got === 0 ? buf : buf.subarray(got), len - got);
    if (n > 0) got += n;
    else if (got === 0) return n;
    else {
      if (n !== -sys.E.EAGAIN) x.deferred = n;
      return got;
    }
  }
  return got;
}

/**
 * Writes to a side, through its TLS when it has one: bytes taken, or
 * -errno. A short count means the socket is full, as with send: TLS
 * writes a record at a time, so it is written on until all is taken or
 * the socket is full (no edge would come for a socket never filled).
 */
function writeTo(x: Side, buf: Uint8Array, len: number): number {
  if (!x.tls) return sys.send(x.fd, buf, len);
  let taken = 0;
  while (taken < len) {
    const n = ssl.write(x.tls, taken === 0 ? buf : buf.subarray(taken), len - taken);
    if (n <= 0) return taken > 0 ? taken : n;
    taken += n;
  }
  return taken;
}

/** A failure on `x` (reset, broken pipe, error): the relay ends at once. */
function fail(r: Relay, x: Side): void {
  relayFailed(r, x === r.a ? "a" : "b", r.onEnd);
}
