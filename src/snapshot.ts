/**
 * The one place the running config lives. A reload builds a new immutable
 * {@link Snapshot} and swaps it in with a single assignment; every part of
 * bal reads `runtime.snapshot` when it needs config, and keeps no copy.
 *
 * @module
 */
import { allBackends, type Backend, type Config, poolsOf, type Service } from "./config/schema.ts";
import { type HealthTable, initialHealth, syncHealth, unprovenHealth } from "./health/state.ts";
import { initialProtection, type ProtectionState } from "./health/protection.ts";
import { type AdminTable, pruneAdmin } from "./balance/admin_state.ts";
import type { Balancer } from "./balance/balancer.ts";
import { createBalancer } from "./balance/methods.ts";

/** One loaded config, frozen, with its lookups. */
export interface Snapshot {
  readonly config: Config;
  /** Absolute path of the file it was read from. */
  readonly configPath: string;
  /** 1 for the config bal started with, +1 per successful reload. */
  readonly generation: number;
  /** Epoch ms when it was loaded. */
  readonly loadedAt: number;
  /** Services by name. */
  readonly services: ReadonlyMap<string, Service>;
  /** Backends by id (`service/address`). */
  readonly backends: ReadonlyMap<string, Backend>;
}

/** A service's balancer on this data plane, and the method it was made for. */
interface PlaneBalancer {
  readonly method: string;
  readonly balancer: Balancer;
}

/** The process's live state: the current snapshot and what outlives it. */
export interface Runtime {
  /** Replaced whole on reload, never mutated. */
  snapshot: Snapshot;
  /** Health per backend id; survives reloads for backends that stay. */
  readonly health: HealthTable;
  /** Operators' drain/disable/weight per backend id; survives reloads for backends that stay. */
  readonly admin: AdminTable;
  /** Protection mode per service; each state replaced whole on change, survives reloads. */
  readonly protection: Map<string, ProtectionState>;
  /** Each pool's balancer on this data plane (by poolKey); survives reloads while the method stays. */
  readonly balancers: Map<string, PlaneBalancer>;
}

function snapshotOf(config: Config, configPath: string, generation: number): Snapshot {
  return {
    config,
    configPath,
    generation,
    loadedAt: Date.now(),
    services: new Map(config.services.map((s) => [s.name, s])),
    backends: new Map(allBackends(config).map((b) => [b.id, b])),
  };
}

/** Creates the runtime for the config bal starts with. */
export function createRuntime(config: Config, configPath: string): Runtime {
  const runtime: Runtime = {
    snapshot: snapshotOf(config, configPath, 1),
    health: new Map(),
    admin: new Map(),
    protection: new Map(),
    balancers: new Map(),
  };
  follow(runtime);
  return runtime;
}

/** Makes `config` the current one: every per-backend and per-service table follows it. */
export function swapSnapshot(runtime: Runtime, config: Config): Snapshot {
  const { configPath, generation } = runtime.snapshot;
  runtime.snapshot = snapshotOf(config, configPath, generation + 1);
  follow(runtime);
  return runtime.snapshot;
}

/** Brings the tables in line with the snapshot: what stays keeps its state. */
function follow(runtime: Runtime): void {
  const { services, backends } = runtime.snapshot;
  syncHealth(
    runtime.health,
    [...backends.keys()],
    (id) => backends.get(id)?.source === "static" ? initialHealth() : unprovenHealth(),
  );
  pruneAdmin(runtime.admin, new Set(backends.keys()));
  for (const name of runtime.protection.keys()) {
    if (!services.has(name)) runtime.protection.delete(name);
  }
  const pools = new Map([...services.values()].flatMap(poolsOf));
  for (const key of runtime.balancers.keys()) {
    if (!pools.has(key)) runtime.balancers.delete(key);
  }
  for (const service of services.values()) {
    if (!runtime.protection.has(service.name)) {
      runtime.protection.set(service.name, initialProtection());
    }
  }
  for (const [key, pool] of pools) {
    if (runtime.balancers.get(key)?.method !== pool.method) {
      runtime.balancers.set(key, { method: pool.method, balancer: createBalancer(pool.method) });
    }
  }
}

/** A service's protection mode (off for a service the runtime does not know). */
export function protectionOf(runtime: Runtime, service: string): ProtectionState {
  return runtime.protection.get(service) ?? initialProtection();
}
