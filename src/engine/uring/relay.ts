/**
 * The io_uring engine's relay between a client (`a`) and a backend (`b`).
 * Each side has one receive armed at most, into provided buffers the
 * kernel picks when data arrives, so an idle connection holds no buffer.
 * It is multishot (one entry for every receive until it is cancelled or
 * the stream ends) unless a bandwidth limit caps each read.
 * What one side receives is queued for the other and sent from that same
 * buffer, one send at a time per socket (two sends in flight on one socket
 * could interleave their bytes); the buffer goes back to the kernel once
 * sent.
 *
 * Backpressure: once a side has QUEUE_MAX buffers waiting for its peer,
 * its peer's receive is cancelled and not armed again until the queue is
 * shorter, so a client that stops reading holds that many buffers of the
 * shared pool (and what the kernel received before the cancel), never the
 * pool.
 *
 * An end of stream is passed on as `shutdown(SHUT_WR)` once everything
 * received before it is sent (half-close), through the ring like the
 * sockets' closes: no system call of its own; a reset or error on either
 * side ends both.
 *
 * @module
 */
import * as sys from "../linux/ffi.ts";
import { moved, type Relayed } from "../plane.ts";
import { relayFailed } from "../relayed.ts";
import {
  CQE_F_BUFFER,
  CQE_F_MORE,
  prepCancel,
  prepRecvBuffered,
  prepRecvMultishot,
  prepSend,
  prepSendBuffer,
  prepShutdownWrite,
} from "./ring.ts";
import { IGNORED, type UringLoop, userData } from "./loop.ts";
import { type Gate, hold, paid, room } from "../throttle.ts";
import type { MirrorLink } from "../mirror.ts";

/** Kinds of a relayed socket's operations (the low bits of their user data). */
export const KIND = { RECV: 1, SEND: 2, POLL: 3 } as const;

/** Buffers a side may have queued for its peer before that peer's reads pause. */
const QUEUE_MAX = 4;

/** Bytes waiting to be sent to a side: a provided buffer's (`id`), or bal's own (id -1). */
interface Chunk {
  readonly id: number;
  readonly bytes: Uint8Array;
  offset: number;
  readonly end: number;
}

/** One socket of a relay. */
export interface Side {
  readonly fd: number;
  readonly token: number;
  /** A receive is armed (until its last completion, the one without CQE_F_MORE). */
  receiving: boolean;
  /** Its armed receive is being cancelled: its peer's queue is full. */
  cancelling: boolean;
  /** A send is in flight (the queue's first chunk). */
  sending: boolean;
  /** Its end of stream has been read. */
  ended: boolean;
  /** What waits to be sent to it. */
  readonly queue: Chunk[];
  /** Its receive found no buffer and waits for one to come back. */
  starved: boolean;
  /** The bandwidth limit on reading it, or null. */
  readonly gate: Gate | null;
}

/** A relay between a client (`a`) and a backend (`b`): its progress for the session. */
export interface Relay extends Relayed {
  readonly loop: UringLoop;
  readonly a: Side;
  readonly b: Side;
  readonly activity: { at: number };
  readonly counters: { bytes_in: number; bytes_out: number };
  /** Called once, when both directions are done or one failed. */
  readonly onEnd: () => void;
  /** bal closed it: completions still in flight only give their buffers back. */
  closed: boolean;
  /** Where a copy of the client's bytes goes (its service's mirror), or null. */
  readonly mirror: MirrorLink | null;
}

/** A side of a relay for an open socket whose operations carry `token`, its reads limited by `gate`. */
export function side(fd: number, token: number, gate: Gate | null = null): Side {
  return {
    fd,
    token,
    receiving: false,
    cancelling: false,
    sending: false,
    ended: false,
    queue: [],
    starved: false,
    gate,
  };
}

/**
 * Starts relaying: `header` (the backend header with the client's early
 * bytes) goes to the backend before anything the client sends next; then
 * both sides receive.
 */
export function startRelay(r: Relay, header: Uint8Array | null): void {
  r.loop.rebind(r.a.token, (kind, res, flags) => onCompletion(r, r.a, kind, res, flags));
  r.loop.rebind(r.b.token, (kind, res, flags) => onCompletion(r, r.b, kind, res, flags));
  if (header) enqueue(r, r.b, { id: -1, bytes: header, offset: 0, end: header.length });
  receive(r, r.a);
  receive(r, r.b);
}

const peerOf = (r: Relay, x: Side) => x === r.a ? r.b : r.a;

function onCompletion(r: Relay, x: Side, kind: number, res: number, flags: number): void {
  if (kind === KIND.RECV) onReceived(r, x, res, flags);
  else if (kind === KIND.SEND) onSent(r, x, res);
  if (r.closed && quiet(x)) r.loop.forget(x.token);
}

/** Arms `x`'s receive unless one is in flight, its stream ended, or its peer's queue is full. */
function receive(r: Relay, x: Side): void {
  // Closed: its fd may be another socket's by now (a starved side is re-armed late).
  if (r.done || r.closed || x.receiving || x.ended) return;
  if (peerOf(r, x).queue.length >= QUEUE_MAX) return;
  const ud = userData(x.token, KIND.RECV);
  if (!x.gate) {
    x.receiving = true;
    return prepRecvMultishot(r.loop.ring, x.fd, ud);
  }
  // A limited side reads at most its budget at a time: one receive per read.
  const max = room(x.gate, r.loop.ring.buffers.size);
  if (max === 0) return pause(r, x);
  x.receiving = true;
  prepRecvBuffered(r.loop.ring, x.fd, ud, max);
}

/**
 * After a receive: `x`'s multishot receive stays armed while its peer keeps
 * up, and is cancelled once the peer's queue is full; a single one is armed again.
 */
function keepReceiving(r: Relay, x: Side): void {
  if (!x.receiving) return receive(r, x);
  if (x.cancelling || peerOf(r, x).queue.length < QUEUE_MAX) return;
  x.cancelling = true;
  prepCancel(r.loop.ring, userData(x.token, KIND.RECV), IGNORED);
}

/** `x`'s limit is spent: its receive is armed again when the budget is back. */
function pause(r: Relay, x: Side): void {
  const gate = x.gate!;
  hold(gate, () => {
    if (!gate.released) receive(r, x);
  });
}

function onReceived(r: Relay, x: Side, res: number, flags: number): void {
  if (!(flags & CQE_F_MORE)) {
    x.receiving = false;
    x.cancelling = false;
  }
  if (r.closed || r.done) {
    if (flags & CQE_F_BUFFER) r.loop.giveBack(flags >>> 16);
    return;
  }
  if (res > 0) {
    const id = flags >>> 16;
    const y = peerOf(r, x);
    const bytes = r.loop.ring.buffers.buffers[id];
    moved(r, r.counters, r.activity, x === r.a, res);
    paid(x.gate, res);
    if (x === r.a) r.mirror?.copy(bytes.subarray(0, res));
    enqueue(r, y, { id, bytes, offset: 0, end: res });
    return keepReceiving(r, x);
  }
  if (res === 0) return streamEnded(r, x);
  // Its own cancel (the peer's queue was full): armed again once the queue is shorter.
  if (res === -sys.E.ECANCELED) return receive(r, x);
  if (res === -sys.E.ENOBUFS) {
    // The pool is empty: this side reads again once a buffer comes back.
    x.starved = true;
    r.loop.onBufferBack(() => {
      x.starved = false;
      receive(r, x);
    });
    return;
  }
  fail(r, x);
}

/** Queues `chunk` for `y`, sending it at once when nothing else is being sent to `y`. */
function enqueue(r: Relay, y: Side, chunk: Chunk): void {
  y.queue.push(chunk);
  if (!y.sending) sendNext(r, y);
}

function sendNext(r: Relay, y: Side): void {
  const chunk = y.queue[0];
  if (!chunk) return;
  y.sending = true;
  const ud = userData(y.token, KIND.SEND);
  const len = chunk.end - chunk.offset;
  // A pool buffer's address is known; bal's own bytes (the backend header) are asked for theirs.
  if (chunk.id >= 0) prepSendBuffer(r.loop.ring, y.fd, ud, chunk.id, chunk.offset, len);
  else prepSend(r.loop.ring, y.fd, ud, chunk.bytes, chunk.offset, len);
}

function onSent(r: Relay, y: Side, res: number): void {
  y.sending = false;
  const chunk = y.queue[0];
  if (r.closed || r.done || res < 0) {
    if (r.closed || r.done) return releaseAll(r, y);
    return fail(r, y);
  }
  chunk.offset += res;
  if (chunk.offset < chunk.end) return sendNext(r, y);
  y.queue.shift();
  if (chunk.id >= 0) r.loop.giveBack(chunk.id);
  r.activity.at = Date.now();
  const x = peerOf(r, y);
  if (y.queue.length > 0) sendNext(r, y);
  else if (x.ended) passEnd(r, x, y);
  receive(r, x);
  finishIfDone(r);
}

/** `x`'s stream ended: passed on to its peer once all before it is sent. */
function streamEnded(r: Relay, x: Side): void {
  x.ended = true;
  r.firstEnd ??= x === r.a ? "a" : "b";
  if (x === r.a) r.mirror?.end();
  const y = peerOf(r, x);
  if (y.queue.length === 0 && !y.sending) passEnd(r, x, y);
  finishIfDone(r);
}

/**
 * Sends `y` the FIN of `x`'s stream, unless that ends the relay: `y`'s own
 * stream is over and nothing waits to go to `x`, so closing sends it.
 */
function passEnd(r: Relay, x: Side, y: Side): void {
  if (!y.ended || x.sending || x.queue.length > 0) prepShutdownWrite(r.loop.ring, y.fd, IGNORED);
}

function finishIfDone(r: Relay): void {
  const { a, b } = r;
  if (r.done || !a.ended || !b.ended || a.queue.length || b.queue.length) return;
  r.done = true;
  r.onEnd();
}

/** A failure on `x` (reset, broken pipe, error): the relay ends at once. */
function fail(r: Relay, x: Side): void {
  relayFailed(r, x === r.a ? "a" : "b", r.onEnd);
}

/** Gives back the buffers queued for `y` that no send holds any more. */
function releaseAll(r: Relay, y: Side): void {
  const keep = y.sending ? 1 : 0;
  for (const chunk of y.queue.splice(keep)) if (chunk.id >= 0) r.loop.giveBack(chunk.id);
}

/**
 * Stops a relay bal is closing: every operation on its sockets cancelled
 * (a send in flight keeps its buffer until its completion says the kernel
 * is done with it), the queued buffers given back.
 */
export function stopRelay(r: Relay): void {
  r.closed = true;
  for (const x of [r.a, r.b]) {
    if (x.receiving) prepCancel(r.loop.ring, userData(x.token, KIND.RECV), IGNORED);
    if (x.sending) prepCancel(r.loop.ring, userData(x.token, KIND.SEND), IGNORED);
    releaseAll(r, x);
    if (quiet(x)) r.loop.forget(x.token);
  }
}

/** True once no operation of `x` is in flight: its token can be forgotten. */
function quiet(x: Side): boolean {
  return !x.receiving && !x.sending;
}
