/**
 * Active health checks (a TCP connect to every backend each interval, in
 * parallel) and the one function through which every check or data-path
 * connect result reaches the health table, so state changes are logged
 * exactly once.
 *
 * @module
 */
import type { Backend, RuntimeSettings } from "./config.ts";
import { dial, DialError } from "./dial.ts";
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
import type { Runtime } from "./snapshot.ts";

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
 * Applies one result for `backend` to its health and to protection mode,
 * and logs when either changes. Results for a backend a reload removed are
 * dropped.
 */
export function recordResult(runtime: Runtime, backend: Backend, obs: Observation): void {
  const before = runtime.health.get(backend.address);
  if (!before) return;
  const settings = runtime.snapshot.config.runtime;
  const after = observe(before, obs, healthPolicy(settings, runtime.protection.enabled));
  runtime.health.set(backend.address, after);
  if (before.healthy && !after.healthy) {
    log.warn("backend {backend} is down: {error}", {
      event: "backend_down",
      backend: backend.address,
      error: after.last_error,
      consecutive_failures: after.consecutive_failures,
    });
  } else if (!before.healthy && after.healthy) {
    log.info("backend {backend} is up", {
      event: "backend_up",
      backend: backend.address,
      consecutive_successes: after.consecutive_successes,
    });
  }
  if (after.cooldown_until !== before.cooldown_until && after.cooldown_until !== null) {
    log.debug("backend {backend} cools down for {cooldown_ms} ms", {
      event: "backend_cooldown",
      backend: backend.address,
      cooldown_ms: after.cooldown_until - obs.at,
      streak: after.connect_failure_streak,
    });
  }
  const policy = protectionPolicy(settings);
  if (obs.ok) {
    setProtection(runtime, protectionSuccess(runtime.protection, policy));
  } else if (obs.source === "connect" && (obs.kind === "timeout" || obs.kind === "refused")) {
    setProtection(runtime, protectionFailure(runtime.protection, obs.at, policy));
  }
}

/** Records a client that every backend failed: protection mode turns on. */
export function recordNoBackend(runtime: Runtime, at: number): void {
  setProtection(runtime, protectionNoBackend(runtime.protection, at));
}

function setProtection(runtime: Runtime, next: ProtectionState): void {
  const before = runtime.protection;
  runtime.protection = next;
  if (!before.enabled && next.enabled) {
    log.warn("protection mode on: {reason}; failover backoff and cooldown doubled", {
      event: "protection_on",
      reason: next.reason,
    });
  } else if (before.enabled && !next.enabled) {
    log.info("protection mode off after {stable} consecutive successes", {
      event: "protection_off",
      stable: runtime.snapshot.config.runtime.protection_stable_success_threshold,
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
 * Checks every backend of the current snapshot now and then every
 * `health_check_interval_ms`, reading the interval afresh each round so a
 * reload applies it. Results go to `record`.
 */
export function startHealthChecks(
  runtime: Runtime,
  record: Recorder = (backend, obs) => recordResult(runtime, backend, obs),
): HealthChecks {
  let stopped = false;
  let wake: (() => void) | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const round = async () => {
    const { config } = runtime.snapshot;
    const timeout = config.runtime.health_check_timeout_ms;
    await Promise.all(config.backends.map(async (backend) => {
      const obs = await probe(backend, timeout);
      if (obs && !stopped) record(backend, obs);
    }));
  };

  const loop = async () => {
    while (!stopped) {
      await round();
      if (stopped) break;
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, runtime.snapshot.config.runtime.health_check_interval_ms);
      });
      clearTimeout(timer);
      wake = null;
    }
  };
  loop().catch((err) =>
    log.error("health checks stopped: {error}", { event: "health_failed", error: String(err) })
  );

  return {
    checkNow: () => wake?.(),
    stop: () => {
      stopped = true;
      wake?.();
    },
  };
}
