import assert from "node:assert/strict";
import {
  cooldownFor,
  type HealthPolicy,
  type HealthState,
  initialHealth,
  isClean,
  isCooling,
  type Observation,
  observe,
  syncHealth,
} from "../../../src/health/state.ts";

const t: HealthPolicy = {
  fail: 3,
  success: 2,
  backoffInitialMs: 200,
  backoffMaxMs: 5000,
  cooldownMs: 500,
  factor: 1,
};
const ok = (at = 1): Observation => ({ ok: true, at, source: "check" });
const fail = (at = 1, error = "connection refused"): Observation => ({
  ok: false,
  at,
  source: "check",
  error,
});
const connectFail = (at: number): Observation => ({
  ok: false,
  at,
  source: "connect",
  kind: "refused",
  error: "connection refused",
});

function run(state: HealthState, results: boolean[]): HealthState {
  return results.reduce((s, r, i) => observe(s, r ? ok(i) : fail(i), t), state);
}

Deno.test("health: a new backend is healthy and unchecked", () => {
  const s = initialHealth();
  assert.equal(s.healthy, true);
  assert.equal(s.last_check_at, null);
  assert.equal(isClean(s), true);
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
  const one = { ...t, fail: 1, success: 1 };
  const down = observe(initialHealth(), fail(), one);
  assert.equal(down.healthy, false);
  assert.equal(observe(down, ok(), one).healthy, true);
});

Deno.test("health: a check is recorded as the last check; a connect only as the last failure", () => {
  const checked = observe(initialHealth(), fail(42, "timeout"), t);
  assert.equal(checked.last_check_at, 42);
  assert.equal(checked.last_check_ok, false);
  assert.equal(checked.last_error, "timeout");
  const passed = observe(checked, ok(50), t);
  assert.deepEqual([passed.last_check_at, passed.last_check_ok, passed.last_error], [
    50,
    true,
    null,
  ]);
  // A failed connect on the data path is no health check: the last check stays as it was.
  const refused = observe(passed, connectFail(60), t);
  assert.deepEqual(
    [refused.last_check_at, refused.last_check_ok, refused.last_error],
    [50, true, "connection refused"],
  );
  const served = observe(refused, { ok: true, at: 70, source: "connect" }, t);
  assert.deepEqual([served.last_check_at, served.last_check_ok, served.last_error], [
    50,
    true,
    null,
  ]);
});

Deno.test("health: cooldown is min(initial * 2^(streak-1), max), at least backend_cooldown_ms", () => {
  const p = { ...t, backoffInitialMs: 200, backoffMaxMs: 1500, cooldownMs: 300 };
  assert.deepEqual([1, 2, 3, 4, 5, 60].map((n) => cooldownFor(n, p)), [
    300,
    400,
    800,
    1500,
    1500,
    1500,
  ]);
  assert.deepEqual([1, 2, 3, 4].map((n) => cooldownFor(n, { ...p, factor: 2 })), [
    600,
    800,
    1600,
    3000,
  ]);
});

Deno.test("health: each failed connect extends the cooldown; a failed check does not", () => {
  const p = { ...t, fail: 100, backoffInitialMs: 200, backoffMaxMs: 5000, cooldownMs: 100 };
  let s = observe(initialHealth(), connectFail(1000), p);
  assert.equal(s.connect_failure_streak, 1);
  assert.equal(s.cooldown_until, 1200);
  assert.equal(isCooling(s, 1199), true);
  assert.equal(isCooling(s, 1200), false);
  s = observe(s, connectFail(1300), p);
  assert.equal(s.cooldown_until, 1700);
  s = observe(s, fail(1400), p);
  assert.equal(s.connect_failure_streak, 2, "checks size no cooldown");
  assert.equal(s.cooldown_until, 1700);
  s = observe(s, connectFail(1800), p);
  assert.equal(s.cooldown_until, 2600);
  assert.equal(isClean(s), false);
});

Deno.test("health: a passing check ends the cooldown and the streak at once", () => {
  const p = { ...t, backoffInitialMs: 5000, backoffMaxMs: 5000 };
  const cooling = observe(initialHealth(), connectFail(1000), p);
  assert.equal(isCooling(cooling, 1001), true);
  const s = observe(cooling, ok(1100), p);
  assert.equal(isCooling(s, 1101), false);
  assert.equal(s.connect_failure_streak, 0);
  assert.equal(isClean(s), true);
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
