/**
 * The state directory's lock (`bal.lock`), held for the process's life: one
 * bal per directory. On Linux it is a plain descriptor taken through libc,
 * so `bal upgrade` can hand it to the next bal with the listeners, and the
 * lock never lapses between the two. Elsewhere (or without libc) it is
 * Deno's, and an upgrade cannot carry it.
 *
 * @module
 */
import type { StatePaths } from "./paths.ts";
import { closeFd, lockPath } from "../engine/linux/ffi_unix.ts";

/** A held lock. */
export interface InstanceLock {
  /** Its descriptor, when it can be handed over; null when it is Deno's. */
  readonly fd: number | null;
  /** Lets go of it (the next bal holds its own copy of a handed-over one). */
  close(): void;
}

/**
 * Takes the state directory's lock for this process's life, or returns null
 * when another process holds it. The kernel drops the lock when its last
 * holder exits, however it dies (`kill -9` included), so a lock is never
 * stale; of two bals starting at the same moment, exactly one gets it.
 */
export async function lockInstance(paths: StatePaths): Promise<InstanceLock | null> {
  let fd: number | null | undefined;
  try {
    fd = Deno.build.os === "linux" ? lockPath(paths.lock) : undefined;
  } catch {
    // libc cannot be loaded (no --allow-ffi): Deno's lock below.
  }
  if (fd === null) return null;
  if (fd !== undefined) return heldFd(fd);
  const file = await Deno.open(paths.lock, { create: true, write: true, mode: 0o600 });
  if (await file.tryLock(true)) return { fd: null, close: () => file.close() };
  file.close();
  return null;
}

/** A lock held through descriptor `fd` (taken, or received from the bal before). */
export function heldFd(fd: number): InstanceLock {
  let open = true;
  return {
    fd,
    close: () => {
      if (!open) return;
      open = false;
      closeFd(fd);
    },
  };
}
