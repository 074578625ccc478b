/**
 * The control plane's side of extra data planes: `workers: N` starts N-1
 * worker threads (the main thread is data plane 0), each accepting every
 * service's port through SO_REUSEPORT. They get every config snapshot,
 * health, admin and protection change from here, and send back data-path
 * connect results, log records, counters and, at shutdown, how their drain
 * went.
 *
 * @module
 */
import type { Backend, Config } from "../../config/mod.ts";
import { ListenError } from "../../errors.ts";
import type { HealthState, Observation } from "../../health/state.ts";
import type { ProtectionState } from "../../health/protection.ts";
import type { BackendAdmin } from "../../balance/admin_state.ts";
import { emitForwarded, type LogRecord, writeAccessLines } from "../../log.ts";
import type { PlaneStats } from "../../stats/counters.ts";
import type { EngineName } from "../engine.ts";
import type { Inherited, ListenerFd } from "../listeners.ts";
import type { Runtime } from "../../snapshot.ts";

/** Messages to a worker thread. */
export type ToWorker =
  | {
    type: "start";
    id: number;
    /** All data planes, the main thread's included. */
    planes: number;
    engine: EngineName;
    config: Config;
    configPath: string;
    health: [string, HealthState][];
    admin: [string, BackendAdmin][];
    protection: [string, ProtectionState][];
    inherited?: Inherited;
  }
  | { type: "config"; config: Config }
  | { type: "health"; id: string; state: HealthState }
  | { type: "admin"; id: string; admin: BackendAdmin }
  | { type: "protection"; service: string; state: ProtectionState }
  | { type: "stats"; seq: number }
  | { type: "kill"; seq: number; id: string }
  | { type: "stop"; drainMs: number }
  | { type: "force" };

/** Messages from a worker thread. */
export type FromWorker =
  | { type: "ready"; id: number }
  | { type: "failed"; id: number; error: string }
  | { type: "result"; id: string; obs: Observation }
  | { type: "no_backend"; service: string; at: number }
  | { type: "log"; record: LogRecord }
  | { type: "access"; lines: string[] }
  | { type: "stats"; seq: number | null; stats: PlaneStats; fds: ListenerFd[] }
  | { type: "killed"; seq: number; plane: number; count: number }
  | { type: "closed"; id: number }
  | { type: "drained"; id: number; forced: number };

/** The running worker threads. */
export interface WorkerPool {
  /** Sends a new config to every worker (after the control plane applied its own). */
  config(config: Config): void;
  /** Sends one backend's health to every worker. */
  health(id: string, state: HealthState): void;
  /** Sends one backend's admin state to every worker. */
  admin(id: string, admin: BackendAdmin): void;
  /** Sends a service's protection state to every worker (they report successes while it is on). */
  protection(service: string, state: ProtectionState): void;
  /** Latest counters of each worker (sent every second). */
  stats(): PlaneStats[];
  /** Each worker's listening descriptors as last reported (with its counters), by plane id. */
  listenerFds(): Map<number, ListenerFd[]>;
  /** Asks every worker for its counters now; resolves when all answered or after `timeoutMs`. */
  refresh(timeoutMs: number): Promise<void>;
  /** Closes one backend's live connections on every worker; resolves to how many. */
  kill(id: string, timeoutMs: number): Promise<number>;
  /**
   * Stops accepting everywhere and drains: `closed` resolves once every
   * worker's listeners are closed, `drained` to the connections closed at
   * the timeout.
   */
  drain(drainMs: number): { closed: Promise<void>; drained: Promise<number> };
  /** Closes what is left at once (a second stop signal). */
  force(): void;
  /** Ends the threads. */
  terminate(): void;
}

/** What the pool needs from the control plane. */
export interface PoolHooks {
  /** A data-path connect result from a worker, for the health table. */
  onResult(backend: Backend, obs: Observation): void;
  /** A client of `service` a worker could not connect to any backend. */
  onNoBackend(service: string, at: number): void;
}

/** Replies awaited from workers, by request number. */
interface Pending {
  seq: number;
  waiting: Map<number, (value: number) => void>;
}

/**
 * Starts `count` worker threads on the runtime and waits until each listens.
 * Throws a ListenError when one cannot (the others are ended).
 */
export async function startWorkers(
  count: number,
  engine: EngineName,
  runtime: Runtime,
  hooks: PoolHooks,
  inherited: (plane: number) => Inherited | undefined = () => undefined,
): Promise<WorkerPool> {
  const stats = new Map<number, PlaneStats>();
  const fds = new Map<number, ListenerFd[]>();
  const drained = new Map<number, (forced: number) => void>();
  const pending: Pending = { seq: 0, waiting: new Map() };
  const workers: Worker[] = [];
  const ready: Promise<void>[] = [];
  const handlers = { runtime, hooks, stats, fds, drained, pending };
  for (let i = 0; i < count; i++) {
    const worker = new Worker(new URL("./dataplane.ts", import.meta.url), { type: "module" });
    workers.push(worker);
    ready.push(listenTo(worker, i + 1, handlers));
    worker.postMessage(
      {
        type: "start",
        id: i + 1,
        planes: count + 1,
        engine,
        config: runtime.snapshot.config,
        configPath: runtime.snapshot.configPath,
        health: [...runtime.health],
        admin: [...runtime.admin],
        protection: [...runtime.protection],
        inherited: inherited(i + 1),
      } satisfies ToWorker,
    );
  }
  try {
    await Promise.all(ready);
  } catch (err) {
    workers.forEach((w) => w.terminate());
    throw err;
  }
  return { ...poolOf(workers, stats, drained, pending), listenerFds: () => fds };
}

/** Handles one worker's messages; resolves once it listens, rejects if it cannot. */
function listenTo(
  worker: Worker,
  id: number,
  h: {
    runtime: Runtime;
    hooks: PoolHooks;
    stats: Map<number, PlaneStats>;
    fds: Map<number, ListenerFd[]>;
    drained: Map<number, (forced: number) => void>;
    pending: Pending;
  },
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    worker.onmessage = (e: MessageEvent<FromWorker>) => {
      const m = e.data;
      switch (m.type) {
        case "ready":
          return resolve();
        case "failed":
          return reject(new ListenError(m.error));
        case "result": {
          const backend = h.runtime.snapshot.backends.get(m.id);
          if (backend) h.hooks.onResult(backend, m.obs);
          return;
        }
        case "no_backend":
          return h.hooks.onNoBackend(m.service, m.at);
        case "log":
          return emitForwarded(m.record);
        case "access":
          return writeAccessLines(m.lines);
        case "stats":
          h.stats.set(m.stats.id, m.stats);
          h.fds.set(m.stats.id, m.fds);
          if (m.seq !== null) answer(h.pending, m.seq, m.stats.id, 0);
          return;
        case "killed":
          return answer(h.pending, m.seq, m.plane, m.count);
        case "closed":
          return h.drained.get(-m.id)?.(0);
        case "drained":
          return h.drained.get(m.id)?.(m.forced);
      }
    };
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new Error(`worker ${id} failed: ${e.message}`));
    };
  });
}

/** The key of one worker's reply to one request. */
const replyKey = (seq: number, plane: number) => seq * 1000 + plane;

function answer(pending: Pending, seq: number, plane: number, value: number): void {
  const key = replyKey(seq, plane);
  pending.waiting.get(key)?.(value);
  pending.waiting.delete(key);
}

function poolOf(
  workers: Worker[],
  stats: Map<number, PlaneStats>,
  drained: Map<number, (forced: number) => void>,
  pending: Pending,
): Omit<WorkerPool, "listenerFds"> {
  const send = (m: ToWorker) => workers.forEach((w) => w.postMessage(m));
  /** Sends a request to every worker and sums their answers, waiting at most `timeoutMs`. */
  const ask = async (request: (seq: number) => ToWorker, timeoutMs: number) => {
    const seq = ++pending.seq;
    const answers = workers.map((_, i) =>
      new Promise<number>((resolve) => pending.waiting.set(replyKey(seq, i + 1), resolve))
    );
    send(request(seq));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const values = await Promise.race([
      Promise.all(answers),
      new Promise<number[]>((resolve) => timer = setTimeout(() => resolve([]), timeoutMs)),
    ]);
    clearTimeout(timer);
    workers.forEach((_, i) => pending.waiting.delete(replyKey(seq, i + 1)));
    return values.reduce((a, b) => a + b, 0);
  };
  return {
    config: (config) => send({ type: "config", config }),
    health: (id, state) => send({ type: "health", id, state }),
    admin: (id, admin) => send({ type: "admin", id, admin }),
    protection: (service, state) => send({ type: "protection", service, state }),
    stats: () => [...stats.values()].sort((a, b) => a.id - b.id),
    refresh: async (timeoutMs) => {
      await ask((seq) => ({ type: "stats", seq }), timeoutMs);
    },
    kill: (id, timeoutMs) => ask((seq) => ({ type: "kill", seq, id }), timeoutMs),
    drain(drainMs) {
      // A worker's listeners closing is keyed by its negated id, its drain by its id.
      const wait = (key: number) => new Promise<number>((resolve) => drained.set(key, resolve));
      const closed = Promise.all(workers.map((_, i) => wait(-(i + 1)))).then(() => {});
      const done = Promise.all(workers.map((_, i) => wait(i + 1)));
      send({ type: "stop", drainMs });
      return { closed, drained: done.then((forced) => forced.reduce((a, b) => a + b, 0)) };
    },
    force: () => send({ type: "force" }),
    terminate: () => workers.forEach((w) => w.terminate()),
  };
}
