/**
 * Discovery for a running bal: DNS names and SRV records (`dns.ts`) and
 * etcd prefixes (`etcd.ts`, loaded only when a config uses etcd), their
 * targets in one table that `expand.ts` turns into the running config.
 *
 * @module
 */
import type { Config } from "../config/mod.ts";
import { startDnsDiscovery } from "./dns.ts";
import type { DiscoverySource } from "./entry.ts";
import type { Target } from "./expand.ts";

/** Every source of backends of a running bal. */
export interface Discovery extends DiscoverySource {
  /** The last known targets of every discovered entry, by its key. */
  readonly known: ReadonlyMap<string, readonly Target[]>;
  /**
   * Takes the targets the bal before knew (`bal upgrade`) as the last known
   * ones, until this bal's own lookups answer.
   */
  seed(known: Iterable<[string, readonly Target[]]>): void;
}

/** Starts discovering `config`'s entries; `changed` hears when any set of targets changes. */
export function startDiscovery(config: Config, changed: () => void): Discovery {
  const dns = startDnsDiscovery(config, changed);
  let etcd: DiscoverySource | null = null;
  let latest = config;
  let loading = false;
  let stopped = false;
  const usesEtcd = (c: Config) =>
    c.services.some((s) => s.discovered.some((d) => d.kind === "etcd"));
  const follow = (c: Config) => {
    latest = c;
    dns.follow(c);
    if (etcd) return etcd.follow(c);
    if (!usesEtcd(c) || loading) return;
    loading = true;
    import("./etcd.ts").then((m) => {
      if (!stopped) etcd = m.startEtcdDiscovery(latest, dns.known, changed);
    });
  };
  follow(config);
  return {
    known: dns.known,
    seed: (known) => {
      for (const [key, targets] of known) dns.known.set(key, targets);
    },
    follow,
    status: () => [...dns.status(), ...(etcd?.status() ?? [])],
    stop() {
      stopped = true;
      dns.stop();
      etcd?.stop();
    },
  };
}
