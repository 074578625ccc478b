/**
 * The bandwidth buckets (route/bandwidth.ts) with time passed in: one
 * second's burst, refill at the rate, debt waited out, the least of
 * several budgets, and a quantum so slow limits do not wake for a byte.
 */
import assert from "node:assert/strict";
import {
  allowance,
  binding,
  bucket,
  quantum,
  spend,
  waitMs,
} from "../../../src/route/bandwidth.ts";

Deno.test("bandwidth: a full bucket lets one second's budget through, then refills at the rate", () => {
  const b = bucket(1000, 0);
  assert.equal(allowance([b], 64 * 1024, 0), 1000);
  spend([b], 1000, 0);
  assert.equal(allowance([b], 64 * 1024, 0), 0);
  // 20 ms of budget (the quantum) is what a paused reader waits for.
  assert.equal(quantum(1000), 20);
  assert.equal(waitMs([b], 0), 20);
  assert.equal(allowance([b], 64 * 1024, 20), 20);
  // Never more than one second's worth, however long it was idle.
  assert.equal(allowance([b], 64 * 1024, 60_000), 1000);
});

Deno.test("bandwidth: a read past the allowance is a debt the reader waits out", () => {
  const b = bucket(10_000, 0);
  spend([b], 30_000, 0);
  assert.equal(allowance([b], 64 * 1024, 0), 0);
  // 20,000 bytes of debt and a 200-byte quantum at 10,000 bytes/s: 2.02 s.
  assert.equal(waitMs([b], 0), 2020);
  assert.equal(allowance([b], 64 * 1024, 2000), 0);
  assert.equal(allowance([b], 64 * 1024, 2020), 200);
});

Deno.test("bandwidth: several budgets bind together, and the tightest is named", () => {
  const service = bucket(1_000_000, 0);
  const backend = bucket(2000, 0);
  assert.equal(allowance([service, backend], 64 * 1024, 0), 2000);
  spend([service, backend], 2000, 0);
  assert.equal(binding([service, backend], 0), 1);
  assert.equal(allowance([service, backend], 64 * 1024, 0), 0);
  assert.equal(service.tokens, 998_000);
  // The read size caps the allowance too.
  assert.equal(allowance([service], 4096, 0), 4096);
  assert.equal(binding([service], 0), -1);
});

Deno.test("bandwidth: the quantum is 20 ms of budget, from 1 byte up to 16 KiB", () => {
  assert.equal(quantum(1), 1);
  assert.equal(quantum(50_000), 1000);
  assert.equal(quantum(100_000_000), 16 * 1024);
});
