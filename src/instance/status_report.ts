/**
 * The live state `bal status` shows, assembled from the health and admin
 * tables, the current snapshot and every data plane's counters. Pure: the
 * control socket (socket.ts) serves what this builds.
 *
 * @module
 */
import type { TlsStatus } from "./tls_status.ts";
import type { LagSummary } from "../stats/loop_lag.ts";
import type { EngineName } from "../engine/engine.ts";
import type { BackendSource, Bandwidth, RuntimeSettings, Service } from "../config/schema.ts";
import { formatAddress } from "../net/address.ts";
import type { EntryStatus } from "../discovery/entry.ts";
import { type AgentState, type HealthState, isCooling } from "../health/state.ts";
import { initialProtection, type ProtectionState } from "../health/protection.ts";
import type { ReloadOutcome } from "./state_file.ts";
import { type AdminState, type BackendAdmin, weightOf } from "../balance/admin_state.ts";
import {
  backendTotal,
  type PlaneStats,
  serviceTotal,
  type ShapingCounters,
} from "../stats/counters.ts";
import type { Snapshot } from "../snapshot.ts";
import { type UdpServiceCounters, zeroService } from "../stats/udp_counters.ts";

/** The likely cause while protection mode is on; `bal doctor` says the same. */
export const WHY_PROTECTION =
  "backends refuse or time out connects (down, overloaded, or the wrong address), so bal doubled its failover backoff";
/** The likely cause of an unreachable backend; `bal doctor` says the same. */
export const WHY_UNREACHABLE =
  "the backend process is not running, or not listening on that address and port";

/** One backend as `bal status --json` shows it. */
export interface BackendStatus {
  service: string;
  address: string;
  /** The SNI route of its service it serves, or null. */
  route: string | null;
  /** Where it came from: `static` (the file), `dns`, `srv` or `etcd`. */
  source: BackendSource;
  /** The name or prefix it was discovered by, or null. */
  origin: string | null;
  /** Healthy by the checks and passive observation. */
  reachable: boolean;
  /** An operator's `bal backend` state: `enabled`, `draining` or `disabled`. */
  admin_state: AdminState;
  /** The weight in force (an operator's override, else the config's). */
  weight: number;
  backup: boolean;
  max_connections: number | null;
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
  counters: { timeout: number; refused: number; tls: number; other: number };
  connections_served: number;
  /** Bytes from clients to the backend, and back. */
  bytes_in: number;
  bytes_out: number;
  /** Its health check's type (`tcp`, `send_expect`, `http`, `tls`, `agent`). */
  check_type: string;
  /** What its agent last said, or null. */
  agent: AgentState | null;
  /** Left of slow start's ramp after it came back up, or null. */
  slow_start_remaining_ms: number | null;
  /** When its TLS certificate expires (from a `tls` check), or null. */
  cert_expires_at: string | null;
  /** Its own `bandwidth:` and what it held back, or null. */
  bandwidth: BandwidthStatus | null;
}

/** A bandwidth limit in force, and what it held back (see {@link ShapingCounters}). */
export type BandwidthStatus = Bandwidth & ShapingCounters;

/** A service's mirror and what it copied. */
export interface MirrorStatus {
  backend: string;
  percent: number;
  /** Client connections copied. */
  mirrored: number;
  /** Bytes the mirror was sent. */
  bytes: number;
  /** Copies closed early while the client went on, by cause. */
  dropped: { connect: number; buffer_full: number; error: number };
}

/** One service as `bal status --json` shows it (also, for the first, at the top level). */
export interface ServiceStatus {
  name: string;
  bind_address: string;
  port: number;
  method: string;
  backend_total: number;
  backend_reachable: number;
  backends: BackendStatus[];
  active_connections: number;
  /** Clients accepted; each is also counted once under served, rejected or no_backend. */
  connections_accepted: number;
  /** Clients a backend took. */
  connections_served: number;
  rejected_connections: number;
  /** Clients closed because no backend took them. */
  no_backend_connections: number;
  idle_closed_connections: number;
  /** Clients closed before any backend was tried, by cause. */
  refused_by_cause: {
    /** At `max_concurrent_connections` (as `rejected_connections`). */
    limit: number;
    /** By the allow/deny lists. */
    acl: number;
    /** At `max_connections_per_client`. */
    client_limit: number;
    /** Over `connection_rate_per_client`. */
    client_rate: number;
    /** PROXY protocol header refused (untrusted source, malformed, too long, too late). */
    proxy: number;
    /** No route for the server name the client asked for (or for none), and no default_route. */
    route: number;
    tls_handshake: number;
    /** bal's own connect to a backend that is bal itself. */
    loop: number;
  };
  last_check_time: string | null;
  /** The settings in force for it, defaults included. */
  runtime: RuntimeSettings;
  protection_mode: ProtectionMode;
  /** Its `dns:`/`srv:` entries: pending, ok or failed, with how many addresses they gave. */
  discovery: EntryStatus[];
  /** `tcp` or `udp`. */
  protocol: "tcp" | "udp";
  /** A UDP service's datagrams, bytes, flows and drops, and what moves them; null for TCP. */
  udp: (UdpServiceCounters & { engine: "native" | "deno" }) | null;
  /** Its `bandwidth:` and what it held back, or null. */
  bandwidth: BandwidthStatus | null;
  /** Its `mirror:` and what it copied, or null. */
  mirror: MirrorStatus | null;
  /** The engine that runs it: TLS services run on deno beside a native engine. */
  engine: EngineName;
  /** The TLS it terminates (`tls:`), or null. */
  tls: TlsStatus | null;
}

/** What `bal status --json` prints: the first service's keys at the top, and every service. */
export interface Status extends Partial<Omit<ServiceStatus, "protection_mode">> {
  running: boolean;
  pid: number | null;
  uptime_s?: number;
  config_path?: string;
  workers?: number;
  /** The engine moving the bytes (`uring`, `epoll` or `deno`). */
  engine?: EngineName;
  /** Why `engine: auto` passed over faster engines, or null. */
  engine_fallback?: string | null;
  /** How late the main thread's event loop ran timers in the latest minute, ms. */
  loop_lag_ms?: LagSummary;
  reloads?: { count: number; last: ReloadOutcome | null };
  /** Upgrades (`bal upgrade`) since the cold start this bal descends from. */
  upgrades?: number;
  /** True for a bal that handed over to a new one and drains. */
  retired?: boolean;
  /** The last change made from code (the HTTP API or `bal backend add`...): when, who, what. */
  last_change?: { at: string; who: string; change: string } | null;
  /** Older bals still draining after an upgrade: pid and live connections. */
  draining?: { pid: number; active_connections: number }[];
  protection_mode: ProtectionMode;
  services?: ServiceStatus[];
  /** When not running: stale files of a dead bal that this status removed. */
  removed?: string[];
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
  admin: ReadonlyMap<string, BackendAdmin>;
  protection: ReadonlyMap<string, ProtectionState>;
  planes: readonly PlaneStats[];
  reloads: number;
  lastReload: ReloadOutcome | null;
  upgrades: number;
  retired: boolean;
  engine: EngineName;
  engineFallback: string | null;
  loopLag: LagSummary;
  /** How each discovered entry stands. */
  discovery: readonly EntryStatus[];
  /** The UDP services' counters by name. */
  udp: Readonly<Record<string, UdpServiceCounters>>;
  /** What moves UDP datagrams: `native` (epoll, recvmmsg) or `deno` (its datagram sockets). */
  udpEngine: "native" | "deno";
  /** The engine that runs a TCP service. */
  engineOf(service: string): EngineName;
  /** A service's TLS as status shows it, or null. */
  tlsOf(service: Service): TlsStatus | null;
}

const iso = (ms: number | null) => ms === null ? null : new Date(ms).toISOString();

/** Protection mode of a bal that is not running: off, whatever it was when it stopped. */
export const PROTECTION_OFF: ProtectionMode = Object.freeze({
  enabled: false,
  reason: null,
  since: null,
});

/** The status of a bal that is not running, with the stale files just removed, if any. */
export function notRunning(removed: string[] = []): Status {
  const status: Status = { running: false, pid: null, protection_mode: PROTECTION_OFF };
  return removed.length ? { ...status, removed } : status;
}

/** Protection mode's state as status and doctor show it. */
export function protectionMode(p: ProtectionState): ProtectionMode {
  return { enabled: p.enabled, reason: p.reason, since: iso(p.since) };
}

function backendStatus(
  input: StatusInput,
  b: Service["backends"][number],
): BackendStatus {
  const h = input.health.get(b.id);
  const admin = input.admin.get(b.id);
  const c = backendTotal(input.planes, b.id);
  // A UDP backend's live flows and traffic stand where a TCP one's connections do.
  const u = input.udp[b.service]?.backends[b.id];
  if (u) {
    Object.assign(c, {
      active: u.flows_active,
      served: u.flows_created,
      bytes_in: u.bytes_in,
      bytes_out: u.bytes_out,
    });
  }
  return {
    service: b.service,
    address: b.address,
    route: b.route,
    source: b.source,
    origin: b.origin,
    reachable: h?.healthy ?? true,
    admin_state: admin?.state ?? "enabled",
    weight: weightOf(b, admin),
    backup: b.backup,
    max_connections: b.max_connections,
    active_connections: c.active,
    last_check_time: iso(h?.last_check_at ?? null),
    last_check_result: h?.last_check_ok == null ? null : h.last_check_ok ? "ok" : "failed",
    last_error: h?.last_error ?? null,
    consecutive_failures: h?.consecutive_failures ?? 0,
    consecutive_successes: h?.consecutive_successes ?? 0,
    connect_failure_streak: h?.connect_failure_streak ?? 0,
    cooldown_remaining_ms: h && isCooling(h, input.now) ? h.cooldown_until! - input.now : null,
    counters: { timeout: c.timeout, refused: c.refused, tls: c.tls, other: c.other },
    connections_served: c.served,
    bytes_in: c.bytes_in,
    bytes_out: c.bytes_out,
    check_type: b.check.type,
    agent: h?.agent ?? null,
    slow_start_remaining_ms: slowStartLeft(h, input.snapshot.services.get(b.service), input.now),
    cert_expires_at: iso(h?.cert_expires_at ?? null),
    bandwidth: b.bandwidth && shapingOf(b.bandwidth, c),
  };
}

function slowStartLeft(h: HealthState | undefined, s: Service | undefined, now: number) {
  const ms = s?.runtime.slow_start_ms ?? 0;
  if (!h?.up_since || ms === 0 || now - h.up_since >= ms) return null;
  return ms - (now - h.up_since);
}

/** One service's live status. */
export function serviceStatus(input: StatusInput, service: Service): ServiceStatus {
  const backends = service.backends.map((b) => backendStatus(input, b));
  const checks = service.backends.map((b) => input.health.get(b.id)?.last_check_at ?? null)
    .filter((t): t is number => t !== null);
  const c = serviceTotal(input.planes, service.name);
  return {
    name: service.name,
    bind_address: service.bind_address,
    port: service.port,
    method: service.method,
    backend_total: backends.length,
    backend_reachable: backends.filter((b) => b.reachable).length,
    backends,
    active_connections: c.active,
    connections_accepted: c.accepted,
    connections_served: c.served,
    rejected_connections: c.rejected,
    no_backend_connections: c.no_backend,
    idle_closed_connections: c.idle_closed,
    refused_by_cause: {
      limit: c.rejected,
      acl: c.denied,
      client_limit: c.client_limited,
      client_rate: c.rate_limited,
      proxy: c.proxy_refused,
      route: c.no_route,
      tls_handshake: c.tls_handshake,
      loop: c.looped,
    },
    last_check_time: iso(checks.length ? checks.reduce((a, b) => Math.max(a, b)) : null),
    runtime: service.runtime,
    protection_mode: protectionMode(input.protection.get(service.name) ?? initialProtection()),
    discovery: input.discovery.filter((d) => d.service === service.name),
    protocol: service.protocol,
    udp: service.protocol === "udp"
      ? { engine: input.udpEngine, ...(input.udp[service.name] ?? zeroService()) }
      : null,
    bandwidth: service.bandwidth && shapingOf(service.bandwidth, c),
    mirror: service.mirror && {
      backend: service.mirror.address,
      percent: service.mirror.percent,
      mirrored: c.mirrored,
      bytes: c.mirror_bytes,
      dropped: {
        connect: c.mirror_dropped_connect,
        buffer_full: c.mirror_dropped_buffer_full,
        error: c.mirror_dropped_error,
      },
    },
    engine: input.engineOf(service.name),
    tls: input.tlsOf(service),
  };
}

/** A limit and its counters, as status shows them. */
function shapingOf(limit: Bandwidth, c: ShapingCounters): BandwidthStatus {
  return {
    ...limit,
    upload_delayed_bytes: c.upload_delayed_bytes,
    download_delayed_bytes: c.download_delayed_bytes,
    upload_paused_ms: c.upload_paused_ms,
    download_paused_ms: c.download_paused_ms,
  };
}

/** Builds the live status from the control plane's state. */
export function buildStatus(input: StatusInput): Status {
  const services = input.snapshot.config.services.map((s) => serviceStatus(input, s));
  // The top level's `engine` is the process's; each service says its own.
  const { name: _, engine: _engine, ...first } = services[0];
  return {
    running: true,
    pid: input.pid,
    uptime_s: Math.floor((input.now - input.startedAt) / 1000),
    config_path: input.snapshot.configPath,
    workers: input.planes.length,
    engine: input.engine,
    engine_fallback: input.engineFallback,
    loop_lag_ms: input.loopLag,
    ...first,
    reloads: { count: input.reloads, last: input.lastReload },
    upgrades: input.upgrades,
    ...(input.retired ? { retired: true } : {}),
    services,
  };
}

/** `host:port` a service listens on. */
export function listenAddress(s: { bind_address: string; port: number }): string {
  return formatAddress(s.bind_address, s.port);
}
