import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { addTimer, cancel, runDue, type TimerHeap, untilNext } from "../../../src/engine/timers.ts";

Deno.test("timers: due timers run in order of their time, not of their setting", () => {
  const heap: TimerHeap = [];
  const ran: number[] = [];
  const past = Date.now() - 1000;
  for (const at of [5, 1, 4, 2, 3]) addTimer(heap, past + at, () => ran.push(at));
  addTimer(heap, Date.now() + 60_000, () => ran.push(99));
  runDue(heap, () => {});
  assertEquals(ran, [1, 2, 3, 4, 5]);
  assertEquals(heap.length, 1);
});

Deno.test("timers: a cancelled timer leaves the heap at once and never runs", () => {
  const heap: TimerHeap = [];
  const ran: number[] = [];
  const past = Date.now() - 1000;
  const timers = Array.from({ length: 100 }, (_, k) => addTimer(heap, past + k, () => ran.push(k)));
  // Every other one cancelled, from the middle, the root and the last leaf.
  timers.forEach((t, k) => k % 2 === 1 && cancel(t));
  cancel(timers[0]);
  assertEquals(heap.length, 49);
  cancel(timers[0]);
  assertEquals(heap.length, 49);
  runDue(heap, () => {});
  assertEquals(ran, Array.from({ length: 49 }, (_, k) => 2 * (k + 1)));
  assertEquals(heap.length, 0);
});

Deno.test("timers: cancelling a timer that already ran does nothing; one that throws stops no other", () => {
  const heap: TimerHeap = [];
  const errors: unknown[] = [];
  let ran = 0;
  const first = addTimer(heap, Date.now() - 2, () => {
    throw new Error("boom");
  });
  addTimer(heap, Date.now() - 1, () => ran++);
  runDue(heap, (err) => errors.push(err));
  cancel(first);
  assertEquals([ran, errors.length, heap.length], [1, 1, 0]);
});

Deno.test("timers: the wait lasts until the next live timer", () => {
  const heap: TimerHeap = [];
  const soon = addTimer(heap, Date.now() + 50, () => {});
  addTimer(heap, Date.now() + 5_000, () => {});
  const wait = untilNext(heap, 1000);
  assertEquals(wait > 0 && wait <= 50, true);
  cancel(soon);
  assertEquals(untilNext(heap, 1000), 1000);
  assertEquals(untilNext([], 1000), 1000);
});
