/**
 * Backends from DNS: every `dns:` and `srv:` entry of the config resolved
 * now and again when its records' TTL runs out (within `dns_min_ttl_ms` and
 * `dns_max_ttl_ms`), the targets it finds kept as the last known set. A
 * failed lookup, or an answer with no records, keeps that set (a DNS
 * mistake never empties a pool, unless the service says
 * `discovery: {allow_empty: true}`) and is logged once per episode; a name
 * never resolved yet is `pending`. Whoever owns the config hears of each
 * change and swaps a new snapshot in (see expand.ts).
 *
 * @module
 */
import type { Config, Discovered } from "../config/mod.ts";
import { lookup, type Resolver, systemResolver } from "./dns_client.ts";
import type { Answer } from "../net/dns_wire.ts";
import { entryKey, srvWeights, type Target } from "./expand.ts";
import {
  byAddress,
  type DiscoverySource,
  emptyRefused,
  type EntryState,
  entryStatus,
  lookupAnswered,
  lookupFailed,
} from "./entry.ts";

/** One entry being resolved. */
interface Entry extends EntryState {
  /** TTL bounds of its service. */
  minMs: number;
  maxMs: number;
  targets: Target[] | null;
  timer: ReturnType<typeof setTimeout> | null;
}

/** The DNS side of discovery for a running bal. */
export interface DnsDiscovery extends DiscoverySource {
  /** The last known targets of every entry, by its key. */
  readonly known: Map<string, readonly Target[]>;
}

/** Starts resolving `config`'s entries; `changed` hears when a set of targets changes. */
export function startDnsDiscovery(config: Config, changed: () => void): DnsDiscovery {
  const entries = new Map<string, Entry>();
  const known = new Map<string, readonly Target[]>();
  let resolver: Resolver = config.resolver ?? systemResolver();
  let stopped = false;
  const refresh = async (key: string) => {
    const e = entries.get(key);
    if (!e || stopped) return;
    e.timer = null;
    const found = await resolveEntry(resolver, e.entry);
    if (entries.get(key) !== e || stopped) return;
    const waitMs = settle(e, found, known, key, changed);
    e.timer = setTimeout(() => refresh(key), waitMs);
    Deno.unrefTimer(e.timer);
  };
  const discovery: DnsDiscovery = {
    known,
    follow(next) {
      resolver = next.resolver ?? systemResolver();
      const wanted = new Map(
        next.services.flatMap((s) =>
          s.discovered.filter((d) => d.kind !== "etcd").map((d) => [entryKey(d.template), { d, s }])
        ),
      );
      for (const [key, e] of entries) {
        if (wanted.has(key)) continue;
        if (e.timer) clearTimeout(e.timer);
        entries.delete(key);
        known.delete(key);
      }
      for (const [key, { d, s }] of wanted) {
        const bounds = { minMs: s.runtime.dns_min_ttl_ms, maxMs: s.runtime.dns_max_ttl_ms };
        const had = entries.get(key);
        if (had) Object.assign(had, { entry: d }, bounds);
        else {
          entries.set(key, {
            entry: d,
            ...bounds,
            targets: null,
            error: null,
            resolvedAt: null,
            timer: null,
          });
          refresh(key);
        }
      }
    },
    status: () => [...entries.values()].map((e) => entryStatus(e, e.targets?.length ?? null)),
    stop() {
      stopped = true;
      for (const e of entries.values()) if (e.timer) clearTimeout(e.timer);
    },
  };
  discovery.follow(config);
  return discovery;
}

/**
 * Takes in one lookup's outcome: the new set (told when it differs), or the
 * failure (said once per episode). An empty answer is a new, empty set only
 * with `allow_empty`; otherwise it keeps the last set, as a failure does.
 * Returns when to look again.
 */
function settle(
  e: Entry,
  found: Outcome,
  known: Map<string, readonly Target[]>,
  key: string,
  changed: () => void,
): number {
  const failed = (why: string) => {
    lookupFailed(e, why, e.targets?.length ?? null);
    return e.minMs;
  };
  if (typeof found === "string") return failed(found);
  if ("empty" in found && !e.entry.allow_empty) return failed(emptyRefused(found.empty));
  lookupAnswered(e);
  const { targets, ttlMs } = "empty" in found ? { targets: [], ttlMs: e.minMs } : found;
  const sorted = [...targets].sort(byAddress);
  if (JSON.stringify(sorted) !== JSON.stringify(e.targets)) {
    e.targets = sorted;
    known.set(key, sorted);
    changed();
  }
  return Math.min(e.maxMs, Math.max(e.minMs, ttlMs));
}

/** An answer that holds no backends: not a failure, but no set either (see `allow_empty`). */
interface Empty {
  empty: string;
}

/** A lookup's outcome: targets and how long they may be kept, an empty answer, or a failure. */
type Outcome = { targets: Target[]; ttlMs: number } | Empty | string;

/** An entry's targets and how long they may be kept, or why there are none. */
async function resolveEntry(resolver: Resolver, entry: Discovered): Promise<Outcome> {
  if (entry.kind === "dns") {
    const found = await addresses(resolver, entry.name);
    if (typeof found === "string" || "empty" in found) return found;
    const targets = found.addresses.map((host) => ({
      host,
      port: entry.port!,
      weight: null,
      backup: false,
    }));
    return { targets, ttlMs: found.ttl * 1000 };
  }
  return await srvTargets(resolver, entry.name);
}

/** Every A and AAAA address of `name`, with the smallest TTL; or why none. */
async function addresses(
  resolver: Resolver,
  name: string,
): Promise<{ addresses: string[]; ttl: number } | Empty | string> {
  const answers = await Promise.all([lookup(resolver, name, "A"), lookup(resolver, name, "AAAA")]);
  const records: Answer[] = [];
  const errors: string[] = [];
  for (const a of answers) {
    if (typeof a === "string") errors.push(a);
    else if (a.rcode !== 0 && a.rcode !== 3) errors.push(`DNS error code ${a.rcode}`);
    else records.push(...a.answers.filter((r) => r.type === "A" || r.type === "AAAA"));
  }
  if (records.length === 0) return errors[0] ?? { empty: `no A or AAAA records for ${name}` };
  return {
    addresses: [...new Set(records.map((r) => (r as { address: string }).address))],
    ttl: Math.min(...records.map((r) => r.ttl)),
  };
}

/**
 * SRV records of `name` as targets: each record's target resolved to its
 * addresses, its port, its weight mapped onto bal's, and every priority
 * but the best as backups.
 */
async function srvTargets(resolver: Resolver, name: string): Promise<Outcome> {
  const answer = await lookup(resolver, name, "SRV");
  if (typeof answer === "string") return answer;
  if (answer.rcode !== 0 && answer.rcode !== 3) return `DNS error code ${answer.rcode}`;
  // A target of "." says the service is not offered there (RFC 2782).
  const records = answer.answers.flatMap((r) => r.type === "SRV" && r.target !== "" ? [r] : []);
  if (records.length === 0) return { empty: `no SRV records for ${name}` };
  const best = Math.min(...records.map((r) => r.priority));
  const weights = srvWeights(records.map((r) => r.weight));
  let ttl = Math.min(...records.map((r) => r.ttl));
  const targets: Target[] = [];
  const lookups = await Promise.all(records.map((r) => addresses(resolver, r.target)));
  records.forEach((r, i) => {
    const found = lookups[i];
    if (typeof found === "string" || "empty" in found) return;
    ttl = Math.min(ttl, found.ttl);
    for (const host of found.addresses) {
      targets.push({ host, port: r.port, weight: weights[i], backup: r.priority > best });
    }
  });
  if (targets.length === 0) {
    const why = lookups.find((l) => typeof l === "string");
    if (!why) return { empty: `no address for any SRV target of ${name}` };
    return `no address for any SRV target of ${name} (${why})`;
  }
  return { targets, ttlMs: ttl * 1000 };
}
