/**
 * The timers of an engine's own event loop (connect, idle and first-read
 * timeouts): one binary heap by due time. A cancelled timer leaves the
 * heap at once: nearly every connect timer is cancelled within
 * milliseconds, and left in place until due they piled up by the tens of
 * thousands under load, each surviving into the old generation.
 *
 * @module
 */

/** A timer set on the loop; {@link cancel} takes it off. */
export interface Timer {
  readonly at: number;
  fn: (() => void) | null;
  /** Its place in its heap; -1 once it has left. */
  i: number;
  readonly heap: TimerHeap;
}

/** Timers by due time, the next first. */
export type TimerHeap = Timer[];

/** Adds a timer calling `fn` at epoch ms `at`. */
export function addTimer(heap: TimerHeap, at: number, fn: () => void): Timer {
  const t: Timer = { at, fn, i: heap.length, heap };
  heap.push(t);
  siftUp(heap, t.i);
  return t;
}

/** Milliseconds until the next timer is due, at most `maxMs` (0 when one is due). */
export function untilNext(heap: TimerHeap, maxMs: number): number {
  const next = heap[0];
  if (!next) return maxMs;
  return Math.max(0, Math.min(maxMs, Math.ceil(next.at - Date.now())));
}

/** Runs every timer due now, in order; one that throws goes to `onError`, and the rest run. */
export function runDue(heap: TimerHeap, onError: (err: unknown) => void): void {
  if (heap.length === 0) return;
  const now = Date.now();
  while (heap.length > 0 && heap[0].at <= now) {
    const t = heap[0];
    const fn = t.fn;
    remove(t);
    try {
      fn?.();
    } catch (err) {
      onError(err);
    }
  }
}

/** Takes a timer off its heap, if it is still on it. */
export function cancel(t: Timer | null): void {
  if (t && t.i >= 0) remove(t);
}

function remove(t: Timer): void {
  const { heap, i } = t;
  t.i = -1;
  t.fn = null;
  const last = heap.pop()!;
  if (last === t) return;
  heap[i] = last;
  last.i = i;
  siftDown(heap, i);
  siftUp(heap, last.i);
}

function siftUp(heap: TimerHeap, i: number): void {
  const t = heap[i];
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (heap[parent].at <= t.at) break;
    heap[i] = heap[parent];
    heap[i].i = i;
    i = parent;
  }
  heap[i] = t;
  t.i = i;
}

function siftDown(heap: TimerHeap, i: number): void {
  const t = heap[i];
  for (;;) {
    const l = 2 * i + 1;
    if (l >= heap.length) break;
    const r = l + 1;
    const c = r < heap.length && heap[r].at < heap[l].at ? r : l;
    if (heap[c].at >= t.at) break;
    heap[i] = heap[c];
    heap[i].i = i;
    i = c;
  }
  heap[i] = t;
  t.i = i;
}

/**
 * Lets Deno's own loop run the timers that are due (health checks, the
 * control plane, sweeps) in the middle of a busy turn. A `setImmediate`
 * turn does that in about 10 µs. A `setTimeout(fn, 0)` turn did too, but
 * returned 2 ms later (p50): the engine's loop slept a quarter of the time
 * under full load, and one stream through the io_uring engine moved 8 Gbit/s
 * instead of 10-11.
 */
export function timersTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
