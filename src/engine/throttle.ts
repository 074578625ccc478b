/**
 * A connection's bandwidth limits as its relay uses them, whatever the
 * engine: a gate per direction (upload: read from the client; download:
 * read from the backend) holding the buckets of its service's and its
 * backend's `bandwidth:`. A relay asks {@link room} before each read, reads
 * at most that, reports it with {@link paid}, and at zero stops reading
 * that side and calls {@link hold}, which resumes it when the budget is
 * back: limits pause reads, so the kernel's flow control slows the sender
 * and nothing is dropped or buffered without bound.
 *
 * A `per: client` budget is one bucket shared by a client IP's live
 * connections on this data plane, kept while any of them lives. The
 * bucket math is route/bandwidth.ts.
 *
 * @module
 */
import type { Backend, Bandwidth, Service } from "../config/schema.ts";
import { allowance, binding, type Bucket, bucket, spend, waitMs } from "../route/bandwidth.ts";
import type { ShapingCounters } from "../stats/counters.ts";

/** One direction's limits for one connection. */
export interface Gate {
  readonly upload: boolean;
  readonly buckets: Bucket[];
  /** Whose counters each bucket's pauses are credited to (its service's or its backend's). */
  readonly owners: ShapingCounters[];
  /** The pause under way: its timer, when it began, the limit that caused it. */
  timer: ReturnType<typeof setTimeout> | null;
  since: number;
  owner: ShapingCounters | null;
  /** Called when the pause ends (or the connection does, so a waiting reader wakes). */
  resume: (() => void) | null;
  /** The next read follows a pause: its bytes are counted as delayed. */
  resumed: boolean;
  /** The connection ended: no more pauses. */
  released: boolean;
  /** Epoch ms of the last {@link room}: the read that follows is paid at that time (one clock read per read). */
  at: number;
}

/** A connection's limits both ways, and the shared buckets it holds a share of. */
export interface Shape {
  readonly up: Gate | null;
  readonly down: Gate | null;
  readonly shared: readonly string[];
}

/** Per-client buckets of one data plane, by limit and client, with how many connections hold each. */
export type SharedBuckets = Map<string, { bucket: Bucket; users: number }>;

/** One limit that applies to a connection, and whom it is counted for. */
interface Limit {
  readonly id: string;
  readonly bandwidth: Bandwidth;
  readonly counters: ShapingCounters;
}

/**
 * The limits of a connection from `clientIp` to `backend` of `service`
 * (null when neither has `bandwidth:`), taken at its start: a reload
 * changes new connections' limits, not this one's.
 */
export function shapeOf(
  table: SharedBuckets,
  service: Service,
  backend: Backend,
  clientIp: string,
  counters: { service: ShapingCounters; backend: ShapingCounters },
  now: number,
): Shape | null {
  const limits: Limit[] = [];
  if (service.bandwidth) {
    limits.push({
      id: `s:${service.name}`,
      bandwidth: service.bandwidth,
      counters: counters.service,
    });
  }
  if (backend.bandwidth) {
    limits.push({
      id: `b:${backend.id}`,
      bandwidth: backend.bandwidth,
      counters: counters.backend,
    });
  }
  if (limits.length === 0) return null;
  const shared: string[] = [];
  const gate = (upload: boolean): Gate | null => {
    const buckets: Bucket[] = [];
    const owners: ShapingCounters[] = [];
    for (const { id, bandwidth, counters } of limits) {
      const rate = upload ? bandwidth.upload_bytes_per_s : bandwidth.download_bytes_per_s;
      if (rate === 0) continue;
      owners.push(counters);
      if (bandwidth.per === "connection") {
        buckets.push(bucket(rate, now));
        continue;
      }
      const key = `${id}|${upload ? "up" : "down"}|${rate}|${clientIp}`;
      let entry = table.get(key);
      if (!entry) table.set(key, entry = { bucket: bucket(rate, now), users: 0 });
      entry.users++;
      shared.push(key);
      buckets.push(entry.bucket);
    }
    if (buckets.length === 0) return null;
    return {
      upload,
      buckets,
      owners,
      timer: null,
      since: 0,
      owner: null,
      resume: null,
      resumed: false,
      released: false,
      at: now,
    };
  };
  return { up: gate(true), down: gate(false), shared };
}

/** The gate of the direction read from the client (`fromClient`) or from the backend. */
export function gateOf(shape: Shape | null, fromClient: boolean): Gate | null {
  return shape ? (fromClient ? shape.up : shape.down) : null;
}

/** Bytes the direction may read now, at most `max`; 0: stop reading and {@link hold}. */
export function room(g: Gate | null, max: number): number {
  if (!g || g.released) return max;
  if (g.timer !== null) return 0;
  g.at = Date.now();
  return allowance(g.buckets, max, g.at);
}

/** The direction read `n` bytes: its buckets pay them. */
export function paid(g: Gate | null, n: number): void {
  if (!g || n <= 0) return;
  spend(g.buckets, n, g.at);
  if (!g.resumed) return;
  g.resumed = false;
  for (const c of g.owners) {
    if (g.upload) c.upload_delayed_bytes += n;
    else c.download_delayed_bytes += n;
  }
}

/**
 * Pauses the direction until its budget allows a read again, then calls
 * `resume` (once). The pause is credited to the limit that caused it.
 */
export function hold(g: Gate, resume: () => void): void {
  if (g.timer !== null) return;
  const now = Date.now();
  const i = binding(g.buckets, now);
  g.owner = g.owners[Math.max(0, i)];
  g.since = now;
  g.resume = resume;
  g.timer = setTimeout(() => {
    g.timer = null;
    g.resume = null;
    credit(g, Date.now());
    g.resumed = true;
    resume();
  }, waitMs(g.buckets, now));
}

function credit(g: Gate, now: number): void {
  const ms = now - g.since;
  if (!g.owner) return;
  if (g.upload) g.owner.upload_paused_ms += ms;
  else g.owner.download_paused_ms += ms;
  g.owner = null;
}

/**
 * The connection ended: pauses stopped (a reader waiting on one wakes, to
 * find its socket closed), its share of client buckets given back.
 */
export function releaseShape(table: SharedBuckets, shape: Shape): void {
  for (const g of [shape.up, shape.down]) {
    if (g) g.released = true;
    if (g?.timer == null) continue;
    clearTimeout(g.timer);
    g.timer = null;
    credit(g, Date.now());
    const resume = g.resume;
    g.resume = null;
    resume?.();
  }
  for (const key of shape.shared) {
    const entry = table.get(key);
    if (entry && --entry.users <= 0) table.delete(key);
  }
}
