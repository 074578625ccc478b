import assert from "node:assert/strict";
import { roundRobin, tryOrder } from "../src/balancer.ts";

const all = () => true;

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
  const up = (b: string) => b !== "b";
  assert.deepEqual(tryOrder(rr, ["a", "b", "c"], up), ["a", "c", "b"]);
  assert.deepEqual(tryOrder(rr, ["a", "b", "c"], up), ["c", "a", "b"]);
});

Deno.test("balancer: traffic spreads evenly over the healthy backends", () => {
  const rr = roundRobin();
  const counts: Record<string, number> = {};
  for (let i = 0; i < 300; i++) {
    const first = tryOrder(rr, ["a", "b", "c", "d"], (b) => b !== "c")[0];
    counts[first] = (counts[first] ?? 0) + 1;
  }
  assert.deepEqual(counts, { a: 100, b: 100, d: 100 });
});

Deno.test("balancer: with no healthy backend, all are still tried", () => {
  const rr = roundRobin();
  assert.deepEqual(tryOrder(rr, ["a", "b"], () => false), ["a", "b"]);
  assert.deepEqual(tryOrder(rr, ["a", "b"], () => false), ["b", "a"]);
});

Deno.test("balancer: one backend, no backends", () => {
  const rr = roundRobin();
  assert.deepEqual(tryOrder(rr, ["a"], all), ["a"]);
  assert.deepEqual(tryOrder(rr, [], all), []);
});
