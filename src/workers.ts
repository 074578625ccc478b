/**
 * The control plane's side of extra data planes: `workers: N` starts N-1
 * worker threads (the main thread is data plane 0), each accepting on the
 * same port through SO_REUSEPORT. They get every config snapshot and health
 * change from here, and send back data-path connect results, log records,
 * counters and, at shutdown, how their drain went.
 *
 * @module
 */
import type { Backend, Config } from "./config.ts";
import { ListenError } from "./errors.ts";
import type { HealthState, Observation } from "./health.ts";
import type { ProtectionState } from "./protection.ts";
import { emitForwarded } from "./log.ts";
import type { BackendCounters } from "./proxy.ts";
import type { LogRecord } from "@logtape/logtape";
import type { Runtime } from "./snapshot.ts";

/** Messages to a worker thread. */
export type ToWorker =
  | {
    type: "start";
    id: number;
    /** All data planes, the main thread's included. */
    planes: number;
    config: Config;
    configPath: string;
    health: [string, HealthState][];
    protection: ProtectionState;
  }
  | { type: "config"; config: Config }
  | { type: "health"; address: string; state: HealthState }
  | { type: "protection"; state: ProtectionState }
  | { type: "stats" }
  | { type: "stop"; drainMs: number }
  | { type: "force" };

/** Messages from a worker thread. */
export type FromWorker =
  | { type: "ready"; id: number }
  | { type: "failed"; id: number; error: string }
  | { type: "result"; address: string; obs: Observation }
  | { type: "no_backend"; at: number }
  | { type: "log"; record: LogRecord }
  | ({ type: "stats" } & PlaneStats)
  | { type: "drained"; id: number; forced: number };

/** Counters of one data plane. */
export interface PlaneStats {
  id: number;
  accepted: number;
  active: number;
  rejected: number;
  idle_closed: number;
  backends: Record<string, BackendCounters>;
}

/** The running worker threads. */
export interface WorkerPool {
  /** Sends a new config to every worker (after the control plane swapped its own). */
  config(config: Config): void;
  /** Sends one backend's health to every worker. */
  health(address: string, state: HealthState): void;
  /** Sends protection mode's state to every worker (they report successes while it is on). */
  protection(state: ProtectionState): void;
  /** Latest counters of each worker (sent every second). */
  stats(): PlaneStats[];
  /** Asks every worker for its counters now; resolves when all answered or after `timeoutMs`. */
  refresh(timeoutMs: number): Promise<void>;
  /** Stops accepting everywhere and drains; resolves to the connections closed at the timeout. */
  drain(drainMs: number): Promise<number>;
  /** Closes what is left at once (a second stop signal). */
  force(): void;
  /** Ends the threads. */
  terminate(): void;
}

/** What the pool needs from the control plane. */
export interface PoolHooks {
  /** A data-path connect result from a worker, for the health table. */
  onResult(backend: Backend, obs: Observation): void;
  /** A client a worker could not connect to any backend. */
  onNoBackend(at: number): void;
  /** The backend with this address in the current config, if any. */
  backend(address: string): Backend | undefined;
}

/**
 * Starts `count` worker threads on the config and waits until each listens.
 * Throws a ListenError when one cannot (the others are ended).
 */
export async function startWorkers(
  count: number,
  runtime: Runtime,
  hooks: PoolHooks,
): Promise<WorkerPool> {
  const stats = new Map<number, PlaneStats>();
  const drained = new Map<number, (forced: number) => void>();
  // Workers asked for counters and not answered yet, each with what to call when it does.
  const asked = new Map<number, () => void>();
  const workers: Worker[] = [];
  const ready: Promise<void>[] = [];

  for (let i = 0; i < count; i++) {
    const id = i + 1;
    const worker = new Worker(new URL("./dataplane.ts", import.meta.url), { type: "module" });
    workers.push(worker);
    ready.push(
      new Promise<void>((resolve, reject) => {
        worker.onmessage = (e: MessageEvent<FromWorker>) => {
          const m = e.data;
          switch (m.type) {
            case "ready":
              return resolve();
            case "failed":
              return reject(new ListenError(m.error));
            case "result": {
              const backend = hooks.backend(m.address);
              if (backend) hooks.onResult(backend, m.obs);
              return;
            }
            case "no_backend":
              return hooks.onNoBackend(m.at);
            case "log":
              return emitForwarded(m.record);
            case "stats": {
              const { type: _, ...plane } = m;
              stats.set(m.id, plane);
              asked.get(m.id)?.();
              asked.delete(m.id);
              return;
            }
            case "drained":
              return drained.get(m.id)?.(m.forced);
          }
        };
        worker.onerror = (e) => {
          e.preventDefault();
          reject(new Error(`worker ${id} failed: ${e.message}`));
        };
      }),
    );
    worker.postMessage(
      {
        type: "start",
        id,
        planes: count + 1,
        config: runtime.snapshot.config,
        configPath: runtime.snapshot.configPath,
        health: [...runtime.health],
        protection: runtime.protection,
      } satisfies ToWorker,
    );
  }

  const send = (m: ToWorker) => workers.forEach((w) => w.postMessage(m));
  try {
    await Promise.all(ready);
  } catch (err) {
    workers.forEach((w) => w.terminate());
    throw err;
  }

  return {
    config: (config) => send({ type: "config", config }),
    health: (address, state) => send({ type: "health", address, state }),
    protection: (state) => send({ type: "protection", state }),
    stats: () => [...stats.values()].sort((a, b) => a.id - b.id),
    async refresh(timeoutMs) {
      const answers = workers.map((_, i) =>
        new Promise<void>((resolve) => asked.set(i + 1, resolve))
      );
      send({ type: "stats" });
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.all(answers),
        new Promise((resolve) => timer = setTimeout(resolve, timeoutMs)),
      ]);
      clearTimeout(timer);
    },
    drain(drainMs) {
      const done = workers.map((_, i) =>
        new Promise<number>((resolve) => drained.set(i + 1, resolve))
      );
      send({ type: "stop", drainMs });
      return Promise.all(done).then((forced) => forced.reduce((a, b) => a + b, 0));
    },
    force: () => send({ type: "force" }),
    terminate: () => workers.forEach((w) => w.terminate()),
  };
}
