/**
 * Active health checks (a TCP connect to every backend each interval, in
 * parallel) and the one function through which every check or data-path
 * connect result reaches the health table, so state changes are logged
 * exactly once.
 *
 * @module
 */
import type { Backend, RuntimeSettings } from "./config/mod.ts";
import { dial, DialError } from "./engine/dial.ts";
import { describeError } from "./errors.ts";
import { type FailureKind, type HealthPolicy, type Observation, observe } from "./health.ts";
import { logger } from "./log.ts";
import {
  protectionFailure,
  protectionNoBackend,
  type ProtectionPolicy,
  type ProtectionState,
  protectionSuccess,
} from "./protection.ts";
import { protectionOf, type Runtime } from "./snapshot.ts";

const log = logger("health");

function healthPolicy(r: RuntimeSettings, protection: boolean): HealthPolicy {
  return {
    fail: r.health_check_fail_threshold,
    success: r.health_check_success_threshold,
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
  const after = observe(before, obs, healthPolicy(settings, protection.enabled));
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

/**
 * Connects to the backend and closes at once: reachable or not. Null when
 * the connect failed for a reason of this machine (out of file
 * descriptors), which says nothing about the backend.
 */
export async function probe(backend: Backend, timeoutMs: number): Promise<Observation | null> {
  const failed = (kind: FailureKind, error: string): Observation => ({
    ok: false,
    at: Date.now(),
    source: "check",
    kind,
    error,
  });
  try {
    const conn = await dial(backend.host, backend.port, timeoutMs);
    conn.close();
    return { ok: true, at: Date.now(), source: "check" };
  } catch (err) {
    // Anything unexpected is a failed check, never the end of the check loop.
    if (!(err instanceof DialError)) return failed("other", describeError(err));
    return err.kind === "local" ? null : failed(err.kind, err.message);
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
 * Checks every backend of every service of the current snapshot now, then
 * each service again `health_check_interval_ms` after its last round ended
 * (a round waits for its slowest check, so a service's checks never
 * overlap). Intervals are read afresh each round, so a reload applies
 * them. Results go to `record`.
 */
export function startHealthChecks(
  runtime: Runtime,
  record: Recorder = (backend, obs) => recordResult(runtime, backend, obs),
): HealthChecks {
  let stopped = false;
  let wake: (() => void) | null = null;
  // Epoch ms of each service's next round; absent: due now.
  const due = new Map<string, number>();
  const running = new Set<string>();

  const round = async (name: string) => {
    const service = runtime.snapshot.services.get(name);
    if (!service) return;
    const timeout = service.runtime.health_check_timeout_ms;
    await Promise.all(service.backends.map(async (backend) => {
      const obs = await probe(backend, timeout);
      if (obs && !stopped) record(backend, obs);
    }));
  };

  const startDue = (now: number) => {
    const { services } = runtime.snapshot;
    for (const name of due.keys()) if (!services.has(name)) due.delete(name);
    for (const name of services.keys()) {
      if (running.has(name) || (due.get(name) ?? 0) > now) continue;
      running.add(name);
      round(name).finally(() => {
        running.delete(name);
        const interval = runtime.snapshot.services.get(name)?.runtime.health_check_interval_ms;
        if (interval === undefined) due.delete(name);
        else due.set(name, Date.now() + interval);
        wake?.();
      });
    }
  };

  const loop = async () => {
    while (!stopped) {
      const now = Date.now();
      startDue(now);
      const waiting = [...due].filter(([name]) => !running.has(name)).map(([, at]) => at);
      // With every round under way, a round's end wakes the loop.
      const delay = waiting.length ? Math.max(0, Math.min(...waiting) - now) : 60_000;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, delay);
      });
      clearTimeout(timer);
      wake = null;
    }
  };
  loop().catch((err) =>
    log.error("health checks stopped: {error}", { event: "health_failed", error: String(err) })
  );

  return {
    checkNow: () => {
      due.clear();
      wake?.();
    },
    stop: () => {
      stopped = true;
      wake?.();
    },
  };
}
