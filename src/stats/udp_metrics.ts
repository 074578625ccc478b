/**
 * What UDP services add to the metrics table: datagrams, bytes, flows and
 * drops, per service and per backend.
 *
 * @module
 */
import type { Service } from "../config/schema.ts";
import { DROP_CAUSES, type UdpTraffic, zeroService } from "./udp_counters.ts";
import {
  type Descriptor,
  type MetricsInput,
  ofBackend,
  ofService,
  services,
} from "./metric_types.ts";

const udpServices = (i: MetricsInput) => services(i).filter((s) => s.protocol === "udp");
const udpOf = (i: MetricsInput, s: Service) => i.udp[s.name] ?? zeroService();

/** A UDP service's sample per direction (`in` from clients, `out` to them). */
const udpBoth = (pick: (c: UdpTraffic, dir: "in" | "out") => number) => (i: MetricsInput) =>
  udpServices(i).flatMap((s) =>
    (["in", "out"] as const).map((dir) => ({
      labels: { ...ofService(s), direction: dir },
      value: pick(udpOf(i, s), dir),
    }))
  );

/** What UDP services add: datagrams, bytes, flows and drops. */
export const UDP_METRICS: readonly Descriptor[] = [
  {
    name: "bal_udp_datagrams_total",
    type: "counter",
    help: "Datagrams of a UDP service: in from clients, out to them (the replies).",
    samples: udpBoth((c, dir) => dir === "in" ? c.datagrams_in : c.datagrams_out),
  },
  {
    name: "bal_udp_bytes_total",
    type: "counter",
    help: "Payload bytes of a UDP service, by direction.",
    samples: udpBoth((c, dir) => dir === "in" ? c.bytes_in : c.bytes_out),
  },
  {
    name: "bal_udp_flows_active",
    type: "gauge",
    help: "Live flows of a UDP service (a client's session, or a request waiting for its replies).",
    samples: (i) =>
      udpServices(i).map((s) => ({ labels: ofService(s), value: udpOf(i, s).flows_active })),
  },
  {
    name: "bal_udp_flows_total",
    type: "counter",
    help: "Flows a UDP service started.",
    samples: (i) =>
      udpServices(i).map((s) => ({ labels: ofService(s), value: udpOf(i, s).flows_created })),
  },
  {
    name: "bal_udp_flows_expired_total",
    type: "counter",
    help: "Flows that ended after idle_timeout_ms with no datagram either way.",
    samples: (i) =>
      udpServices(i).map((s) => ({ labels: ofService(s), value: udpOf(i, s).flows_expired })),
  },
  {
    name: "bal_udp_dropped_total",
    type: "counter",
    help:
      "Datagrams a UDP service dropped, by cause (no_backend, limit, acl, oversize, queue_full, proxy).",
    samples: (i) =>
      udpServices(i).flatMap((s) =>
        DROP_CAUSES.map((cause) => ({
          labels: { ...ofService(s), cause },
          value: udpOf(i, s).drops[cause],
        }))
      ),
  },
  {
    name: "bal_udp_backend_flows_active",
    type: "gauge",
    help: "Live flows to a backend of a UDP service.",
    samples: (i) =>
      udpServices(i).flatMap((s) =>
        s.backends.map((b) => ({
          labels: ofBackend(b),
          value: udpOf(i, s).backends[b.id]?.flows_active ?? 0,
        }))
      ),
  },
];
