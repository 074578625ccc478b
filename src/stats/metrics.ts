/**
 * `GET /metrics`: every metric bal exports, as one table of descriptors
 * (name, type, help, samples), rendered in the Prometheus text exposition
 * format. Pure: the admin endpoint gathers the input, as `status` does.
 * Counters are summed over every data plane and kept across reloads.
 *
 * @module
 */
import { LAG_BUCKETS } from "./loop_lag.ts";
import { weightOf } from "../balance/admin_state.ts";
import { backendTotal, CONNECT_BUCKETS, serviceTotal } from "./counters.ts";
import {
  backends,
  type Descriptor,
  type Histogram,
  type Labels,
  type MetricsInput,
  ofBackend,
  ofService,
  perBackend,
  perService,
  services,
} from "./metric_types.ts";
import { UDP_METRICS } from "./udp_metrics.ts";
import { SHAPING_METRICS } from "./shaping_metrics.ts";

export type { MetricsInput } from "./metric_types.ts";

/** Every metric bal exports. */
export const METRICS: readonly Descriptor[] = [
  {
    name: "bal_build_info",
    type: "gauge",
    help:
      "Always 1; the labels say which bal runs, its engine, and why auto fell back (if it did).",
    samples: (i) => [{
      labels: { version: i.version, engine: i.engine, engine_fallback: i.engineFallback ?? "" },
      value: 1,
    }],
  },
  {
    name: "bal_tls_certificate_not_after_seconds",
    type: "gauge",
    help:
      "When a certificate a service terminates TLS with expires, in seconds since the epoch; labelled with its file and names (route: a route's own certificate).",
    samples: (i) =>
      i.certificates.map((c) => ({
        labels: {
          service: c.service,
          route: c.route,
          cert_file: c.cert_file,
          names: c.names.join(","),
        },
        value: c.not_after / 1000,
      })),
  },
  {
    name: "bal_process_start_time_seconds",
    type: "gauge",
    help: "When the process started, in seconds since the epoch.",
    samples: (i) => [{ labels: {}, value: i.startedAt / 1000 }],
  },
  {
    name: "bal_process_resident_memory_bytes",
    type: "gauge",
    help: "Resident memory of the process.",
    samples: (i) => [{ labels: {}, value: i.rssBytes }],
  },
  {
    name: "bal_process_open_fds",
    type: "gauge",
    help: "Open file descriptors of the process.",
    samples: (i) => i.openFds === null ? [] : [{ labels: {}, value: i.openFds }],
  },
  {
    name: "bal_config_generation",
    type: "gauge",
    help: "The config snapshot in force: 1 at start, one more per successful reload.",
    samples: (i) => [{ labels: {}, value: i.snapshot.generation }],
  },
  {
    name: "bal_reloads_total",
    type: "counter",
    help: "Reloads by outcome.",
    samples: (i) => [
      { labels: { outcome: "ok" }, value: i.reloads.ok },
      { labels: { outcome: "failed" }, value: i.reloads.failed },
    ],
  },
  {
    name: "bal_upgrades_total",
    type: "counter",
    help: "Upgrades (bal upgrade, bal restart) since the cold start this process descends from.",
    samples: (i) => [{ labels: {}, value: i.upgrades }],
  },
  {
    name: "bal_connections_accepted_total",
    type: "counter",
    help: "Clients a service's listener accepted.",
    samples: perService((c) => c.accepted),
  },
  {
    name: "bal_connections_served_total",
    type: "counter",
    help: "Clients a backend took.",
    samples: perService((c) => c.served),
  },
  {
    name: "bal_connections_rejected_total",
    type: "counter",
    help:
      "Clients closed without a backend, by cause: limit (max_concurrent_connections), no_backend, acl (allow/deny), client_limit (max_connections_per_client), client_rate (connection_rate_per_client), proxy (PROXY header refused), route (no SNI route and no default_route), tls_handshake (a service with tls: whose handshake failed or whose client certificate was refused) or loop (bal's own connect: a backend is bal itself).",
    samples: (i) =>
      services(i).flatMap((s) => {
        const c = serviceTotal(i.planes, s.name);
        return [
          { labels: { ...ofService(s), cause: "limit" }, value: c.rejected },
          { labels: { ...ofService(s), cause: "no_backend" }, value: c.no_backend },
          { labels: { ...ofService(s), cause: "acl" }, value: c.denied },
          { labels: { ...ofService(s), cause: "client_limit" }, value: c.client_limited },
          { labels: { ...ofService(s), cause: "client_rate" }, value: c.rate_limited },
          { labels: { ...ofService(s), cause: "proxy" }, value: c.proxy_refused },
          { labels: { ...ofService(s), cause: "route" }, value: c.no_route },
          { labels: { ...ofService(s), cause: "tls_handshake" }, value: c.tls_handshake },
          { labels: { ...ofService(s), cause: "loop" }, value: c.looped },
        ];
      }),
  },
  {
    name: "bal_connections_idle_closed_total",
    type: "counter",
    help: "Connections closed after connection_idle_timeout_ms without a byte.",
    samples: perService((c) => c.idle_closed),
  },
  {
    name: "bal_connections_active",
    type: "gauge",
    help: "Live client connections of a service.",
    samples: perService((c) => c.active),
  },
  {
    name: "bal_protection_mode",
    type: "gauge",
    help: "1 while a service's protection mode is on.",
    samples: (i) =>
      services(i).map((s) => ({
        labels: ofService(s),
        value: i.protection.get(s.name)?.enabled ? 1 : 0,
      })),
  },
  {
    name: "bal_backend_connections_total",
    type: "counter",
    help: "Clients a backend took.",
    samples: perBackend((c) => c.served),
  },
  {
    name: "bal_backend_active_connections",
    type: "gauge",
    help: "Connections assigned to a backend now.",
    samples: perBackend((c) => c.active),
  },
  {
    name: "bal_backend_received_bytes_total",
    type: "counter",
    help: "Bytes from clients forwarded to a backend, counted as they move.",
    samples: perBackend((c) => c.bytes_in),
  },
  {
    name: "bal_backend_sent_bytes_total",
    type: "counter",
    help: "Bytes from a backend forwarded to clients, counted as they move.",
    samples: perBackend((c) => c.bytes_out),
  },
  {
    name: "bal_backend_connect_failures_total",
    type: "counter",
    help:
      "Failed connects to a backend on the data path, by kind (timeout, refused, tls: the TLS handshake of backend_tls, other).",
    samples: (i) =>
      backends(i).flatMap((b) => {
        const c = backendTotal(i.planes, b.id);
        return (["timeout", "refused", "tls", "other"] as const).map((kind) => ({
          labels: { ...ofBackend(b), kind },
          value: c[kind],
        }));
      }),
  },
  {
    name: "bal_backend_connect_duration_seconds",
    type: "histogram",
    help: "How long successful connects to a backend took.",
    samples: () => [],
    histograms: (i) =>
      backends(i).map((b) => {
        const c = backendTotal(i.planes, b.id);
        return {
          labels: ofBackend(b),
          bounds: CONNECT_BUCKETS,
          counts: c.connect_buckets,
          sum: c.connect_seconds,
        };
      }),
  },
  {
    name: "bal_event_loop_lag_seconds",
    type: "histogram",
    help:
      "How much later than asked the main thread's event loop ran a timer, sampled every 100 ms.",
    samples: () => [],
    histograms: (
      i,
    ) => [{ labels: {}, bounds: LAG_BUCKETS, counts: i.lag.buckets, sum: i.lag.sumSeconds }],
  },
  {
    name: "bal_backend_up",
    type: "gauge",
    help: "1 while a backend is healthy (checks and passive observation).",
    samples: (i) =>
      backends(i).map((b) => ({
        labels: ofBackend(b),
        value: i.health.get(b.id)?.healthy === false ? 0 : 1,
      })),
  },
  {
    name: "bal_backend_admin_state",
    type: "gauge",
    help: "1 for a backend's admin state (enabled, draining, disabled), 0 for the others.",
    samples: (i) =>
      backends(i).flatMap((b) => {
        const state = i.admin.get(b.id)?.state ?? "enabled";
        return ["enabled", "draining", "disabled"].map((s) => ({
          labels: { ...ofBackend(b), state: s },
          value: s === state ? 1 : 0,
        }));
      }),
  },
  {
    name: "bal_backend_weight",
    type: "gauge",
    help: "A backend's weight in force (an operator's override, else the config's).",
    samples: (i) =>
      backends(i).map((b) => ({ labels: ofBackend(b), value: weightOf(b, i.admin.get(b.id)) })),
  },
  ...UDP_METRICS,
  ...SHAPING_METRICS,
];

/** The exposition text of every metric. */
export function renderMetrics(input: MetricsInput): string {
  const out: string[] = [];
  for (const m of METRICS) {
    out.push(`# HELP ${m.name} ${m.help}`, `# TYPE ${m.name} ${m.type}`);
    // Pushed one at a time: spread as arguments, 10,000 backends' lines overflowed the stack.
    for (const h of m.histograms?.(input) ?? []) {
      for (const line of histogramLines(m.name, h)) out.push(line);
    }
    for (const s of m.samples(input)) {
      out.push(`${m.name}${labelText(s.labels)} ${number(s.value)}`);
    }
  }
  return out.join("\n") + "\n";
}

/** A histogram series' lines: cumulative buckets, then sum and count. */
function histogramLines(name: string, h: Histogram): string[] {
  let cumulative = 0;
  const lines = h.counts.map((n, k) => {
    cumulative += n;
    const le = k < h.bounds.length ? String(h.bounds[k]) : "+Inf";
    return `${name}_bucket${labelText({ ...h.labels, le })} ${cumulative}`;
  });
  lines.push(`${name}_sum${labelText(h.labels)} ${number(h.sum)}`);
  lines.push(`${name}_count${labelText(h.labels)} ${cumulative}`);
  return lines;
}

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) =>
    `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`
  );
  return parts.length ? `{${parts.join(",")}}` : "";
}

function number(v: number): string {
  return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(12)));
}
