/**
 * Memory bal hands to the kernel for io_uring: page-aligned regions of its
 * own (no pointer object needed), never freed, and how a 64-bit address is
 * written where the kernel reads it.
 *
 * @module
 */
import * as sys from "../linux/ffi.ts";

/** The page size the kernel maps regions in (4 KiB on x86_64 and on arm64's usual kernels). */
export const PAGE = 4096;

/** Memory the kernel may use: a page-aligned region and its address. */
export interface Region {
  bytes: Uint8Array;
  address: number;
}

/**
 * Every region ever handed to a kernel, kept for the life of the process.
 * Closing a ring does not end the kernel's use of its memory at once: its
 * teardown runs later and may still write completions of cancelled
 * operations into the rings. Memory the GC freed and malloc reused would
 * be corrupted then (seen: "free(): invalid next size" after a self-check
 * ring was closed). A process makes a ring per data plane and one for the
 * self-check, so what this keeps is bounded.
 */
const handedToKernel: Uint8Array[] = [];

/** `len` zeroed bytes starting on a page boundary, never freed (see {@link handedToKernel}). */
export function region(len: number): Region {
  const raw = new Uint8Array(len + PAGE);
  handedToKernel.push(raw);
  const skew = sys.addressOf(raw) % PAGE;
  const bytes = raw.subarray(skew === 0 ? 0 : PAGE - skew, (skew === 0 ? 0 : PAGE - skew) + len);
  return { bytes, address: sys.addressOf(bytes) };
}

/** Writes `value` (an address below 2^53) as a little-endian u64 at byte `at`. */
export function setU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, value % 0x100000000, true);
  view.setUint32(at + 4, Math.floor(value / 0x100000000), true);
}
