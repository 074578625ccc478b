import { deepStrictEqual as assertEquals } from "node:assert/strict";
import {
  bufferWindow,
  FIRST_WINDOW,
  nextToPost,
  widen,
} from "../../../src/engine/uring/buffers.ts";

/** Posts spares until the window is full: the ids, in the order the kernel gets them. */
function fill(w: ReturnType<typeof bufferWindow>): number[] {
  const ids: number[] = [];
  for (let id = nextToPost(w); id >= 0; id = nextToPost(w)) ids.push(id);
  return ids;
}

Deno.test("buffer window: the kernel gets a window of the pool, not all of it", () => {
  const w = bufferWindow(256);
  assertEquals(fill(w), Array.from({ length: FIRST_WINDOW }, (_, i) => i));
  assertEquals([w.posted, w.spare.length], [FIRST_WINDOW, 256 - FIRST_WINDOW]);
  assertEquals(nextToPost(w), -1);
});

Deno.test("buffer window: a taken buffer is replaced by the one given back last", () => {
  const w = bufferWindow(8, 2);
  fill(w);
  // The kernel takes 0 and 1; 1 comes back, then 0.
  w.posted -= 2;
  w.spare.push(1, 0);
  // 0 came back last: it is the warmest, posted first.
  assertEquals(fill(w), [0, 1]);
  // Buffers never given back stay at the bottom: 2..7 were never posted.
  assertEquals(w.spare, [7, 6, 5, 4, 3, 2]);
});

Deno.test("buffer window: it doubles when receives find it empty, never past the pool", () => {
  const w = bufferWindow(64, 16);
  fill(w);
  // Receives took all 16 and hold them: the next finds none.
  w.posted = 0;
  widen(w);
  assertEquals([w.size, fill(w).length], [32, 32]);
  w.posted = 0;
  widen(w);
  // 64 wide, but only 16 buffers are neither held nor posted.
  assertEquals([w.size, fill(w).length, w.spare.length], [64, 16, 0]);
  widen(w);
  assertEquals(w.size, 64);
});

Deno.test("buffer window: a pool smaller than the first window is posted whole", () => {
  const w = bufferWindow(4);
  assertEquals([w.size, fill(w)], [4, [0, 1, 2, 3]]);
});
