/**
 * What traffic shaping adds to the metrics table: what each bandwidth
 * limit (a service's, a backend's) held back and for how long, and what a
 * service's mirror copied and dropped.
 *
 * @module
 */
import type { Backend, Service } from "../config/schema.ts";
import {
  backendTotal,
  type ServiceCounters,
  serviceTotal,
  type ShapingCounters,
} from "./counters.ts";
import {
  type Descriptor,
  type Labels,
  type MetricsInput,
  ofBackend,
  ofService,
  type Sample,
  services,
} from "./metric_types.ts";

/** Whose limit a sample is of: a service's (labels: service) or a backend's (also backend). */
function limited(i: MetricsInput): { labels: Labels; c: ShapingCounters }[] {
  const owners: { labels: Labels; c: ShapingCounters }[] = [];
  for (const s of services(i)) {
    if (s.bandwidth) owners.push({ labels: ofService(s), c: serviceTotal(i.planes, s.name) });
    for (const b of s.backends.filter((b: Backend) => b.bandwidth)) {
      owners.push({ labels: ofBackend(b), c: backendTotal(i.planes, b.id) });
    }
  }
  return owners;
}

/** One sample per limit and direction. */
const bothWays = (pick: (c: ShapingCounters, upload: boolean) => number) => (i: MetricsInput) =>
  limited(i).flatMap(({ labels, c }) =>
    [true, false].map((upload): Sample => ({
      labels: { ...labels, direction: upload ? "upload" : "download" },
      value: pick(c, upload),
    }))
  );

const mirroring = (i: MetricsInput) => services(i).filter((s: Service) => s.mirror);

/** One sample per service with a mirror. */
const perMirror = (pick: (c: ServiceCounters) => number) => (i: MetricsInput) =>
  mirroring(i).map((s) => ({ labels: ofService(s), value: pick(serviceTotal(i.planes, s.name)) }));

/** Bandwidth limits' and mirrors' metrics. */
export const SHAPING_METRICS: readonly Descriptor[] = [
  {
    name: "bal_bandwidth_delayed_bytes_total",
    type: "counter",
    help:
      "Bytes read after a pause that a bandwidth limit imposed, by limit (a service's, or a backend's with the backend label) and direction (upload: from clients; download: from backends).",
    samples: bothWays((c, up) => up ? c.upload_delayed_bytes : c.download_delayed_bytes),
  },
  {
    name: "bal_bandwidth_paused_seconds_total",
    type: "counter",
    help:
      "Seconds reads spent paused by a bandwidth limit, connections added up, by limit and direction.",
    samples: bothWays((c, up) => (up ? c.upload_paused_ms : c.download_paused_ms) / 1000),
  },
  {
    name: "bal_mirror_connections_total",
    type: "counter",
    help: "Client connections a service copied to its mirror.",
    samples: perMirror((c) => c.mirrored),
  },
  {
    name: "bal_mirror_bytes_total",
    type: "counter",
    help: "Bytes a service's mirror was sent.",
    samples: perMirror((c) => c.mirror_bytes),
  },
  {
    name: "bal_mirror_dropped_total",
    type: "counter",
    help:
      "Mirror copies closed early while the client went on, by cause: connect (mirror unreachable), buffer_full (it fell buffer_bytes behind) or error.",
    samples: (i) =>
      mirroring(i).flatMap((s) => {
        const c = serviceTotal(i.planes, s.name);
        return [
          { labels: { ...ofService(s), cause: "connect" }, value: c.mirror_dropped_connect },
          {
            labels: { ...ofService(s), cause: "buffer_full" },
            value: c.mirror_dropped_buffer_full,
          },
          { labels: { ...ofService(s), cause: "error" }, value: c.mirror_dropped_error },
        ];
      }),
  },
];
