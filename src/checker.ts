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
import { type Observation, observe, type Thresholds } from "./health.ts";
import { logger } from "./log.ts";
import type { Runtime } from "./snapshot.ts";

const log = logger("health");

function thresholds(r: RuntimeSettings): Thresholds {
  return { fail: r.health_check_fail_threshold, success: r.health_check_success_threshold };
}

/**
 * Applies one result for `backend` and logs when it turns healthy or
 * unhealthy. Results for a backend a reload removed are dropped.
 */
export function recordResult(runtime: Runtime, backend: Backend, obs: Observation): void {
  const before = runtime.health.get(backend.address);
  if (!before) return;
  const after = observe(before, obs, thresholds(runtime.snapshot.config.runtime));
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
}

/** Connects to the backend and closes at once: reachable or not. */
export async function probe(backend: Backend, timeoutMs: number): Promise<Observation> {
  try {
    const conn = await dial(backend.host, backend.port, timeoutMs);
    conn.close();
    return { ok: true, at: Date.now() };
  } catch (err) {
    const error = err instanceof DialError ? err.message : String(err);
    return { ok: false, at: Date.now(), error };
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
      if (!stopped) record(backend, obs);
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
