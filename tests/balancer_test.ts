import assert from "node:assert/strict";
import { roundRobin, tryOrder } from "../src/balancer.ts";

const all = () => 0;
const upUnless = (down: string) => (b: string) => b === down ? 1 : 0;

Deno.test("balancer: round robin starts one further each turn", () => {
  const rr = roundRobin();
  const firsts = Array.from({ length: 6 }, () => tryOrder(rr, ["a", "b", "c"], all)[0]);
  assert.deepEqual(firsts, ["a", "b", "c", "a", "b", "c"]);
});

Deno.test("balancer: every backend is tried once, in rotation", () => {
  const rr = roundRobin();
  tryOrder(rr, ["a", "b", "c"], all);
  assert.deepEqual(tryOrder(rr, ["a", "b", "c"], all), ["b", "c", "a"]);
});

Deno.test("balancer: unhealthy backends come last, and only as a last resort", () => {
  const rr = roundRobin();
  const up = upUnless("b");
  assert.deepEqual(tryOrder(rr, ["a", "b", "c"], up), ["a", "c", "b"]);
  assert.deepEqual(tryOrder(rr, ["a", "b", "c"], up), ["c", "a", "b"]);
});

Deno.test("balancer: traffic spreads evenly over the healthy backends", () => {
  const rr = roundRobin();
  const counts: Record<string, number> = {};
  for (let i = 0; i < 300; i++) {
    const first = tryOrder(rr, ["a", "b", "c", "d"], upUnless("c"))[0];
    counts[first] = (counts[first] ?? 0) + 1;
  }
  assert.deepEqual(counts, { a: 100, b: 100, d: 100 });
});

Deno.test("balancer: with no healthy backend, all are still tried", () => {
  const rr = roundRobin();
  assert.deepEqual(tryOrder(rr, ["a", "b"], () => 1), ["a", "b"]);
  assert.deepEqual(tryOrder(rr, ["a", "b"], () => 1), ["b", "a"]);
});

Deno.test("balancer: tiers in order, each in rotation (healthy, unhealthy, cooling down)", () => {
  const rr = roundRobin();
  const tiers: Record<string, number> = { a: 2, b: 0, c: 1, d: 0, e: 2 };
  const tier = (b: string) => tiers[b];
  assert.deepEqual(tryOrder(rr, ["a", "b", "c", "d", "e"], tier), ["b", "d", "c", "a", "e"]);
  assert.deepEqual(tryOrder(rr, ["a", "b", "c", "d", "e"], tier), ["d", "b", "c", "e", "a"]);
});

Deno.test("balancer: one backend, no backends", () => {
  const rr = roundRobin();
  assert.deepEqual(tryOrder(rr, ["a"], all), ["a"]);
  assert.deepEqual(tryOrder(rr, [], all), []);
});
