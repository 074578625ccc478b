/**
 * What the UDP plane counts, per service and per backend, as status and
 * the metrics show it.
 *
 * @module
 */
/** Why a datagram was dropped (each counted by service). */
export type DropCause = "no_backend" | "limit" | "acl" | "oversize" | "queue_full" | "proxy";

/** Every drop cause, in the order status shows them. */
export const DROP_CAUSES: readonly DropCause[] = [
  "no_backend",
  "limit",
  "acl",
  "oversize",
  "queue_full",
  "proxy",
];

/** Datagrams and bytes one way and the other, and flows. */
export interface UdpTraffic {
  /** Datagrams from clients (to backends). */
  datagrams_in: number;
  /** Datagrams to clients (replies). */
  datagrams_out: number;
  bytes_in: number;
  bytes_out: number;
  flows_created: number;
  flows_active: number;
  /** Flows ended because nothing moved for `idle_timeout_ms`. */
  flows_expired: number;
}

/** One UDP service's counters. */
export interface UdpServiceCounters extends UdpTraffic {
  /** Datagrams dropped, by cause. */
  drops: Record<DropCause, number>;
  /** Per backend id. */
  backends: Record<string, UdpTraffic>;
}

/** Zeroed traffic counters. */
export function zeroTraffic(): UdpTraffic {
  return {
    datagrams_in: 0,
    datagrams_out: 0,
    bytes_in: 0,
    bytes_out: 0,
    flows_created: 0,
    flows_active: 0,
    flows_expired: 0,
  };
}

/** Zeroed service counters. */
export function zeroService(): UdpServiceCounters {
  const drops = Object.fromEntries(DROP_CAUSES.map((c) => [c, 0])) as Record<DropCause, number>;
  return { ...zeroTraffic(), drops, backends: {} };
}

/** A backend's traffic counters in `service`, made on first use. */
export function backendTraffic(service: UdpServiceCounters, id: string): UdpTraffic {
  return service.backends[id] ??= zeroTraffic();
}
