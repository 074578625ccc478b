/**
 * Protection mode: bal's answer to a backend pool in trouble. It turns on
 * when failed connects (timeout or refused) within `protection_window_ms`
 * reach `protection_trigger_threshold`, or when a client found no backend
 * at all, and off after `protection_stable_success_threshold` consecutive
 * successful connects or checks. While on, failover backoff and cooldown
 * double, so a struggling pool is tried less often. Pure: the clock comes
 * in with each event.
 *
 * @module
 */

/** Protection mode's state. */
export interface ProtectionState {
  readonly enabled: boolean;
  /** Why it turned on, or null while off. */
  readonly reason: string | null;
  /** Epoch ms it turned on, or null while off. */
  readonly since: number | null;
  /** Epoch ms of recent counted failures, oldest first (at most trigger many). */
  readonly failures: readonly number[];
  /** Consecutive successes since it turned on (or since the last failure). */
  readonly successes: number;
}

/** The `runtime:` knobs protection mode follows. */
export interface ProtectionPolicy {
  readonly trigger: number;
  readonly windowMs: number;
  readonly stable: number;
}

/** Off, with nothing counted. */
export function initialProtection(): ProtectionState {
  return { enabled: false, reason: null, since: null, failures: [], successes: 0 };
}

/** A timeout or refused connect at `at`. */
export function protectionFailure(
  s: ProtectionState,
  at: number,
  p: ProtectionPolicy,
): ProtectionState {
  const failures = [...s.failures.filter((t) => t > at - p.windowMs), at].slice(-p.trigger);
  if (s.enabled) return { ...s, failures, successes: 0 };
  if (failures.length < p.trigger) return { ...s, failures, successes: 0 };
  return {
    enabled: true,
    reason: `${failures.length} failed connects (timeout/refused) within ${p.windowMs} ms`,
    since: at,
    failures,
    successes: 0,
  };
}

/** A client that every backend failed, at `at`. */
export function protectionNoBackend(s: ProtectionState, at: number): ProtectionState {
  if (s.enabled) return { ...s, successes: 0 };
  return {
    enabled: true,
    reason: "a client found no backend to connect to",
    since: at,
    failures: s.failures,
    successes: 0,
  };
}

/** A successful connect or check. */
export function protectionSuccess(s: ProtectionState, p: ProtectionPolicy): ProtectionState {
  if (!s.enabled) return s;
  const successes = s.successes + 1;
  if (successes < p.stable) return { ...s, successes };
  return initialProtection();
}
