/**
 * The shape of bal's metrics table (metrics.ts): what the metrics are read
 * from, one descriptor per metric, and the label helpers every part of the
 * table uses (UDP's and shaping's descriptors live in modules of their own).
 *
 * @module
 */
import type { LoopLag } from "./loop_lag.ts";
import type { Backend, Service } from "../config/schema.ts";
import type { BackendAdmin } from "../balance/admin_state.ts";
import { backendTotal, type PlaneStats, serviceTotal } from "./counters.ts";
import type { HealthState } from "../health/state.ts";
import type { ProtectionState } from "../health/protection.ts";
import type { Snapshot } from "../snapshot.ts";
import type { UdpServiceCounters } from "./udp_counters.ts";

/** What the metrics are read from. */
export interface MetricsInput {
  version: string;
  engine: string;
  /** Why `engine: auto` passed over faster engines, or null. */
  engineFallback: string | null;
  /** How late the main thread's event loop ran timers. */
  lag: LoopLag;
  /** Epoch ms the process started. */
  startedAt: number;
  rssBytes: number;
  /** Open file descriptors, or null where the OS does not say. */
  openFds: number | null;
  snapshot: Snapshot;
  health: ReadonlyMap<string, HealthState>;
  admin: ReadonlyMap<string, BackendAdmin>;
  protection: ReadonlyMap<string, ProtectionState>;
  planes: readonly PlaneStats[];
  reloads: { ok: number; failed: number };
  /** Upgrades since the cold start this process descends from. */
  upgrades: number;
  /** The UDP services' counters by name. */
  udp: Readonly<Record<string, UdpServiceCounters>>;
  /** The certificates services terminate TLS with. */
  certificates: readonly CertificateSample[];
}

/** A certificate a service (or one of its routes) terminates TLS with. */
export interface CertificateSample {
  service: string;
  /** The route whose own certificate it is, or "" for the service's. */
  route: string;
  cert_file: string;
  names: readonly string[];
  /** When it expires, epoch ms. */
  not_after: number;
}

/** A sample's labels. */
export type Labels = Record<string, string>;
/** One value of a metric. */
export interface Sample {
  labels: Labels;
  value: number;
}

/** One metric: how it is named, typed and described, and its samples. */
export interface Descriptor {
  name: string;
  type: "counter" | "gauge" | "histogram";
  help: string;
  samples(input: MetricsInput): Sample[];
  /** A histogram's series: cumulative buckets, sum and count of each. */
  histograms?(input: MetricsInput): Histogram[];
}

/** One histogram series: counts per bound of `bounds`, then over the last. */
export interface Histogram {
  labels: Labels;
  bounds: readonly number[];
  counts: readonly number[];
  sum: number;
}

/** The services of the snapshot in force. */
export const services = (i: MetricsInput) => i.snapshot.config.services;
/** Every backend of every service. */
export const backends = (i: MetricsInput) => services(i).flatMap((s) => s.backends);
/** The labels of a service's samples. */
export const ofService = (s: Service): Labels => ({ service: s.name });
/** The labels of a backend's samples. */
export const ofBackend = (b: Backend): Labels => ({ service: b.service, backend: b.address });

/** A per-service sample from the summed service counters. */
export const perService =
  (value: (c: ReturnType<typeof serviceTotal>) => number) => (i: MetricsInput) =>
    services(i).map((s) => ({
      labels: ofService(s),
      value: value(serviceTotal(i.planes, s.name)),
    }));

/** A per-backend sample from the summed backend counters. */
export const perBackend =
  (value: (c: ReturnType<typeof backendTotal>) => number) => (i: MetricsInput) =>
    backends(i).map((b) => ({ labels: ofBackend(b), value: value(backendTotal(i.planes, b.id)) }));
