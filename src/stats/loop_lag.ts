/**
 * How late the event loop runs a timer: the delay every engine adds to
 * the control plane's work (health checks, signals, status) and to its own
 * timeouts. A sampler asks for a timer every SAMPLE_MS and records how much
 * later than asked it ran, as a histogram (for /metrics) and the latest
 * minute of samples (for status).
 *
 * @module
 */

/** Upper bounds of the histogram's buckets, in seconds; one more counts the rest. */
export const LAG_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1];
/** How often the loop is sampled. */
const SAMPLE_MS = 100;
/** Samples kept for status: the last minute. */
const RECENT = 600;

/** The lag measured so far. */
export interface LoopLag {
  /** Counts per bucket of LAG_BUCKETS, then over the last bound. */
  readonly buckets: number[];
  sumSeconds: number;
  count: number;
  /** The latest samples, ms, oldest overwritten first. */
  readonly recent: Float64Array;
}

/** Lag of the latest minute, ms, as status shows it. */
export interface LagSummary {
  p50: number;
  p99: number;
  max: number;
}

/** An empty record. */
export function emptyLag(): LoopLag {
  return {
    buckets: new Array(LAG_BUCKETS.length + 1).fill(0),
    sumSeconds: 0,
    count: 0,
    recent: new Float64Array(RECENT),
  };
}

/** Records one sample of `ms` late. */
export function recordLag(lag: LoopLag, ms: number): void {
  const seconds = ms / 1000;
  let i = LAG_BUCKETS.findIndex((bound) => seconds <= bound);
  if (i < 0) i = LAG_BUCKETS.length;
  lag.buckets[i]++;
  lag.sumSeconds += seconds;
  lag.recent[lag.count % RECENT] = ms;
  lag.count++;
}

/** p50, p99 and the most of the latest minute (zeros before the first sample). */
export function summarizeLag(lag: LoopLag): LagSummary {
  const n = Math.min(lag.count, RECENT);
  if (n === 0) return { p50: 0, p99: 0, max: 0 };
  const sorted = lag.recent.slice(0, n).sort();
  // Nearest rank: the smallest sample with at least q of them at or below it.
  const at = (q: number) => Math.round(sorted[Math.max(0, Math.ceil(q * n) - 1)] * 10) / 10;
  return { p50: at(0.5), p99: at(0.99), max: Math.round(sorted[n - 1] * 10) / 10 };
}

/** Samples this thread's event loop until `stop` is called; the timer keeps no process alive. */
export function sampleLoop(lag: LoopLag): { stop(): void } {
  let timer: ReturnType<typeof setTimeout>;
  let stopped = false;
  const tick = (asked: number) => {
    timer = setTimeout(() => {
      if (stopped) return;
      recordLag(lag, Math.max(0, performance.now() - asked - SAMPLE_MS));
      tick(performance.now());
    }, SAMPLE_MS);
    Deno.unrefTimer(timer);
  };
  tick(performance.now());
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
