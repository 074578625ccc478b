/**
 * The running bal as the instance modules share it: how it was asked to run, its data planes, and
 * what it keeps while it runs.
 *
 * @module
 */
import type { LoopLag } from "../stats/loop_lag.ts";
import type { Backend, Config } from "../config/mod.ts";
import type { HealthChecks } from "../health/checker.ts";
import type { Observation } from "../health/state.ts";
import type { InstanceState } from "./state_file.ts";
import type { LogFormat } from "../log.ts";
import type { StatePaths } from "./paths.ts";
import type { Runtime } from "../snapshot.ts";
import type { Discovery } from "../discovery/mod.ts";
import type { Engine } from "../engine/engine.ts";
import type { PlaneStats } from "../stats/counters.ts";
import type { WorkerPool } from "../engine/workers/pool.ts";
import type { AdminServer } from "../admin/endpoint.ts";
import type { InstanceLock } from "./lock.ts";
import type { UdpPlane } from "../udp/flows.ts";
import type { Registry } from "../admin/registry.ts";

/** How to run. */
export interface ServeOptions {
  /** Absolute path of the config file. */
  configPath: string;
  paths: StatePaths;
  logFormat: LogFormat;
  /** Log to `bal.log` instead of the terminal. */
  daemon: boolean;
  /** Called once bal is listening, with every service's address; the daemon reports here. */
  onReady?: (listening: Record<string, string>, upgraded: Upgraded | null) => Promise<void> | void;
  /** Take over from the running bal (`bal upgrade`) rather than start cold. */
  upgrade?: { timeoutMs: number };
}

/** How an upgrade went, as the new bal reports it. */
export interface Upgraded {
  old_pid: number;
  /** Listening sockets received. */
  sockets: number;
  /** Connections the old bal still had to drain when it retired. */
  draining: number;
}

/** This bal's part in upgrades. */
export interface UpgradeState {
  /** Upgrades since the cold start that began this line of bals. */
  count: number;
  /** The new bal being handed over to, or null. */
  to: number | null;
  /** Addresses the bal before listened on when this one took over (joined, not claimed). */
  held: ReadonlySet<string>;
  /** Whether this bal has handed over and drains. */
  retired: boolean;
  /** Begins this bal's stop (drain and exit), as a signal does. */
  stop(reason: string): void;
  /** Serves the control socket at `bal.draining.PID.sock` from now on, leaving `bal.sock`. */
  moveControl(): Promise<void>;
}

/** A change made from code: when, by whom, what. */
export interface LastChange {
  at: string;
  who: string;
  change: string;
}

/** The data planes and the one recorder of everything they observe. */
export interface Planes {
  runtime: Runtime;
  /** Applies a check's or data plane's result and tells every worker what changed. */
  record(backend: Backend, obs: Observation): void;
  engine: Engine;
  /** Why `engine: auto` passed over faster engines (io_uring refused...), or null. */
  engineFallback: string | null;
  pool: WorkerPool | null;
  /** UDP services, on the control plane's thread. */
  udp: UdpPlane;
  count: number;
  stats(): PlaneStats[];
}

/** A running bal: its planes, checks and state file. */
export interface Running extends Planes {
  options: ServeOptions;
  /** The state directory's lock, held for life (handed on by an upgrade). */
  lock: InstanceLock;
  upgrade: UpgradeState;
  checks: HealthChecks;
  state: InstanceState;
  saveState(): Promise<void>;
  startedAt: number;
  /** How late the main thread's event loop runs timers (its data plane's and the control plane's). */
  lag: LoopLag;
  /** The reload under way, if any; reloads run one at a time. */
  reloading: Promise<void>;
  /** Reloads by outcome, for the metrics. */
  reloadOutcomes: { ok: number; failed: number };
  /** The control commands, which the control socket and the admin API both run. */
  commands: Registry;
  /** The admin HTTP endpoint, when `admin.listen` is set. */
  adminServer: AdminServer | null;
  /** The config as the file says it; the snapshot's is this with discovered backends filled in. */
  declared: Config;
  /** The file's text `declared` was read from: a change from code is refused once the file differs. */
  declaredText: string;
  /** The last change made from code (API or CLI), for status and the dashboard. */
  lastChange: LastChange | null;
  /** DNS names, SRV records and etcd prefixes being followed for backends. */
  discovery: Discovery;
}
