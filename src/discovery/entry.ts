/**
 * What every discovered entry (a DNS name, SRV records, an etcd prefix)
 * has in common: its standing for status, the once-per-outage log lines,
 * and the order its targets are kept in.
 *
 * @module
 */
import type { Config, Discovered } from "../config/mod.ts";
import { logger } from "../log.ts";
import { count } from "../text.ts";
import type { Target } from "./expand.ts";

const log = logger("discovery");

/** How one entry stands, as status shows it. */
export interface EntryStatus {
  service: string;
  kind: "dns" | "srv" | "etcd";
  name: string;
  /** `pending` until a first answer with records; `failing` while lookups fail (the last set stays). */
  state: "pending" | "ok" | "failing";
  /** Addresses in the last known set. */
  targets: number;
  last_error: string | null;
  /** ISO time of the last answer with records, or null. */
  resolved_at: string | null;
}

/** One kind of discovery for a running bal. */
export interface DiscoverySource {
  /** Makes the entries those of `config` (start, reload): kept ones keep their targets. */
  follow(config: Config): void;
  status(): EntryStatus[];
  stop(): void;
}

/** What is known of an entry's lookups. */
export interface EntryState {
  entry: Discovered;
  /** Why the last lookup failed, or null. */
  error: string | null;
  /** Epoch ms of the last good answer, or null before the first. */
  resolvedAt: number | null;
}

/** A lookup failed: said once per outage, with what is kept meanwhile (`kept`: null before any set). */
export function lookupFailed(s: EntryState, error: string, kept: number | null): void {
  if (s.error === null) {
    const keeping = kept === null
      ? "no backends from it yet"
      : `keeping the last ${kept === 1 ? "address" : `${count(kept)} addresses`}`;
    log.warn(`{kind} {name}: {error}; ${keeping}`, {
      event: "discovery_failed",
      ...names(s.entry),
      error,
      targets: kept ?? 0,
    });
  }
  s.error = error;
}

/** Why an answer with no backends was not applied: the rule, and how to opt out of it. */
export function emptyRefused(what: string): string {
  return `${what} (an empty answer keeps the last set; discovery.allow_empty: true lets it empty the pool)`;
}

/** A lookup answered: the end of an outage is said. */
export function lookupAnswered(s: EntryState): void {
  if (s.error !== null && s.resolvedAt !== null) {
    log.info("{kind} {name} answers again", { event: "discovery_recovered", ...names(s.entry) });
  }
  s.error = null;
  s.resolvedAt = Date.now();
}

/** An entry's standing; `targets` is null before its first good answer. */
export function entryStatus(s: EntryState, targets: number | null): EntryStatus {
  return {
    ...names(s.entry),
    state: targets === null ? "pending" : s.error === null ? "ok" : "failing",
    targets: targets ?? 0,
    last_error: s.error,
    resolved_at: s.resolvedAt === null ? null : new Date(s.resolvedAt).toISOString(),
  };
}

function names(d: Discovered) {
  return { service: d.template.service, kind: d.kind, name: d.name };
}

/** Targets in a stable order, so two answers with the same set compare equal. */
export function byAddress(a: Target, b: Target): number {
  return a.host < b.host ? -1 : a.host > b.host ? 1 : a.port - b.port;
}
