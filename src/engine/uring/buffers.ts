/**
 * Provided buffers: a pool the kernel takes one buffer from when data
 * arrives for a receive, registered as a ring bal refills as buffers come
 * back. An idle connection holds none.
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
  };
  for (let id = 0; id < count; id++) giveBuffer(b, id);
  return b;
}

/** Hands buffer `id` back to the kernel. */
export function giveBuffer(b: BufferRing, id: number): void {
  if (!(id >= 0 && id < b.count)) throw new RangeError(`buffer ${id} is not one of ${b.count}`);
  const tail = b.tail[0];
  const at = (tail & (b.count - 1)) * 16;
  setU64(b.entries, at, b.pool.address + id * b.size);
  b.entries.setUint32(at + 8, b.size, true);
  b.entries.setUint16(at + 12, id, true);
  b.tail[0] = (tail + 1) & 0xffff;
}
