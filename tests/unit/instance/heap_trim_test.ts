/** The trim policy: once per quiet spell after connections came or went, never while they keep coming. */
import assert from "node:assert/strict";
import { activity, trimDue, trimWatch } from "../../../src/instance/heap_trim.ts";
import type { PlaneStats } from "../../../src/stats/counters.ts";

const plane = (accepted: number, active: number) => ({ accepted, active }) as PlaneStats;

Deno.test("activity moves with every accept and every close, over all planes", () => {
  assert.equal(activity([]), 0);
  assert.equal(activity([plane(3, 3)]), 3);
  assert.equal(activity([plane(3, 1)]), 5);
  assert.equal(activity([plane(3, 0), plane(2, 2)]), 8);
});

Deno.test("the first quiet tick trims start-up's garbage, once", () => {
  const w = trimWatch();
  assert.deepEqual([0, 0, 0].map((n) => trimDue(w, n)), [true, false, false]);
});

Deno.test("a burst is trimmed after it ends, not while it goes on", () => {
  const w = trimWatch();
  trimDue(w, 0);
  const ticks = [10, 500, 2000, 2000, 2000, 2001, 2001];
  assert.deepEqual(ticks.map((n) => trimDue(w, n)), [
    false,
    false,
    false,
    true,
    false,
    false,
    true,
  ]);
});

Deno.test("steady traffic never trims", () => {
  const w = trimWatch();
  trimDue(w, 0);
  for (let n = 1; n <= 100; n++) assert.equal(trimDue(w, n * 7), false);
});
