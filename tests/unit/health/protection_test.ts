import assert from "node:assert/strict";
import {
  initialProtection,
  protectionFailure,
  protectionNoBackend,
  type ProtectionState,
  protectionSuccess,
} from "../../../src/health/protection.ts";

const p = { trigger: 3, windowMs: 1000, stable: 2 };

function failures(s: ProtectionState, times: number[]): ProtectionState {
  return times.reduce((acc, at) => protectionFailure(acc, at, p), s);
}

Deno.test("protection: off until trigger failures fall within the window", () => {
  assert.equal(failures(initialProtection(), [0, 100]).enabled, false);
  // Spread wider than the window: never three at once.
  assert.equal(failures(initialProtection(), [0, 600, 1200, 1800]).enabled, false);
  const on = failures(initialProtection(), [0, 400, 800]);
  assert.equal(on.enabled, true);
  assert.equal(on.since, 800);
  assert.match(on.reason!, /3 failed connects \(timeout\/refused\) within 1000 ms/);
});

Deno.test("protection: a client with no backend turns it on at once", () => {
  const on = protectionNoBackend(initialProtection(), 5);
  assert.equal(on.enabled, true);
  assert.equal(on.since, 5);
  assert.match(on.reason!, /no backend/);
});

Deno.test("protection: off after stable consecutive successes; a failure restarts the count", () => {
  let s = failures(initialProtection(), [0, 1, 2]);
  s = protectionSuccess(s, p);
  assert.equal(s.enabled, true);
  s = protectionFailure(s, 3, p);
  s = protectionSuccess(s, p);
  assert.equal(s.enabled, true, "the failure reset the count");
  s = protectionSuccess(s, p);
  assert.equal(s.enabled, false);
  assert.deepEqual(s, initialProtection());
});

Deno.test("protection: successes while off change nothing, and keep no history unbounded", () => {
  const s = initialProtection();
  assert.equal(protectionSuccess(s, p), s);
  const many = failures(s, Array.from({ length: 1000 }, (_, i) => i * 2000));
  assert.ok(many.failures.length <= p.trigger);
});
