/**
 * Bandwidth budgets as token buckets, pure (time passed in): a bucket
 * holds up to one second's budget, refills at its rate, and may go into
 * debt by one read's worth, which the reader then waits out. A reader asks
 * {@link allowance} how much it may read now and reports what it read
 * with {@link spend}; at zero it waits {@link waitMs} and asks again.
 *
 * Several buckets may bind one direction (the service's and the
 * backend's, or a client's shared one): the reader takes the least of
 * their allowances and pays every one of them.
 *
 * @module
 */

/** One budget in bytes per second. */
export interface Bucket {
  /** Bytes per second; also the most it holds (one second's burst). */
  readonly rate: number;
  /** Bytes it may still let through (negative: the debt of the last read). */
  tokens: number;
  /** Epoch ms of the last refill. */
  at: number;
}

/** A full bucket for `rate` bytes per second. */
export function bucket(rate: number, now: number): Bucket {
  return { rate, tokens: rate, at: now };
}

function refill(b: Bucket, now: number): void {
  if (now <= b.at) return;
  b.tokens = Math.min(b.rate, b.tokens + (now - b.at) * b.rate / 1000);
  b.at = now;
}

/**
 * The least a reader waits for before it reads again: 20 ms of budget, at
 * most 16 KiB, so a slow limit does not wake for every few bytes.
 */
export function quantum(rate: number): number {
  return Math.max(1, Math.min(16 * 1024, Math.floor(rate / 50)));
}

/**
 * Bytes the reader may read now under every bucket of `buckets`, at most
 * `max`; 0 means wait ({@link waitMs}). A bucket that has refilled less
 * than a quantum allows nothing yet.
 */
export function allowance(buckets: readonly Bucket[], max: number, now: number): number {
  let n = max;
  for (const b of buckets) {
    refill(b, now);
    if (b.tokens < quantum(b.rate)) return 0;
    n = Math.min(n, Math.floor(b.tokens));
  }
  return n;
}

/** `n` bytes were read: every bucket pays them (a read larger than the allowance leaves a debt). */
export function spend(buckets: readonly Bucket[], n: number, now: number): void {
  for (const b of buckets) {
    refill(b, now);
    b.tokens -= n;
  }
}

/** Milliseconds until every bucket of `buckets` allows a quantum again (at least 1). */
export function waitMs(buckets: readonly Bucket[], now: number): number {
  let ms = 1;
  for (const b of buckets) {
    refill(b, now);
    const short = quantum(b.rate) - b.tokens;
    if (short > 0) ms = Math.max(ms, Math.ceil(short * 1000 / b.rate));
  }
  return ms;
}

/** The first bucket of `buckets` that holds the reader back now, or -1. */
export function binding(buckets: readonly Bucket[], now: number): number {
  return buckets.findIndex((b) => {
    refill(b, now);
    return b.tokens < quantum(b.rate);
  });
}
