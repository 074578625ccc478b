/**
 * What a data plane counts, per service and per backend, and how the
 * control plane adds the planes up. Counters are kept across reloads, so
 * they never go backwards while bal runs.
 *
 * @module
 */

/** What one data plane counted for one backend. */
export interface BackendCounters extends ShapingCounters {
  /** Connections assigned to it now (being dialed or relaying). */
  active: number;
  /** Connections it was given (connected). */
  served: number;
  /** Bytes from clients to it. */
  bytes_in: number;
  /** Bytes from it to clients. */
  bytes_out: number;
  /** Failed connects, by kind. */
  timeout: number;
  refused: number;
  /** The TLS handshake (`backend_tls:`) failed after the connect. */
  tls: number;
  other: number;
  /** Successful connects by duration: one count per {@link CONNECT_BUCKETS} bound, then +Inf. */
  connect_buckets: number[];
  /** Seconds all successful connects took together. */
  connect_seconds: number;
}

/** What a bandwidth limit (a service's or a backend's) counts of the reads it held back. */
export interface ShapingCounters {
  /** Bytes read after a pause the limit imposed, from clients (upload) and from backends. */
  upload_delayed_bytes: number;
  download_delayed_bytes: number;
  /** Milliseconds reads spent paused by the limit, each way (connections added up). */
  upload_paused_ms: number;
  download_paused_ms: number;
}

/** What a service's `mirror:` counts. */
export interface MirrorCounters {
  /** Client connections copied to the mirror. */
  mirrored: number;
  /** Bytes the mirror was sent. */
  mirror_bytes: number;
  /** Copies closed early, by cause: the mirror unreachable, too far behind, or failing. */
  mirror_dropped_connect: number;
  mirror_dropped_buffer_full: number;
  mirror_dropped_error: number;
}

function zeroShaping(): ShapingCounters {
  return {
    upload_delayed_bytes: 0,
    download_delayed_bytes: 0,
    upload_paused_ms: 0,
    download_paused_ms: 0,
  };
}

/** Upper bounds (seconds) of the connect-time histogram's buckets. */
export const CONNECT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** Counts one successful connect that took `seconds`. */
export function observeConnect(c: BackendCounters, seconds: number): void {
  let i = CONNECT_BUCKETS.findIndex((bound) => seconds <= bound);
  if (i < 0) i = CONNECT_BUCKETS.length;
  c.connect_buckets[i]++;
  c.connect_seconds += seconds;
}

/**
 * What one data plane counted for one service. Each accepted client is
 * counted once more, under what became of it: served, rejected, no_backend,
 * denied, client_limited or rate_limited (or still active, before a
 * backend took it).
 */
export interface ServiceCounters extends ShapingCounters, MirrorCounters {
  /** Clients accepted on its listener. */
  accepted: number;
  /** Its live client connections. */
  active: number;
  /** Clients a backend took. */
  served: number;
  /** Clients closed at once at its `max_concurrent_connections`. */
  rejected: number;
  /** Clients closed because no backend took them (every attempt failed). */
  no_backend: number;
  /** Connections closed after `connection_idle_timeout_ms` without a byte. */
  idle_closed: number;
  /** Clients refused by the allow/deny lists. */
  denied: number;
  /** Clients refused at `max_connections_per_client`. */
  client_limited: number;
  /** Clients refused over `connection_rate_per_client`. */
  rate_limited: number;
  /** Clients whose PROXY header was refused (untrusted source, malformed, too long, too late). */
  proxy_refused: number;
  /** Clients of a service with routes whose server name no route takes, with no default_route. */
  no_route: number;
  /** Clients of a service with `tls:` whose handshake failed, was not finished in time, or whose certificate was refused. */
  tls_handshake: number;
  /** Clients that were bal's own connect to a backend: a backend that is bal itself. */
  looped: number;
}

/** Everything one data plane counted, as the control plane collects it; the totals are over every service. */
export interface PlaneStats extends ServiceCounters {
  /** 0 for the main thread, 1.. for worker threads. */
  id: number;
  services: Record<string, ServiceCounters>;
  /** By backend id (`service/host:port`). */
  backends: Record<string, BackendCounters>;
}

/** Fresh backend counters. */
export function zeroCounters(): BackendCounters {
  return {
    active: 0,
    served: 0,
    bytes_in: 0,
    bytes_out: 0,
    timeout: 0,
    refused: 0,
    tls: 0,
    other: 0,
    connect_buckets: new Array(CONNECT_BUCKETS.length + 1).fill(0),
    connect_seconds: 0,
    ...zeroShaping(),
  };
}

/** Fresh service counters. */
export function zeroServiceCounters(): ServiceCounters {
  return {
    accepted: 0,
    active: 0,
    served: 0,
    rejected: 0,
    no_backend: 0,
    idle_closed: 0,
    denied: 0,
    client_limited: 0,
    rate_limited: 0,
    proxy_refused: 0,
    no_route: 0,
    tls_handshake: 0,
    looped: 0,
    ...zeroShaping(),
    mirrored: 0,
    mirror_bytes: 0,
    mirror_dropped_connect: 0,
    mirror_dropped_buffer_full: 0,
    mirror_dropped_error: 0,
  };
}

/** Adds `from` into `into`, key by key (arrays element by element). */
function add<T extends object>(into: T, from: T | undefined): T {
  if (!from) return into;
  const target = into as Record<string, number | number[]>;
  for (const [key, value] of Object.entries(from)) {
    const mine = target[key];
    if (Array.isArray(mine)) (value as number[]).forEach((v, i) => mine[i] += v);
    else target[key] = (mine as number) + (value as number);
  }
  return into;
}

/** One backend's counters summed over every plane. */
export function backendTotal(planes: readonly PlaneStats[], id: string): BackendCounters {
  return planes.reduce((total, p) => add(total, p.backends[id]), zeroCounters());
}

/** One service's counters summed over every plane. */
export function serviceTotal(planes: readonly PlaneStats[], name: string): ServiceCounters {
  return planes.reduce((total, p) => add(total, p.services[name]), zeroServiceCounters());
}
