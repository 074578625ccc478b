/**
 * One io_uring instance: its submission and completion rings, the
 * submission entries, and a ring of provided buffers, all in memory bal
 * allocates itself (`IORING_SETUP_NO_MMAP`) and views as typed arrays. No
 * pointer object is ever made, so the scoped `--allow-ffi` of the release
 * flags is enough; FFI is needed only to set up, enter and register.
 *
 * This is unsafe code beside `../linux/ffi.ts`: the kernel reads and
 * writes the memory whose addresses go into an entry. Every address comes
 * from {@link slot} or a buffer the caller keeps referenced until its
 * completion, and every length is checked against the memory it names.
 *
 * Completion work runs cooperatively (`COOP_TASKRUN`): on this thread,
 * when it next enters the kernel, and a sleeping thread is woken for it.
 * Not `DEFER_TASKRUN`, which runs it only inside `io_uring_enter`: its
 * eventfd signal comes from the network's softirq, and Linux defers that
 * one through RCU, 14 ms here. A loop asleep on the eventfd then served one
 * request per 22 ms, or 7,000 a second at 50 connections (timers due every
 * millisecond had hidden it under load).
 *
 * Ordering: the kernel writes completions from this thread (or an io-wq
 * worker, rarely), so the completion tail is read with `Atomics.load`
 * before the entries behind it. The entries bal writes are read by the
 * kernel only inside `io_uring_enter`, called by this thread.
 *
 * @module
 */
import * as sys from "../linux/ffi.ts";
import { describeErrno } from "../../net/errno.ts";
import { PAGE, type Region, region, setU64 } from "./memory.ts";
import { type BufferRing, bufferRing, bufferTaken, giveBuffer, widenRing } from "./buffers.ts";

export { bufferTaken, giveBuffer, widenRing };
export type { BufferRing };

const SQE_WORDS = 16;
const CQE_BYTES = 16;
/** Room for one socket address per submission entry (sockaddr_in6 is 28 bytes). */
const ADDRESS_BYTES = 32;

/** io_uring_setup flags (include/uapi/linux/io_uring.h). */
const SETUP = {
  CQSIZE: 1 << 3,
  SUBMIT_ALL: 1 << 7,
  COOP_TASKRUN: 1 << 8,
  TASKRUN_FLAG: 1 << 9,
  SINGLE_ISSUER: 1 << 12,
  NO_MMAP: 1 << 14,
  NO_SQARRAY: 1 << 16,
};

/** Opcodes bal uses. */
export const OP = {
  POLL_ADD: 6,
  ACCEPT: 13,
  ASYNC_CANCEL: 14,
  CONNECT: 16,
  CLOSE: 19,
  SHUTDOWN: 34,
  SEND: 26,
  RECV: 27,
} as const;

const IOSQE_BUFFER_SELECT = 1 << 5;
const IOSQE_CQE_SKIP_SUCCESS = 1 << 6;
const ACCEPT_MULTISHOT = 1 << 0;
const RECV_MULTISHOT = 1 << 1;
const CANCEL_ALL = 1 << 0;
const CANCEL_FD = 1 << 1;
const ENTER_GETEVENTS = 1;
const REGISTER_PROBE = 8;
const REGISTER_EVENTFD = 4;
const CQ_EVENTFD_DISABLED = 1;
const SQ_TASKRUN = 1 << 2;
/** A completion's flags: it used a provided buffer (its id in the top 16 bits), more will come. */
export const CQE_F_BUFFER = 1;
export const CQE_F_MORE = 2;
/** Poll bits (poll.h). */
export const POLL = { IN: 0x1, OUT: 0x4, ERR: 0x8, HUP: 0x10 };

/** A ring and everything it owns. */
export interface Ring {
  readonly fd: number;
  readonly sqes: Uint32Array;
  readonly sqeBytes: Uint8Array;
  readonly words: Uint32Array;
  readonly cqes: Int32Array;
  /** Word offsets of the ring fields in `words`. */
  readonly at: {
    sqHead: number;
    sqTail: number;
    sqFlags: number;
    cqHead: number;
    cqTail: number;
    cqFlags: number;
    cqes: number;
  };
  readonly sqMask: number;
  readonly sqEntries: number;
  readonly cqMask: number;
  /** Entries written since the last enter. */
  pending: number;
  /**
   * Set while the loop waits on its eventfd: an entry written meanwhile
   * (from a callback of Deno's own loop) must wake it to be submitted.
   */
  wake: (() => void) | null;
  sqTail: number;
  readonly buffers: BufferRing;
  /**
   * A connect's socket address, one slot per submission entry: the kernel
   * copies it when it takes the entry, and the slot is not reused before.
   */
  readonly addresses: Region;
  /** Memory the kernel holds addresses of, kept alive with the ring. */
  readonly keep: Region[];
}

/** What a ring is made with. */
export interface RingSize {
  entries: number;
  completions: number;
  /** Provided buffers: how many (a power of two) and of what size. */
  buffers: number;
  bufferSize: number;
}

/**
 * Sets up a ring of `size` with every opcode bal uses supported; the ring,
 * or why not (the errno's words: a container's seccomp profile shows as
 * EPERM or ENOSYS).
 */
export function createRing(size: RingSize): Ring | string {
  const params = new Uint8Array(120);
  const pv = new DataView(params.buffer);
  const ringBytes = 256 + size.completions * CQE_BYTES;
  const rings = region(Math.ceil(ringBytes / PAGE) * PAGE);
  const sqeMem = region(size.entries * SQE_WORDS * 4);
  pv.setUint32(0, size.entries, true);
  pv.setUint32(4, size.completions, true);
  pv.setUint32(
    8,
    SETUP.CQSIZE | SETUP.SUBMIT_ALL | SETUP.COOP_TASKRUN | SETUP.TASKRUN_FLAG |
      SETUP.SINGLE_ISSUER | SETUP.NO_MMAP | SETUP.NO_SQARRAY,
    true,
  );
  setU64(pv, 40 + 32, sqeMem.address);
  setU64(pv, 80 + 32, rings.address);
  const fd = sys.uringSetup(size.entries, params);
  if (fd < 0) return `io_uring_setup: ${describeErrno(-fd)}`;
  const off = (base: number, field: number) => pv.getUint32(base + field, true) / 4;
  const words = new Uint32Array(
    rings.bytes.buffer,
    rings.bytes.byteOffset,
    rings.bytes.byteLength / 4,
  );
  const at = {
    sqHead: off(40, 0),
    sqTail: off(40, 4),
    sqFlags: off(40, 16),
    cqHead: off(80, 0),
    cqTail: off(80, 4),
    cqFlags: off(80, 24),
    cqes: off(80, 20),
  };
  if (pv.getUint32(80 + 20, true) + size.completions * CQE_BYTES > rings.bytes.byteLength) {
    sys.close(fd);
    return "io_uring_setup: the completion ring does not fit the memory given";
  }
  const missing = unsupported(fd);
  if (missing) {
    sys.close(fd);
    return missing;
  }
  const addresses = region(size.entries * ADDRESS_BYTES);
  const buffers = bufferRing(fd, size.buffers, size.bufferSize);
  if (typeof buffers === "string") {
    sys.close(fd);
    return buffers;
  }
  return {
    fd,
    sqes: new Uint32Array(
      sqeMem.bytes.buffer,
      sqeMem.bytes.byteOffset,
      sqeMem.bytes.byteLength / 4,
    ),
    sqeBytes: sqeMem.bytes,
    words,
    cqes: new Int32Array(rings.bytes.buffer, rings.bytes.byteOffset, rings.bytes.byteLength / 4),
    at,
    sqMask: words[off(40, 8)],
    sqEntries: words[off(40, 12)],
    cqMask: words[off(80, 8)],
    pending: 0,
    wake: null,
    sqTail: words[at.sqTail],
    buffers,
    addresses,
    keep: [rings, sqeMem, addresses, buffers.ring, buffers.pool],
  };
}

/** Null when the kernel supports every opcode bal uses, else which it lacks. */
function unsupported(fd: number): string | null {
  const probe = new Uint8Array(16 + 256 * 8);
  const r = sys.uringRegister(fd, REGISTER_PROBE, probe, 256);
  if (r < 0) return `io_uring probe: ${describeErrno(-r)}`;
  const missing = Object.entries(OP).filter(([, op]) =>
    op > probe[0] || (probe[16 + op * 8 + 2] & 1) === 0
  );
  return missing.length ? `io_uring lacks ${missing.map(([name]) => name).join(", ")}` : null;
}

/** Registers an eventfd the kernel signals on completions (while the ring lets it). */
export function registerEventFd(ring: Ring, eventFd: number): number {
  const arg = new Uint8Array(4);
  new DataView(arg.buffer).setInt32(0, eventFd, true);
  return sys.uringRegister(ring.fd, REGISTER_EVENTFD, arg, 1);
}

/** Lets the kernel signal the eventfd (before waiting on it), or not (while busy). */
export function eventFdSignals(ring: Ring, on: boolean): void {
  const i = ring.at.cqFlags;
  ring.words[i] = on ? ring.words[i] & ~CQ_EVENTFD_DISABLED : ring.words[i] | CQ_EVENTFD_DISABLED;
}

/** Whether the kernel holds completion work it has not run yet: the loop enters again before it waits. */
export function workPending(ring: Ring): boolean {
  return (ring.words[ring.at.sqFlags] & SQ_TASKRUN) !== 0;
}

/** The next free entry's first word, zeroed; submits what is queued when the ring is full. */
function slot(ring: Ring): number {
  if (ring.sqTail - ring.words[ring.at.sqHead] >= ring.sqEntries) enter(ring, 0);
  const w = (ring.sqTail & ring.sqMask) * SQE_WORDS;
  ring.sqes.fill(0, w, w + SQE_WORDS);
  ring.sqTail = (ring.sqTail + 1) >>> 0;
  ring.pending++;
  if (ring.wake) {
    ring.wake();
    ring.wake = null;
  }
  return w;
}

/** Writes an entry's common fields; returns its first word. */
function prep(ring: Ring, op: number, fd: number, userData: number, flags = 0): number {
  const w = slot(ring);
  ring.sqes[w] = op | (flags << 8);
  ring.sqes[w + 1] = fd >>> 0;
  ring.sqes[w + 8] = userData >>> 0;
  return w;
}

function setAddress(ring: Ring, w: number, address: number, len: number): void {
  ring.sqes[w + 4] = address % 0x100000000;
  ring.sqes[w + 5] = Math.floor(address / 0x100000000);
  ring.sqes[w + 6] = len;
}

/** Accepts clients of listener `fd` until cancelled (one completion each, F_MORE while armed). */
export function prepAccept(ring: Ring, fd: number, userData: number): void {
  const w = prep(ring, OP.ACCEPT, fd, userData);
  ring.sqes[w] |= ACCEPT_MULTISHOT << 16;
  ring.sqes[w + 7] = 0o4000 | 0o2000000; // SOCK_NONBLOCK | SOCK_CLOEXEC
}

/** Connects socket `fd` to an encoded socket `address`; completes with 0 or -errno. */
export function prepConnect(ring: Ring, fd: number, userData: number, address: Uint8Array): void {
  if (address.byteLength === 0 || address.byteLength > ADDRESS_BYTES) {
    throw new RangeError(
      `a socket address of ${address.byteLength} bytes (at most ${ADDRESS_BYTES})`,
    );
  }
  const w = prep(ring, OP.CONNECT, fd, userData);
  const at = (w / SQE_WORDS) * ADDRESS_BYTES;
  ring.addresses.bytes.set(address, at);
  // The kernel wants the length in addr2 and refuses a connect with len set.
  setAddress(ring, w, ring.addresses.address + at, 0);
  ring.sqes[w + 2] = address.byteLength;
}

/**
 * Receives into a provided buffer, picked by the kernel when data arrives;
 * at most `max` bytes when it is below the buffer's size (a bandwidth limit).
 */
export function prepRecvBuffered(ring: Ring, fd: number, userData: number, max = 0): void {
  const w = prep(ring, OP.RECV, fd, userData, IOSQE_BUFFER_SELECT);
  if (max > 0 && max < ring.buffers.size) ring.sqes[w + 6] = max;
  ring.sqes[w + 10] = ring.buffers.group;
}

/**
 * Receives into provided buffers until cancelled, the stream ends or fails,
 * or the pool is empty (ENOBUFS): a completion per receive, CQE_F_MORE on
 * all but the last. The kernel keeps its wait on the socket armed between
 * receives, where a single receive arms and disarms it each time.
 */
export function prepRecvMultishot(ring: Ring, fd: number, userData: number): void {
  const w = prep(ring, OP.RECV, fd, userData, IOSQE_BUFFER_SELECT);
  ring.sqes[w] |= RECV_MULTISHOT << 16;
  ring.sqes[w + 10] = ring.buffers.group;
}

/** Receives into `buf` from `offset` on (kept referenced by the caller until the completion). */
export function prepRecvInto(
  ring: Ring,
  fd: number,
  userData: number,
  buf: Uint8Array,
  offset: number,
): void {
  if (!(offset >= 0 && offset < buf.byteLength)) throw new RangeError("receive past the buffer");
  const w = prep(ring, OP.RECV, fd, userData);
  setAddress(ring, w, sys.addressOf(buf) + offset, buf.byteLength - offset);
}

/**
 * Sends `len` bytes of `buf` from `offset` (kept referenced by the caller
 * until the completion), all of them unless the socket fails, never
 * raising SIGPIPE.
 */
export function prepSend(
  ring: Ring,
  fd: number,
  userData: number,
  buf: Uint8Array,
  offset: number,
  len: number,
): void {
  if (!(offset >= 0 && len > 0 && offset + len <= buf.byteLength)) {
    throw new RangeError(`send of ${len} at ${offset} is outside a buffer of ${buf.byteLength}`);
  }
  const w = prep(ring, OP.SEND, fd, userData);
  setAddress(ring, w, sys.addressOf(buf) + offset, len);
  ring.sqes[w + 7] = 0x4000 | 0x100; // MSG_NOSIGNAL | MSG_WAITALL
}

/**
 * Sends `len` bytes of provided buffer `id` from `offset` (the buffer stays
 * the sender's until the completion), all of them unless the socket fails.
 */
export function prepSendBuffer(
  ring: Ring,
  fd: number,
  userData: number,
  id: number,
  offset: number,
  len: number,
): void {
  const b = ring.buffers;
  if (!(id >= 0 && id < b.count && offset >= 0 && len > 0 && offset + len <= b.size)) {
    throw new RangeError(`send of ${len} at ${offset} of buffer ${id} is outside the pool`);
  }
  const w = prep(ring, OP.SEND, fd, userData);
  setAddress(ring, w, b.pool.address + id * b.size + offset, len);
  ring.sqes[w + 7] = 0x4000 | 0x100; // MSG_NOSIGNAL | MSG_WAITALL
}

/** Completes once `fd` has any of `events` (POLL bits). */
export function prepPoll(ring: Ring, fd: number, userData: number, events: number): void {
  const w = prep(ring, OP.POLL_ADD, fd, userData);
  ring.sqes[w + 7] = events;
}

/** Cancels every operation on `fd`; its own completion is skipped when it succeeds. */
export function prepCancelFd(ring: Ring, fd: number, userData: number): void {
  const w = prep(ring, OP.ASYNC_CANCEL, fd, userData, IOSQE_CQE_SKIP_SUCCESS);
  ring.sqes[w + 7] = CANCEL_FD | CANCEL_ALL;
}

/**
 * Closes `fd` at the ring's next submission, with the operations queued
 * before it: one system call fewer per socket. Its number stays taken
 * until then, so nothing else can be given it meanwhile.
 */
export function prepClose(ring: Ring, fd: number, userData: number): void {
  prep(ring, OP.CLOSE, fd, userData, IOSQE_CQE_SKIP_SUCCESS);
}

/** Ends `fd`'s sending side (its FIN) at the ring's next submission, after the operations before it. */
export function prepShutdownWrite(ring: Ring, fd: number, userData: number): void {
  const w = prep(ring, OP.SHUTDOWN, fd, userData, IOSQE_CQE_SKIP_SUCCESS);
  ring.sqes[w + 6] = 1; // SHUT_WR
}

/** Cancels the operation of `target` (its user data). */
export function prepCancel(ring: Ring, target: number, userData: number): void {
  const w = prep(ring, OP.ASYNC_CANCEL, -1, userData, IOSQE_CQE_SKIP_SUCCESS);
  ring.sqes[w + 4] = target >>> 0;
}

/** Called with each completion: its user data, result (or -errno) and flags. */
export type Reap = (userData: number, res: number, flags: number) => void;

/**
 * Submits what is queued and takes the completions there are (at most
 * `max`; the rest wait for the next call), calling `reap` for each;
 * returns how many. `wait` 0: does not block.
 */
export function enter(ring: Ring, wait: number, reap?: Reap, max = Infinity): number {
  entered(sys.uringEnter(ring.fd, queued(ring), wait, ENTER_GETEVENTS));
  return reap ? takeCompletions(ring, reap, max) : 0;
}

/**
 * Submits what is queued and waits on this thread, up to `ms`, for one
 * completion; then takes what completed (at most `max`): how many.
 */
export function enterWaiting(ring: Ring, ms: number, reap: Reap, max = Infinity): number {
  entered(sys.uringEnterWait(ring.fd, queued(ring), 1, ENTER_GETEVENTS, ms));
  return takeCompletions(ring, reap, max);
}

/** Hands the queued entries to the kernel's view of the ring: how many to submit. */
function queued(ring: Ring): number {
  const submit = ring.pending;
  ring.words[ring.at.sqTail] = ring.sqTail;
  ring.pending = 0;
  return submit;
}

/** Throws on what io_uring_enter returned unless it is a result or a retry (ETIME: a wait ran out). */
function entered(r: number): void {
  if (r >= 0) return;
  const errno = -r;
  const { EINTR, EAGAIN, EBUSY, ETIME } = sys.E;
  if (errno !== EINTR && errno !== EAGAIN && errno !== EBUSY && errno !== ETIME) {
    throw new Error(`io_uring_enter: ${describeErrno(errno)}`);
  }
}

function takeCompletions(ring: Ring, reap: Reap, max: number): number {
  const { words, cqes, at, cqMask } = ring;
  let head = words[at.cqHead];
  const tail = Atomics.load(words, at.cqTail);
  let n = 0;
  for (; head !== tail && n < max; head = (head + 1) >>> 0, n++) {
    const i = at.cqes + (head & cqMask) * (CQE_BYTES / 4);
    const userData = words[i];
    const res = cqes[i + 2];
    const flags = words[i + 3];
    // Marked taken first: a completion whose handler throws must not come back.
    words[at.cqHead] = (head + 1) >>> 0;
    reap(userData, res, flags);
  }
  return n;
}
