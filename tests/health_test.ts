import assert from "node:assert/strict";
import {
  type HealthState,
  initialHealth,
  observe,
  syncHealth,
  type Thresholds,
} from "../src/health.ts";

const t: Thresholds = { fail: 3, success: 2 };
const ok = (at = 1) => ({ ok: true, at });
const fail = (at = 1, error = "connection refused") => ({ ok: false, at, error });

function run(state: HealthState, results: boolean[]): HealthState {
  return results.reduce((s, r, i) => observe(s, r ? ok(i) : fail(i), t), state);
}

Deno.test("health: a new backend is healthy and unchecked", () => {
  const s = initialHealth();
  assert.equal(s.healthy, true);
  assert.equal(s.last_check_at, null);
});

Deno.test("health: goes down only after fail_threshold consecutive failures", () => {
  assert.equal(run(initialHealth(), [false, false]).healthy, true);
  const down = run(initialHealth(), [false, false, false]);
  assert.equal(down.healthy, false);
  assert.equal(down.consecutive_failures, 3);
  assert.equal(down.last_error, "connection refused");
});

Deno.test("health: a success resets the failure streak", () => {
  assert.equal(run(initialHealth(), [false, false, true, false, false]).healthy, true);
});

Deno.test("health: comes back only after success_threshold consecutive successes", () => {
  const down = run(initialHealth(), [false, false, false]);
  assert.equal(run(down, [true]).healthy, false);
  assert.equal(run(down, [true, false, true]).healthy, false);
  const up = run(down, [true, true]);
  assert.equal(up.healthy, true);
  assert.equal(up.consecutive_failures, 0);
  assert.equal(up.last_error, null);
});

Deno.test("health: thresholds of 1 flip at once", () => {
  const one = { fail: 1, success: 1 };
  const down = observe(initialHealth(), fail(), one);
  assert.equal(down.healthy, false);
  assert.equal(observe(down, ok(), one).healthy, true);
});

Deno.test("health: observe records when and what", () => {
  const s = observe(initialHealth(), fail(42, "timeout"), t);
  assert.equal(s.last_check_at, 42);
  assert.equal(s.last_error, "timeout");
});

Deno.test("health: syncHealth keeps staying backends, adds and forgets", () => {
  const table = new Map<string, HealthState>();
  syncHealth(table, ["a", "b"]);
  const down = run(initialHealth(), [false, false, false]);
  table.set("b", down);
  syncHealth(table, ["b", "c"]);
  assert.deepEqual([...table.keys()].sort(), ["b", "c"]);
  assert.equal(table.get("b"), down);
  assert.equal(table.get("c")!.healthy, true);
});
