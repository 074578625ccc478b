/**
 * From what discovery found to the config bal runs: each `dns:`/`srv:`
 * entry (and a service's etcd prefix) replaced by one backend per address
 * found, every setting taken from the entry. Pure: the file's config and
 * the last known targets in, a frozen config out, which the runtime swaps
 * in as a reload does.
 *
 * @module
 */
import {
  type Backend,
  type Config,
  deepFreeze,
  MAX_WEIGHT,
  type Service,
} from "../config/schema.ts";
import { formatAddress } from "../net/address.ts";

/** One address found: where, and the share and tier discovery gives it. */
export interface Target {
  host: string;
  port: number;
  /** Its weight (an SRV weight already mapped onto 0-256), or null: the entry's own. */
  weight: number | null;
  /** An SRV record of a lower priority than the best: used only when the best are down. */
  backup: boolean;
}

/** The last known targets of each discovered entry, by {@link entryKey}. */
export type Known = ReadonlyMap<string, readonly Target[]>;

/** The key of a discovered entry: its template's id (`service/dns:name:port`, `service/srv:name`). */
export function entryKey(template: Backend): string {
  return template.id;
}

/**
 * `config` with every discovered entry expanded into the backends `known`
 * holds for it (none while it is pending). A target that is already a
 * backend of its service (written in the file, or found twice) is kept once,
 * the first.
 */
export function expandConfig(config: Config, known: Known): Config {
  if (config.services.every((s) => s.discovered.length === 0)) return config;
  return deepFreeze({ ...config, services: config.services.map((s) => expandService(s, known)) });
}

function expandService(service: Service, known: Known): Service {
  if (service.discovered.length === 0) return service;
  const backends = [...service.backends];
  const seen = new Set(backends.map((b) => b.address));
  for (const entry of service.discovered) {
    for (const target of known.get(entryKey(entry.template)) ?? []) {
      const backend = backendAt(entry.template, target);
      if (seen.has(backend.address)) continue;
      seen.add(backend.address);
      backends.push(backend);
    }
  }
  const routes = service.routes.map((r) => ({
    ...r,
    backends: backends.filter((b) => b.route === r.name),
  }));
  return { ...service, backends, routes };
}

/** A backend at `target`, with its entry's settings. */
export function backendAt(template: Backend, target: Target): Backend {
  const address = formatAddress(target.host, target.port);
  return {
    ...template,
    host: target.host,
    port: target.port,
    address,
    id: `${template.service}/${address}`,
    weight: target.weight ?? template.weight,
    backup: template.backup || target.backup,
  };
}

/**
 * SRV weights (0-65535) as bal weights (0-256), in proportion: unchanged
 * when they fit, else scaled so the largest is 256. A weight of 0 becomes 1
 * (RFC 2782: such a target is picked rarely, not never), unless all are 0.
 */
export function srvWeights(weights: readonly number[]): number[] {
  const max = Math.max(0, ...weights);
  if (max === 0) return weights.map(() => 1);
  const scale = max > MAX_WEIGHT ? MAX_WEIGHT / max : 1;
  return weights.map((w) => Math.max(1, Math.round(w * scale)));
}
