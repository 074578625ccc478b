/**
 * Active health checks (each backend probed every interval, any check type,
 * at most {@link MAX_CHECKS_IN_FLIGHT} at once) and the one function
 * through which every check or data-path connect result reaches the health
 * table, so state changes are logged exactly once.
 *
 * @module
 */
import type { Backend, RuntimeSettings } from "../config/mod.ts";
import { MAX_CHECKS_IN_FLIGHT } from "../config/schema.ts";
import { type HealthPolicy, type Observation, observe } from "./state.ts";
import { probe } from "./probe.ts";
import { logger } from "../log.ts";
import {
  protectionFailure,
  protectionNoBackend,
  type ProtectionPolicy,
  type ProtectionState,
  protectionSuccess,
} from "./protection.ts";
import { protectionOf, type Runtime } from "../snapshot.ts";

const log = logger("health");

function healthPolicy(backend: Backend, r: RuntimeSettings, protection: boolean): HealthPolicy {
  return {
    fail: backend.check.fail_threshold,
    success: backend.check.success_threshold,
    backoffInitialMs: r.failover_backoff_initial_ms,
    backoffMaxMs: r.failover_backoff_max_ms,
    cooldownMs: r.backend_cooldown_ms,
    factor: protection ? 2 : 1,
  };
}

function protectionPolicy(r: RuntimeSettings): ProtectionPolicy {
  return {
    trigger: r.protection_trigger_threshold,
    windowMs: r.protection_window_ms,
    stable: r.protection_stable_success_threshold,
  };
}

/**
 * Applies one result for `backend` to its health and to its service's
 * protection mode, and logs when either changes. Results for a backend a
 * reload removed are dropped.
 */
export function recordResult(runtime: Runtime, backend: Backend, obs: Observation): void {
  const before = runtime.health.get(backend.id);
  const service = runtime.snapshot.services.get(backend.service);
  if (!before || !service) return;
  const settings = service.runtime;
  const protection = protectionOf(runtime, service.name);
  const after = observe(before, obs, healthPolicy(backend, settings, protection.enabled));
  runtime.health.set(backend.id, after);
  const names = { service: service.name, backend: backend.address };
  if (before.healthy && !after.healthy) {
    log.warn("backend {backend} of {service} is down: {error}", {
      event: "backend_down",
      ...names,
      error: after.last_error,
      consecutive_failures: after.consecutive_failures,
    });
  } else if (!before.healthy && after.healthy) {
    log.info("backend {backend} of {service} is up", {
      event: "backend_up",
      ...names,
      consecutive_successes: after.consecutive_successes,
    });
  }
  if (after.cooldown_until !== before.cooldown_until && after.cooldown_until !== null) {
    log.debug("backend {backend} of {service} cools down for {cooldown_ms} ms", {
      event: "backend_cooldown",
      ...names,
      cooldown_ms: after.cooldown_until - obs.at,
      streak: after.connect_failure_streak,
    });
  }
  const policy = protectionPolicy(settings);
  if (obs.ok) {
    setProtection(runtime, service.name, protectionSuccess(protection, policy));
  } else if (obs.source === "connect" && (obs.kind === "timeout" || obs.kind === "refused")) {
    setProtection(runtime, service.name, protectionFailure(protection, obs.at, policy));
  }
}

/** Records a client of `service` that every backend failed: its protection mode turns on. */
export function recordNoBackend(runtime: Runtime, service: string, at: number): void {
  if (!runtime.snapshot.services.has(service)) return;
  setProtection(runtime, service, protectionNoBackend(protectionOf(runtime, service), at));
}

function setProtection(runtime: Runtime, service: string, next: ProtectionState): void {
  const before = protectionOf(runtime, service);
  runtime.protection.set(service, next);
  if (!before.enabled && next.enabled) {
    log.warn("protection mode on for {service}: {reason}; failover backoff and cooldown doubled", {
      event: "protection_on",
      service,
      reason: next.reason,
    });
  } else if (before.enabled && !next.enabled) {
    const stable = runtime.snapshot.services.get(service)?.runtime
      .protection_stable_success_threshold;
    log.info("protection mode off for {service} after {stable} consecutive successes", {
      event: "protection_off",
      service,
      stable,
      since: new Date(before.since!).toISOString(),
    });
  }
}

/** A running health-check loop. */
export interface HealthChecks {
  /** Starts a round now instead of waiting for the interval (after a reload). */
  checkNow(): void;
  /** Stops the loop; a round under way finishes but changes nothing more. */
  stop(): void;
}

/** Where a result goes: {@link recordResult}, plus whatever else must hear of it. */
export type Recorder = (backend: Backend, obs: Observation) => void;

/**
 * How often at most the loop looks for due checks: each look is a pass
 * over every backend, and one per finished check made 10,000 backends
 * cost O(n²) per interval (a saturated core, checks reported late).
 */
const TICK_MS = 20;

/** The check loop's state. */
interface Schedule {
  readonly runtime: Runtime;
  readonly record: Recorder;
  readonly expiry: (backend: Backend, obs: Observation) => void;
  /** Epoch ms of each backend's next check, by id; absent: due now. */
  readonly due: Map<string, number>;
  readonly running: Set<string>;
  /** Due checks that found no room: each finished check starts the next of them. */
  waiting: string[];
  nextWaiting: number;
  /** Epoch ms the loop's timer is set for. */
  sleepsUntil: number;
  wake: (() => void) | null;
  stopped: boolean;
}

/**
 * Checks every backend now (at most {@link MAX_CHECKS_IN_FLIGHT} at once, so
 * a large first round is spread out), then each again its check's
 * `interval_ms` after its last check ended (a check never overlaps its own
 * next one). Intervals are read afresh from the snapshot, so a reload
 * applies them. Results go to `record`.
 */
export function startHealthChecks(
  runtime: Runtime,
  record: Recorder = (backend, obs) => recordResult(runtime, backend, obs),
): HealthChecks {
  const s: Schedule = {
    runtime,
    record,
    expiry: expiryWarnings(),
    due: new Map(),
    running: new Set(),
    waiting: [],
    nextWaiting: 0,
    sleepsUntil: 0,
    wake: null,
    stopped: false,
  };
  loop(s).catch((err) =>
    log.error("health checks stopped: {error}", { event: "health_failed", error: String(err) })
  );
  return {
    checkNow: () => {
      s.due.clear();
      s.wake?.();
    },
    stop: () => {
      s.stopped = true;
      s.wake?.();
    },
  };
}

/** Starts what is due, then sleeps until the next check falls due, until stopped. */
async function loop(s: Schedule): Promise<void> {
  while (!s.stopped) {
    const now = Date.now();
    startDue(s, now);
    let next = Infinity;
    for (const [id, at] of s.due) if (!s.running.has(id) && at < next) next = at;
    // What waits in line is started as checks finish; the timer finds what falls due.
    const delay = Number.isFinite(next) ? Math.max(TICK_MS, next - now) : 60_000;
    s.sleepsUntil = now + delay;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      s.wake = resolve;
      timer = setTimeout(resolve, delay);
    });
    clearTimeout(timer);
    s.wake = null;
  }
}

/** Starts what is due, within the cap; the rest waits in line. */
function startDue(s: Schedule, now: number): void {
  const { backends } = s.runtime.snapshot;
  for (const id of s.due.keys()) if (!backends.has(id)) s.due.delete(id);
  s.waiting = [];
  s.nextWaiting = 0;
  for (const [id, backend] of backends) {
    // A UDP backend without a check has nothing to probe: it stays as passive observation has it.
    if (backend.check.type === "none") continue;
    if (s.running.has(id) || (s.due.get(id) ?? 0) > now) continue;
    if (s.running.size < MAX_CHECKS_IN_FLIGHT) startCheck(s, id);
    else s.waiting.push(id);
  }
}

/** Runs one backend's check; when it ends, its next turn is set and the next in line starts. */
function startCheck(s: Schedule, id: string): void {
  s.running.add(id);
  check(s, id).finally(() => {
    s.running.delete(id);
    const interval = s.runtime.snapshot.backends.get(id)?.check.interval_ms;
    if (interval === undefined) s.due.delete(id);
    else {
      const at = Date.now() + interval;
      s.due.set(id, at);
      // The loop sleeps past this check's next turn (every check was under way): wake it.
      if (at < s.sleepsUntil) s.wake?.();
    }
    while (s.nextWaiting < s.waiting.length) {
      const next = s.waiting[s.nextWaiting++];
      if (s.running.has(next) || !s.runtime.snapshot.backends.has(next)) continue;
      startCheck(s, next);
      break;
    }
  });
}

/** One probe of a backend still in the config; its result recorded unless the loop stopped. */
async function check(s: Schedule, id: string): Promise<void> {
  const backend = s.runtime.snapshot.backends.get(id);
  if (!backend) return;
  const obs = await probe(backend, s.runtime.health.get(id));
  if (!obs || s.stopped) return;
  s.record(backend, obs);
  s.expiry(backend, obs);
}

/** A day: how often one backend's expiring certificate is mentioned again. */
const DAY_MS = 86_400_000;

/** Warns, at most once a day per backend, of a TLS certificate expiring within its warning days. */
function expiryWarnings(): (backend: Backend, obs: Observation) => void {
  const said = new Map<string, number>();
  return (backend, obs) => {
    const expires = obs.cert_expires_at;
    if (expires === undefined) return;
    const days = (expires - obs.at) / DAY_MS;
    if (days > backend.check.expiry_warning_days) return;
    if (obs.at - (said.get(backend.id) ?? -Infinity) < DAY_MS) return;
    said.set(backend.id, obs.at);
    log.warn("the TLS certificate of {backend} ({service}) expires in {days} days", {
      event: "certificate_expiring",
      service: backend.service,
      backend: backend.address,
      days: Math.floor(days),
      expires_at: new Date(expires).toISOString(),
    });
  };
}
