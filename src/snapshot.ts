/**
 * The one place the running config lives. A reload builds a new immutable
 * {@link Snapshot} and swaps it in with a single assignment; every part of
 * bal reads `runtime.snapshot` when it needs config, and keeps no copy.
 *
 * @module
 */
import type { Config } from "./config.ts";
import { type HealthTable, syncHealth } from "./health.ts";
import { type RoundRobin, roundRobin } from "./balancer.ts";
import { initialProtection, type ProtectionState } from "./protection.ts";

/** One loaded config, frozen. */
export interface Snapshot {
  readonly config: Config;
  /** Absolute path of the file it was read from. */
  readonly configPath: string;
  /** 1 for the config bal started with, +1 per successful reload. */
  readonly generation: number;
  /** Epoch ms when it was loaded. */
  readonly loadedAt: number;
}

/** The process's live state: the current snapshot and what outlives it. */
export interface Runtime {
  /** Replaced whole on reload, never mutated. */
  snapshot: Snapshot;
  /** Health per backend address; survives reloads for backends that stay. */
  readonly health: HealthTable;
  /** Round-robin position; survives reloads. */
  readonly rr: RoundRobin;
  /** Protection mode; replaced whole on each change, survives reloads. */
  protection: ProtectionState;
}

/** Creates the runtime for the config bal starts with. */
export function createRuntime(config: Config, configPath: string): Runtime {
  const runtime: Runtime = {
    snapshot: { config, configPath, generation: 1, loadedAt: Date.now() },
    health: new Map(),
    rr: roundRobin(),
    protection: initialProtection(),
  };
  syncHealth(runtime.health, config.backends.map((b) => b.address));
  return runtime;
}

/** Makes `config` the current one: health follows the new backend list. */
export function swapSnapshot(runtime: Runtime, config: Config): Snapshot {
  const next: Snapshot = {
    config,
    configPath: runtime.snapshot.configPath,
    generation: runtime.snapshot.generation + 1,
    loadedAt: Date.now(),
  };
  syncHealth(runtime.health, config.backends.map((b) => b.address));
  runtime.snapshot = next;
  return next;
}
