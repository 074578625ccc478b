/**
 * Freed memory goes back to the system once a burst of connections is over.
 *
 * glibc keeps what a process frees for reuse, and a large block raises its
 * threshold for giving any back, so a bal that served a burst kept its peak
 * RSS: the first thousand connections left 4-5 MB in the arena of V8's
 * compiler thread, reused by nothing (docs/performance.md). Once the data
 * planes' counts have stood still for a tick after they moved, the control
 * plane asks libc for a trim: well under a millisecond, once per quiet spell,
 * and never while connections keep coming.
 *
 * @module
 */
import type { PlaneStats } from "../stats/counters.ts";
import { trimHeap } from "../engine/linux/ffi.ts";
import { logger } from "../log.ts";

const log = logger("server");

/** What the trim policy remembers between ticks: plain numbers. */
export interface TrimWatch {
  /** The activity count at the last tick. */
  seen: number;
  /** The activity count at the last trim (-1: none yet, so start-up's garbage goes too). */
  trimmed: number;
}

/** A watch that trims at the first quiet tick. */
export function trimWatch(): TrimWatch {
  return { seen: 0, trimmed: -1 };
}

/**
 * Connections accepted plus connections closed, over every plane: a count
 * that moves whenever connections come or go, and never goes back.
 */
export function activity(planes: readonly PlaneStats[]): number {
  let n = 0;
  for (const p of planes) n += 2 * p.accepted - p.active;
  return n;
}

/**
 * Whether to trim at this tick: the count stood still since the last tick
 * (the burst is over) and moved since the last trim (there is something to
 * give back). Records the tick, and the trim when it is due.
 */
export function trimDue(watch: TrimWatch, now: number): boolean {
  const quiet = now === watch.seen;
  watch.seen = now;
  if (!quiet || now === watch.trimmed) return false;
  watch.trimmed = now;
  return true;
}

/** One tick of the policy over the planes' counts, trimming when it is due. */
export function trimWhenQuiet(watch: TrimWatch, planes: readonly PlaneStats[]): void {
  if (!trimDue(watch, activity(planes))) return;
  const before = Deno.memoryUsage().rss;
  const start = performance.now();
  if (trimHeap() === null) return;
  const ms = performance.now() - start;
  const after = Deno.memoryUsage().rss;
  log.debug("gave {kib} KiB of freed memory back to the system in {ms} ms (RSS {rss_mib} MiB)", {
    event: "heap_trimmed",
    kib: Math.round((before - after) / 1024),
    ms: Math.round(ms * 100) / 100,
    rss_mib: Math.round(after / 1048576 * 10) / 10,
  });
}
