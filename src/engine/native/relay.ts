/**
 * The native engine's relay between a client and a backend socket, both
 * nonblocking and watched by the loop (level-triggered).
 *
 * Bytes go through one buffer shared by the whole data plane: a read is
 * sent on at once, so nothing stays in it. Only when a peer is slow (its
 * send returns short or EAGAIN) does the rest move to a buffer of that
 * connection's own, the source stops being read, and the slow side is
 * watched for EPOLLOUT until it has taken everything: backpressure, with no
 * memory held by connections whose peers keep up, idle ones included.
 *
 * An end of stream is passed on as `shutdown(SHUT_WR)` once what was read
 * before it is delivered (half-close); a reset or error on either side ends
 * both.
 *
 * @module
 */
import * as sys from "./ffi.ts";
import type { Loop } from "./loop.ts";

/** Size of the plane's shared buffer (one per thread). */
export const SHARED_BUFFER = 64 * 1024;
/** Reads per readiness event before other sockets get a turn. */
const READS_PER_EVENT = 4;
const shared = new Uint8Array(SHARED_BUFFER);

/** One socket of a relay. */
export interface Side {
  readonly fd: number;
  token: number;
  /** What the loop watches it for now. */
  mask: number;
  /** Still reading from it (its end of stream not seen yet). */
  reading: boolean;
  /** Bytes read from the other side that this one has not taken yet. */
  pending: Uint8Array | null;
  /** Half-close it once `pending` is delivered. */
  shutAfterFlush: boolean;
}

/** A relay between a client (`a`) and a backend (`b`). */
export interface Relay {
  readonly loop: Loop;
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
  /** Hears of bytes as they are read: `aToB` tells the direction. */
  readonly tally: (aToB: boolean, n: number) => void;
  /** Called once, when both directions are done or one failed. */
  readonly onEnd: () => void;
}

/** A side of a relay for an open socket. */
export function side(fd: number, token = 0): Side {
  return { fd, token, mask: 0, reading: true, pending: null, shutAfterFlush: false };
}

/**
 * Starts relaying: the client is added to the loop, the backend (already
 * there from its connect) gets the relay's handler.
 */
export function startRelay(r: Relay): void {
  const { loop, a, b } = r;
  a.mask = sys.C.EPOLLIN;
  a.token = loop.add(a.fd, a.mask, (ev) => onEvent(r, a, b, ev));
  b.mask = sys.C.EPOLLIN;
  loop.modify(b.token, b.fd, b.mask, (ev) => onEvent(r, b, a, ev));
}

const READABLE = sys.C.EPOLLIN | sys.C.EPOLLERR | sys.C.EPOLLHUP;

function onEvent(r: Relay, x: Side, y: Side, ev: number): void {
  if (r.done) return;
  if (ev & sys.C.EPOLLOUT && x.pending) flush(r, x, y);
  if (r.done) return;
  // A hang-up still leaves what was received to read: it ends as a read of 0.
  if (x.reading && !y.pending && ev & READABLE) readFrom(r, x, y);
  // A socket error (a reset): the connection is gone, whatever is left.
  if (!r.done && ev & sys.C.EPOLLERR) fail(r, x);
}

function readFrom(r: Relay, x: Side, y: Side): void {
  for (let i = 0; i < READS_PER_EVENT; i++) {
    const n = sys.recv(x.fd, shared, SHARED_BUFFER);
    if (n > 0) {
      r.activity.at = Date.now();
      if (x === r.a) r.aToB += n;
      else r.bToA += n;
      r.tally(x === r.a, n);
      forward(r, x, y, n);
      if (r.done || y.pending || n < SHARED_BUFFER) return;
    } else if (n === 0) {
      return ended(r, x, y);
    } else if (n === -sys.E.EAGAIN || n === -sys.E.EINTR) {
      return;
    } else {
      return fail(r, x);
    }
  }
}

/** Sends `n` bytes of the shared buffer to `y`; what it does not take waits in `y.pending`. */
function forward(r: Relay, x: Side, y: Side, n: number): void {
  const sent = sys.send(y.fd, shared, n);
  if (sent === n) return;
  if (sent < 0 && sent !== -sys.E.EAGAIN && sent !== -sys.E.EINTR) return fail(r, y);
  y.pending = shared.slice(Math.max(0, sent), n);
  watch(r, x, y);
}

/** `x`'s stream ended: passed on to `y` once `y` has what came before it. */
function ended(r: Relay, x: Side, y: Side): void {
  x.reading = false;
  r.firstEnd ??= x === r.a ? "a" : "b";
  if (y.pending) y.shutAfterFlush = true;
  else sys.shutdownWrite(y.fd);
  watch(r, x, y);
  finishIfDone(r);
}

/** Sends what waits for `x`, and once all of it is gone, reads from `y` again. */
function flush(r: Relay, x: Side, y: Side): void {
  const pending = x.pending!;
  const sent = sys.send(x.fd, pending, pending.byteLength);
  if (sent < 0 && sent !== -sys.E.EAGAIN && sent !== -sys.E.EINTR) return fail(r, x);
  if (sent < pending.byteLength) {
    x.pending = pending.subarray(Math.max(0, sent));
    return;
  }
  x.pending = null;
  r.activity.at = Date.now();
  if (x.shutAfterFlush) {
    x.shutAfterFlush = false;
    sys.shutdownWrite(x.fd);
  }
  watch(r, x, y);
  finishIfDone(r);
}

/** Watches both sides for what they need now: reads unless the other side is backed up, writes while backed up. */
function watch(r: Relay, x: Side, y: Side): void {
  setMask(r, x, (x.reading && !y.pending ? sys.C.EPOLLIN : 0) | (x.pending ? sys.C.EPOLLOUT : 0));
  setMask(r, y, (y.reading && !x.pending ? sys.C.EPOLLIN : 0) | (y.pending ? sys.C.EPOLLOUT : 0));
}

function setMask(r: Relay, s: Side, mask: number): void {
  if (s.mask === mask) return;
  s.mask = mask;
  r.loop.modify(s.token, s.fd, mask);
}

function finishIfDone(r: Relay): void {
  const { a, b } = r;
  if (a.reading || b.reading || a.pending || b.pending || a.shutAfterFlush || b.shutAfterFlush) {
    return;
  }
  r.done = true;
  r.onEnd();
}

/** A failure on `x` (reset, broken pipe, error): the relay ends at once. */
function fail(r: Relay, x: Side): void {
  if (r.done) return;
  r.failed = true;
  r.firstEnd ??= x === r.a ? "a" : "b";
  r.done = true;
  r.onEnd();
}
