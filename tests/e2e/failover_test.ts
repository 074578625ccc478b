/**
 * Failure handling end to end: the cooldown a backend enters after failed
 * connects (its doubling backoff, its end on a passing check) and
 * protection mode (on by failures or by a client with no backend, off after
 * stable successes, doubling the backoff, never stale after a stop).
 */
import assert from "node:assert/strict";
import { askName, bal, type Daemon, freePort, nameBackend, startBal, waitFor } from "../helpers.ts";

// deno-lint-ignore no-explicit-any -- status JSON, checked field by field
type Json = any;

async function status(home: string): Promise<Json> {
  const r = await bal(home, "status", "--json");
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

/** Clients one after another, 10 ms apart, for `ms`: what each was answered. */
async function traffic(port: number, ms: number): Promise<string[]> {
  const answers: string[] = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    answers.push(await askName(port).catch(() => ""));
    await new Promise((r) => setTimeout(r, 10));
  }
  return answers;
}

/** Epoch ms of each logged event named `event` for `backend`. */
function eventTimes(d: Daemon, event: string, backend?: string): number[] {
  return d.log()
    .filter((l) => l.event === event)
    .filter((l) => !backend || (l.fields as Record<string, unknown>).backend === backend)
    .map((l) => Date.parse(l.timestamp as string));
}

Deno.test("failover: a refusing backend is skipped while it cools down, the cooldown doubling up to the max", async () => {
  const live = nameBackend("L");
  const dead = freePort();
  const d = await startBal({
    backends: [dead, live.port],
    runtime: {
      // Only the data path finds the dead backend, and never marks it down.
      health_check_interval_ms: 60_000,
      health_check_fail_threshold: 1000,
      failover_backoff_initial_ms: 200,
      failover_backoff_max_ms: 800,
      backend_cooldown_ms: 100,
      protection_trigger_threshold: 1000,
    },
  });
  const { home, port } = d;
  try {
    const answers = await traffic(port, 2600);
    assert.ok(answers.length > 50, `only ${answers.length} clients in 2.6 s`);
    assert.deepEqual(new Set(answers), new Set(["L"]), "every client was served");
    const tries = eventTimes(d, "connect_failed", `127.0.0.1:${dead}`);
    // Without the cooldown about half the clients would have tried it.
    assert.ok(
      tries.length >= 4 && tries.length <= 6,
      `the dead backend was tried ${tries.length} times`,
    );
    const gaps = tries.slice(1).map((t, i) => t - tries[i]);
    const expected = [200, 400, 800, 800];
    gaps.forEach((gap, i) => {
      assert.ok(
        gap >= expected[i] - 5,
        `gap ${i + 1}: ${gap} ms, below the cooldown ${expected[i]}`,
      );
    });
    const s = await status(home);
    const b = s.backends.find((x: Json) => x.address === `127.0.0.1:${dead}`);
    assert.equal(b.connect_failure_streak, tries.length);
    assert.equal(b.counters.refused, tries.length);
    assert.equal(s.protection_mode.enabled, false);
  } finally {
    await d.stop();
    await live.close();
  }
});

Deno.test("failover: a passing health check ends the cooldown, so a backend that is up gets traffic", async () => {
  const a = nameBackend("A");
  const bPort = freePort();
  const d = await startBal({
    backends: [bPort, a.port],
    runtime: {
      health_check_interval_ms: 200,
      health_check_fail_threshold: 1000,
      failover_backoff_initial_ms: 60_000,
      failover_backoff_max_ms: 60_000,
      protection_trigger_threshold: 1000,
    },
  });
  const { home, port } = d;
  let b = null;
  try {
    await traffic(port, 100);
    const cooling = await status(home);
    const entry = cooling.backends.find((x: Json) => x.address === `127.0.0.1:${bPort}`);
    assert.ok(entry.cooldown_remaining_ms > 50_000, `cooldown ${entry.cooldown_remaining_ms}`);
    b = nameBackend("B", bPort);
    await waitFor("the check to end the cooldown", async () => {
      const s = await status(home);
      return s.backends.find((x: Json) => x.address === `127.0.0.1:${bPort}`)
        .cooldown_remaining_ms === null;
    }, 5000);
    const answers = await traffic(port, 300);
    assert.ok(answers.filter((n) => n === "B").length >= answers.length / 2 - 1, answers.join(""));
  } finally {
    await d.stop();
    await a.close();
    await b?.close();
  }
});

Deno.test("failover: protection mode turns on at the trigger, doubles the cooldown, turns off after stable successes", async () => {
  const live = nameBackend("L");
  const deadPort = freePort();
  const d = await startBal({
    backends: [deadPort, live.port],
    runtime: {
      health_check_interval_ms: 60_000,
      health_check_fail_threshold: 1000,
      failover_backoff_initial_ms: 300,
      failover_backoff_max_ms: 300,
      backend_cooldown_ms: 0,
      protection_trigger_threshold: 2,
      protection_window_ms: 30_000,
      // Enough that the live backend's successes alone (a client every ~10 ms)
      // keep it on for the test's first second.
      protection_stable_success_threshold: 150,
    },
  });
  const { home, port } = d;
  let revived = null;
  try {
    const off = await status(home);
    assert.deepEqual(off.protection_mode, { enabled: false, reason: null, since: null });
    // First failure: 300 ms cooldown. Second, 300 ms later: protection turns on.
    await traffic(port, 700);
    const on = await status(home);
    assert.equal(on.protection_mode.enabled, true);
    assert.match(
      on.protection_mode.reason,
      /2 failed connects \(timeout\/refused\) within 30000 ms/,
    );
    assert.ok(Date.parse(on.protection_mode.since) > Date.now() - 5000);
    assert.equal(eventTimes(d, "protection_on").length, 1);
    // While on, the next failure cools the backend down for 2 x 300 ms.
    await waitFor("a failure under protection", async () => {
      await traffic(port, 50);
      const s = await status(home);
      const b = s.backends.find((x: Json) => x.address === `127.0.0.1:${deadPort}`);
      return b.connect_failure_streak >= 3 && b.cooldown_remaining_ms;
    }, 5000);
    const cooldowns = d.log().filter((l) => l.event === "backend_cooldown")
      .map((l) => (l.fields as Record<string, number>).cooldown_ms);
    assert.deepEqual(cooldowns.slice(0, 3), [300, 300, 600], "doubled once protection is on");
    const doctor = await bal(home, "doctor", "--json");
    assert.equal(JSON.parse(doctor.stdout).protection_mode.enabled, true);
    const text = await bal(home, "status");
    assert.match(text.stdout, /what_happened: protection mode is on since/);
    // The backend comes back: the next successes turn protection off.
    revived = nameBackend("D", deadPort);
    // 150 successes in a row: a matter of traffic, not of time, so the deadline is generous
    // (both cores busy, clients come slowly) and each poll follows half a second of clients.
    await waitFor("protection off", async () => {
      await traffic(port, 500);
      return (await status(home)).protection_mode.enabled === false;
    }, 60_000);
    const offEvents = d.log().filter((l) => l.event === "protection_off");
    assert.equal(offEvents.length, 1);
    assert.equal(offEvents[0].level, "info");
    assert.equal(
      JSON.parse((await bal(home, "doctor", "--json")).stdout).protection_mode.enabled,
      false,
    );
  } finally {
    await d.stop();
    await live.close();
    await revived?.close();
  }
});

Deno.test("failover: a client with no backend turns protection on; a stop never leaves it stale", async () => {
  const d = await startBal({ backends: [freePort()] });
  const { home, port } = d;
  try {
    assert.equal(await askName(port).catch(() => ""), "");
    await waitFor("protection on", async () => (await status(home)).protection_mode.enabled);
    const s = await status(home);
    assert.match(s.protection_mode.reason, /no backend/);
    const doctor = await bal(home, "doctor", "--json");
    assert.equal(doctor.code, 1, "no backend reachable is critical");
    assert.equal(JSON.parse(doctor.stdout).protection_mode.enabled, true);
  } finally {
    const r = await d.stop();
    assert.equal(r.code, 0, r.stderr);
  }
  const after = await status(home);
  assert.equal(after.running, false);
  assert.deepEqual(after.protection_mode, { enabled: false, reason: null, since: null });
  const doctor = JSON.parse((await bal(home, "doctor", "--json")).stdout);
  assert.deepEqual(doctor.protection_mode, { enabled: false, reason: null, since: null });
});
