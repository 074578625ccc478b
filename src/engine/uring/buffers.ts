/**
 * Provided buffers: a pool the kernel takes one buffer from when data
 * arrives for a receive, registered as a ring bal refills as buffers come
 * back. An idle connection holds none.
 *
 * The ring holds a window of the pool, not all of it, refilled from the
 * buffers given back last: a receive then copies into memory still in the
 * cache, and memory the traffic never needs is never touched. With the
 * whole pool posted the kernel took buffers in order through 16 MiB: one
 * bulk stream grew bal by 27 MiB instead of 13, and the copy was 12.5 % of
 * its samples instead of 10.2. The window doubles whenever a receive finds
 * it empty, up to the whole pool.
 *
 * @module
 */
import * as sys from "../linux/ffi.ts";
import { describeErrno } from "../../net/errno.ts";
import { PAGE, type Region, region, setU64 } from "./memory.ts";

const REGISTER_PBUF_RING = 22;

/** Provided buffers: the kernel picks one when data arrives, bal gives it back when sent. */
export interface BufferRing {
  readonly group: number;
  readonly size: number;
  readonly count: number;
  /** Buffer `id`'s bytes. */
  readonly buffers: Uint8Array[];
  readonly entries: DataView;
  readonly tail: Uint16Array;
  /** The ring of entries, and the buffers' memory. */
  readonly ring: Region;
  readonly pool: Region;
  /** Which buffers are where: the kernel's window and bal's spares. */
  readonly window: BufferWindow;
}

/** How many buffers the kernel may hold at once, and the spares bal keeps back. */
export interface BufferWindow {
  /** The most the kernel's ring holds at once. */
  size: number;
  /** Buffers in the kernel's ring, not yet taken by a receive. */
  posted: number;
  /** Buffers neither the kernel's nor a connection's: the latest given back last. */
  readonly spare: number[];
  /** The pool's size: the window never grows past it. */
  readonly count: number;
}

/** The window a ring starts with: 1 MiB of 64 KiB buffers, within a core's cache. */
export const FIRST_WINDOW = 16;

/** A window over `count` buffers, all spare, buffer 0 on top. */
export function bufferWindow(count: number, size = FIRST_WINDOW): BufferWindow {
  return {
    size: Math.min(size, count),
    posted: 0,
    spare: Array.from({ length: count }, (_, i) => count - 1 - i),
    count,
  };
}

/**
 * The spare to post next while the kernel's window has room (the latest
 * given back), counted as posted; -1 when the window is full or no spare
 * is left.
 */
export function nextToPost(w: BufferWindow): number {
  if (w.posted >= w.size || w.spare.length === 0) return -1;
  w.posted++;
  return w.spare.pop()!;
}

/** A receive found the kernel's ring empty: the window doubles, up to the pool. */
export function widen(w: BufferWindow): void {
  w.size = Math.min(w.count, w.size * 2);
}

/** Registers `count` buffers of `size` bytes as provided-buffer group 0. */
export function bufferRing(fd: number, count: number, size: number): BufferRing | string {
  if (count & (count - 1) || count > 32768) throw new RangeError("buffer count: a power of 2");
  const ringMem = region(Math.max(PAGE, count * 16));
  const pool = region(count * size);
  const reg = new Uint8Array(40);
  const rv = new DataView(reg.buffer);
  setU64(rv, 0, ringMem.address);
  rv.setUint32(8, count, true);
  rv.setUint16(12, 0, true);
  const r = sys.uringRegister(fd, REGISTER_PBUF_RING, reg, 1);
  if (r < 0) return `io_uring buffer ring: ${describeErrno(-r)}`;
  const entries = new DataView(
    ringMem.bytes.buffer,
    ringMem.bytes.byteOffset,
    ringMem.bytes.byteLength,
  );
  const b: BufferRing = {
    group: 0,
    size,
    count,
    buffers: Array.from({ length: count }, (_, i) => pool.bytes.subarray(i * size, (i + 1) * size)),
    entries,
    // The ring's tail is the u16 at byte 14, inside entry 0: written alone, nothing beside it.
    tail: new Uint16Array(ringMem.bytes.buffer, ringMem.bytes.byteOffset + 14, 1),
    ring: ringMem,
    pool,
    window: bufferWindow(count),
  };
  postSpares(b);
  return b;
}

/** A receive's completion says the kernel took one of the posted buffers: the window is refilled. */
export function bufferTaken(b: BufferRing): number {
  b.window.posted--;
  return postSpares(b);
}

/**
 * Buffer `id` is bal's again: kept as the first spare, and posted when the
 * window has room. How many buffers were posted.
 */
export function giveBuffer(b: BufferRing, id: number): number {
  if (!(id >= 0 && id < b.count)) throw new RangeError(`buffer ${id} is not one of ${b.count}`);
  b.window.spare.push(id);
  return postSpares(b);
}

/** Receives found no buffer: the window doubles. How many buffers were posted. */
export function widenRing(b: BufferRing): number {
  widen(b.window);
  return postSpares(b);
}

function postSpares(b: BufferRing): number {
  let n = 0;
  for (let id = nextToPost(b.window); id >= 0; id = nextToPost(b.window)) (post(b, id), n++);
  return n;
}

/** Writes buffer `id` into the kernel's ring. */
function post(b: BufferRing, id: number): void {
  const tail = b.tail[0];
  const at = (tail & (b.count - 1)) * 16;
  setU64(b.entries, at, b.pool.address + id * b.size);
  b.entries.setUint32(at + 8, b.size, true);
  b.entries.setUint16(at + 12, id, true);
  b.tail[0] = (tail + 1) & 0xffff;
}
