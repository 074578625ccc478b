/**
 * The health state machine of a backend, its failover cooldown, and the
 * table that holds every backend's state across reloads. Pure: the checks
 * themselves are in `checker.ts`.
 *
 * A backend starts healthy (as in HAProxy), turns unhealthy after `fail`
 * consecutive failed checks or connects, and healthy again after `success`
 * consecutive successful ones. Separately, each failed connect on the data
 * path puts the backend in a cooldown that doubles with the failure streak,
 * so clients stop paying for a backend that just refused them; any success
 * (a passing health check included) ends it.
 *
 * @module
 */

import type { FailureKind } from "../net/dial.ts";
export type { FailureKind };

/**
 * What an agent check last said (HAProxy's agent-check, documented subset):
 * `ready` takes clients, `drain` and `maint` take none; a percentage scales
 * the weight.
 */
export interface AgentState {
  readonly mode: "ready" | "drain" | "maint";
  /** Share of the configured weight, 0-100; null: the full weight. */
  readonly weight_percent: number | null;
}

/** One backend's health. */
export interface HealthState {
  readonly healthy: boolean;
  readonly consecutive_failures: number;
  readonly consecutive_successes: number;
  /** Epoch ms of the last health check, or null before the first. */
  readonly last_check_at: number | null;
  /** Whether the last health check passed, or null before the first. */
  readonly last_check_ok: boolean | null;
  /** Why the last failed check or connect failed; null once one succeeds. */
  readonly last_error: string | null;
  /** Consecutive failed connects on the data path; sizes the cooldown. */
  readonly connect_failure_streak: number;
  /** Epoch ms until which new clients skip this backend, or null. */
  readonly cooldown_until: number | null;
  /** Epoch ms it last came back up (slow start ramps from there), or null. */
  readonly up_since: number | null;
  /** What its agent last said, or null without an agent check. */
  readonly agent: AgentState | null;
  /** Epoch ms its TLS certificate expires (from a `tls` check), or null. */
  readonly cert_expires_at: number | null;
}

/** The `runtime:` knobs the state machine follows. */
export interface HealthPolicy {
  readonly fail: number;
  readonly success: number;
  readonly backoffInitialMs: number;
  readonly backoffMaxMs: number;
  readonly cooldownMs: number;
  /** 2 while protection mode is on (backoff and cooldown double), else 1. */
  readonly factor: number;
}

/** The result of one health check (`check`) or data-path connect (`connect`). */
export interface Observation {
  readonly ok: boolean;
  readonly at: number;
  readonly source: "check" | "connect";
  readonly error?: string;
  readonly kind?: FailureKind;
  /** An agent check's answer. */
  readonly agent?: AgentState;
  /** A TLS check's certificate expiry (epoch ms). */
  readonly cert_expires_at?: number;
}

/** The state of a backend bal has not checked yet. */
export function initialHealth(): HealthState {
  return {
    healthy: true,
    consecutive_failures: 0,
    consecutive_successes: 0,
    last_check_at: null,
    last_check_ok: null,
    last_error: null,
    connect_failure_streak: 0,
    cooldown_until: null,
    up_since: null,
    agent: null,
    cert_expires_at: null,
  };
}

/**
 * How long a backend cools down after its `streak`-th consecutive failed
 * connect: `min(initial * 2^(streak-1), max)`, at least the cooldown, all
 * times `factor`.
 */
export function cooldownFor(streak: number, p: HealthPolicy): number {
  const backoff = Math.min(p.backoffInitialMs * 2 ** Math.min(streak - 1, 40), p.backoffMaxMs);
  return Math.max(backoff, p.cooldownMs) * p.factor;
}

/** Whether new clients skip this backend at `now`. */
export function isCooling(state: HealthState, now: number): boolean {
  return state.cooldown_until !== null && state.cooldown_until > now;
}

/** Applies one result to a state and returns the next state. */
export function observe(state: HealthState, obs: Observation, p: HealthPolicy): HealthState {
  // Data-path connects move the state, but only checks are reported as checks.
  const check = obs.source === "check";
  const last_check_at = check ? obs.at : state.last_check_at;
  const last_check_ok = check ? obs.ok : state.last_check_ok;
  const reported = {
    agent: obs.agent ?? state.agent,
    cert_expires_at: obs.cert_expires_at ?? state.cert_expires_at,
  };
  if (obs.ok) {
    const successes = state.consecutive_successes + 1;
    const healthy = state.healthy || successes >= p.success;
    return {
      healthy,
      consecutive_failures: 0,
      consecutive_successes: successes,
      last_check_at,
      last_check_ok,
      last_error: null,
      connect_failure_streak: 0,
      cooldown_until: null,
      up_since: healthy && !state.healthy ? obs.at : state.up_since,
      ...reported,
    };
  }
  const failures = state.consecutive_failures + 1;
  const streak = state.connect_failure_streak + (obs.source === "connect" ? 1 : 0);
  return {
    healthy: state.healthy && failures < p.fail,
    consecutive_failures: failures,
    consecutive_successes: 0,
    last_check_at,
    last_check_ok,
    last_error: obs.error ?? "failed",
    connect_failure_streak: streak,
    cooldown_until: obs.source === "connect"
      ? obs.at + cooldownFor(streak, p)
      : state.cooldown_until,
    up_since: state.up_since,
    ...reported,
  };
}

/** Whether a data-path success would change nothing: healthy, no failure, no cooldown. */
export function isClean(state: HealthState): boolean {
  return state.healthy && state.consecutive_failures === 0 && state.cooldown_until === null;
}

/** Health of every configured backend, keyed by its id (`service/host:port`). */
export type HealthTable = Map<string, HealthState>;

/**
 * Makes the table hold exactly the given backends: those that stay keep
 * their state, new ones start fresh, removed ones are forgotten.
 */
export function syncHealth(
  table: HealthTable,
  ids: readonly string[],
  fresh: (id: string) => HealthState = initialHealth,
): void {
  const keep = new Set(ids);
  for (const id of table.keys()) if (!keep.has(id)) table.delete(id);
  for (const id of ids) if (!table.has(id)) table.set(id, fresh(id));
}

/**
 * The state of a backend discovery just found: down until a check passes,
 * so it gets clients only once it is seen to answer (those already known
 * start up, as bal always has).
 */
export function unprovenHealth(): HealthState {
  return { ...initialHealth(), healthy: false, last_error: "not checked yet" };
}
