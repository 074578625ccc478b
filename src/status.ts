/**
 * The live state `bal status` shows, assembled from the health table, the
 * current snapshot and every data plane's counters. Pure: the control
 * socket (socket.ts) serves what this builds.
 *
 * @module
 */
import type { RuntimeSettings } from "./config.ts";
import { type HealthState, isCooling } from "./health.ts";
import type { ProtectionState } from "./protection.ts";
import type { ReloadOutcome } from "./instance.ts";
import { type BackendCounters, zeroCounters } from "./proxy.ts";
import type { Snapshot } from "./snapshot.ts";
import type { PlaneStats } from "./workers.ts";

/** One backend as `bal status --json` shows it. */
export interface BackendStatus {
  address: string;
  /** Healthy by the checks and passive observation. */
  reachable: boolean;
  active_connections: number;
  last_check_time: string | null;
  last_check_result: "ok" | "failed" | null;
  last_error: string | null;
  consecutive_failures: number;
  consecutive_successes: number;
  /** Consecutive failed connects on the data path. */
  connect_failure_streak: number;
  /** Left of the cooldown that makes new clients skip it, or null. */
  cooldown_remaining_ms: number | null;
  /** Failed connects on the data path, by kind. */
  counters: { timeout: number; refused: number; other: number };
  connections_served: number;
  /** Bytes from clients to the backend, and back. */
  bytes_in: number;
  bytes_out: number;
}

/** What `bal status --json` prints. */
export interface Status {
  running: boolean;
  pid: number | null;
  uptime_s?: number;
  config_path?: string;
  bind_address?: string;
  port?: number;
  method?: string;
  workers?: number;
  backend_total?: number;
  backend_reachable?: number;
  backends?: BackendStatus[];
  active_connections?: number;
  connections_served?: number;
  rejected_connections?: number;
  idle_closed_connections?: number;
  last_check_time?: string | null;
  reloads?: { count: number; last: ReloadOutcome | null };
  /** The settings in force, defaults included. */
  runtime?: RuntimeSettings;
  protection_mode: ProtectionMode;
}

/** Protection mode as status and doctor show it. */
export interface ProtectionMode {
  enabled: boolean;
  /** Why it is on, or null. */
  reason: string | null;
  /** When it turned on (RFC 3339), or null. */
  since: string | null;
}

/** What the control plane knows, for {@link buildStatus}. */
export interface StatusInput {
  pid: number;
  startedAt: number;
  now: number;
  snapshot: Snapshot;
  health: ReadonlyMap<string, HealthState>;
  protection: ProtectionState;
  planes: readonly PlaneStats[];
  reloads: number;
  lastReload: ReloadOutcome | null;
}

const iso = (ms: number | null) => ms === null ? null : new Date(ms).toISOString();

/** Protection mode of a bal that is not running: off, whatever it was when it stopped. */
export const PROTECTION_OFF: ProtectionMode = Object.freeze({
  enabled: false,
  reason: null,
  since: null,
});

/** The status of a bal that is not running. */
export function notRunning(): Status {
  return { running: false, pid: null, protection_mode: PROTECTION_OFF };
}

/** Protection mode's state as status and doctor show it. */
export function protectionMode(p: ProtectionState): ProtectionMode {
  return { enabled: p.enabled, reason: p.reason, since: iso(p.since) };
}

/** Sums the planes' counters for one backend address. */
function summed(planes: readonly PlaneStats[], address: string): BackendCounters {
  const total = zeroCounters();
  for (const plane of planes) {
    const c = plane.backends[address];
    if (!c) continue;
    for (const key of Object.keys(total) as (keyof BackendCounters)[]) total[key] += c[key];
  }
  return total;
}

/** Builds the live status from the control plane's state. */
export function buildStatus(input: StatusInput): Status {
  const { config } = input.snapshot;
  const backends = config.backends.map((b): BackendStatus => {
    const h = input.health.get(b.address);
    const c = summed(input.planes, b.address);
    return {
      address: b.address,
      reachable: h?.healthy ?? true,
      active_connections: c.active,
      last_check_time: iso(h?.last_check_at ?? null),
      last_check_result: h?.last_check_ok == null ? null : h.last_check_ok ? "ok" : "failed",
      last_error: h?.last_error ?? null,
      consecutive_failures: h?.consecutive_failures ?? 0,
      consecutive_successes: h?.consecutive_successes ?? 0,
      connect_failure_streak: h?.connect_failure_streak ?? 0,
      cooldown_remaining_ms: h && isCooling(h, input.now) ? h.cooldown_until! - input.now : null,
      counters: { timeout: c.timeout, refused: c.refused, other: c.other },
      connections_served: c.served,
      bytes_in: c.bytes_in,
      bytes_out: c.bytes_out,
    };
  });
  const checks = [...input.health.values()].map((h) => h.last_check_at).filter((t): t is number =>
    t !== null
  );
  const sum = (key: "active" | "accepted" | "rejected" | "idle_closed") =>
    input.planes.reduce((total, p) => total + p[key], 0);
  return {
    running: true,
    pid: input.pid,
    uptime_s: Math.floor((input.now - input.startedAt) / 1000),
    config_path: input.snapshot.configPath,
    bind_address: config.bind_address,
    port: config.port,
    method: config.method,
    workers: input.planes.length,
    backend_total: backends.length,
    backend_reachable: backends.filter((b) => b.reachable).length,
    backends,
    active_connections: sum("active"),
    connections_served: sum("accepted"),
    rejected_connections: sum("rejected"),
    idle_closed_connections: sum("idle_closed"),
    last_check_time: iso(checks.length ? Math.max(...checks) : null),
    reloads: { count: input.reloads, last: input.lastReload },
    runtime: config.runtime,
    protection_mode: protectionMode(input.protection),
  };
}
