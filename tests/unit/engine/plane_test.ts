/** What a plane does over its sessions (plane.ts): idle sweeps, drains, kills and sums. */
import assert from "node:assert/strict";
import { answer, fakeEngine } from "./fake_engine.ts";
import { closeWhere, drain, stats, sweepIdle } from "../../../src/engine/plane.ts";

const IDLE = `backends: ["127.0.0.1:9001"]\nruntime: {connection_idle_timeout_ms: 1000}\n`;

Deno.test("plane: a sweep closes sessions idle past their timeout, once, and says when to sweep next", () => {
  const f = fakeEngine(IDLE);
  const idle = f.client()!;
  const busy = f.client()!;
  const now = Date.now();
  idle.activity.at = now - 1500;
  busy.activity.at = now - 500;
  assert.equal(sweepIdle(f.plane, now), 250, "a quarter of the shortest timeout");
  assert.equal(idle.closing, "idle_timeout");
  assert.equal(busy.closing, null);
  sweepIdle(f.plane, now);
  assert.equal(stats(f.plane).idle_closed, 1);
});

Deno.test("plane: a drain waits for the last session, then closes nothing", async () => {
  const f = fakeEngine(IDLE);
  const s = f.client()!;
  answer(f, "ok");
  const drained = drain(f.plane, 5000);
  setTimeout(() => {
    f.relays[0].progress.done = true;
    f.relays[0].done();
  }, 10);
  assert.equal(await drained, 0);
  assert.equal(s.closing, null);
});

Deno.test("plane: a drain that times out closes the rest as drain_timeout and counts them", async () => {
  const f = fakeEngine(IDLE);
  const s = f.client()!;
  assert.equal(await drain(f.plane, 10), 1);
  assert.equal(s.closing, "drain_timeout");
  assert.equal(f.plane.sessions.size, 0);
});

Deno.test("plane: closeWhere closes what it selects; stats sum services and copy the counters", () => {
  const f = fakeEngine(`services:
  - {name: a, port: 9101, backends: ["127.0.0.1:9001"]}
  - {name: b, port: 9102, backends: ["127.0.0.1:9002"]}
`);
  f.client(undefined, "a");
  f.client(undefined, "b");
  f.client(undefined, "b");
  assert.equal(closeWhere(f.plane, (s) => s.service === "b", "killed"), 2);
  const now = stats(f.plane);
  assert.deepEqual([now.accepted, now.active], [3, 1]);
  assert.equal(now.services.b.accepted, 2);
  now.services.b.accepted = 99;
  assert.equal(stats(f.plane).services.b.accepted, 2, "a copy, not the live counters");
});
