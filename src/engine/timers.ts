/**
 * The timers of an engine's own event loop (connect, idle and first-read
 * timeouts): one binary heap by due time, cancelled in place.
 *
 * @module
 */

/** A timer set on the loop; `cancel` makes it a no-op. */
export interface Timer {
  readonly at: number;
  fn: (() => void) | null;
}

/** Timers by due time, the next first. */
export type TimerHeap = Timer[];

/** Adds a timer calling `fn` at epoch ms `at`. */
export function addTimer(heap: TimerHeap, at: number, fn: () => void): Timer {
  const t: Timer = { at, fn };
  push(heap, t);
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
    const t = pop(heap)!;
    const fn = t.fn;
    t.fn = null;
    try {
      fn?.();
    } catch (err) {
      onError(err);
    }
  }
}

/** Makes a timer a no-op (it leaves the heap when due). */
export function cancel(t: Timer | null): void {
  if (t) t.fn = null;
}

function push(heap: Timer[], t: Timer): void {
  heap.push(t);
  let i = heap.length - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (heap[parent].at <= t.at) break;
    heap[i] = heap[parent];
    i = parent;
  }
  heap[i] = t;
}

function pop(heap: Timer[]): Timer | undefined {
  const top = heap[0];
  const last = heap.pop();
  if (heap.length === 0 || !last) return top;
  let i = 0;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= heap.length) break;
    const r = l + 1;
    const c = r < heap.length && heap[r].at < heap[l].at ? r : l;
    if (heap[c].at >= last.at) break;
    heap[i] = heap[c];
    i = c;
  }
  heap[i] = last;
  return top;
}
