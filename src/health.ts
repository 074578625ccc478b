/**
 * The health state machine of a backend, and the table that holds every
 * backend's state across reloads. Pure: the checks themselves are in
 * `checker.ts`.
 *
 * A backend starts healthy (as in HAProxy), turns unhealthy after
 * `fail` consecutive failed checks or connects, and healthy again after
 * `success` consecutive successful ones.
 *
 * @module
 */

/** One backend's health. */
export interface HealthState {
  readonly healthy: boolean;
  readonly consecutive_failures: number;
  readonly consecutive_successes: number;
  /** Epoch ms of the last active check or observed connect, or null before any. */
  readonly last_check_at: number | null;
  /** Why the last check failed, or null when it passed. */
  readonly last_error: string | null;
}

/** How many consecutive results flip the state. */
export interface Thresholds {
  readonly fail: number;
  readonly success: number;
}

/** The result of one check or connect. */
export interface Observation {
  readonly ok: boolean;
  readonly at: number;
  readonly error?: string;
}

/** The state of a backend bal has not checked yet. */
export function initialHealth(): HealthState {
  return {
    healthy: true,
    consecutive_failures: 0,
    consecutive_successes: 0,
    last_check_at: null,
    last_error: null,
  };
}

/** Applies one result to a state and returns the next state. */
export function observe(state: HealthState, obs: Observation, t: Thresholds): HealthState {
  if (obs.ok) {
    const successes = state.consecutive_successes + 1;
    return {
      healthy: state.healthy || successes >= t.success,
      consecutive_failures: 0,
      consecutive_successes: successes,
      last_check_at: obs.at,
      last_error: null,
    };
  }
  const failures = state.consecutive_failures + 1;
  return {
    healthy: state.healthy && failures < t.fail,
    consecutive_failures: failures,
    consecutive_successes: 0,
    last_check_at: obs.at,
    last_error: obs.error ?? "failed",
  };
}

/** Health of every configured backend, keyed by `host:port`. */
export type HealthTable = Map<string, HealthState>;

/**
 * Makes the table hold exactly the given backends: those that stay keep
 * their state, new ones start fresh, removed ones are forgotten.
 */
export function syncHealth(table: HealthTable, addresses: readonly string[]): void {
  const keep = new Set(addresses);
  for (const address of table.keys()) if (!keep.has(address)) table.delete(address);
  for (const address of addresses) if (!table.has(address)) table.set(address, initialHealth());
}
