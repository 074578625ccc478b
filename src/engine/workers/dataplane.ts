/**
 * A worker thread's data plane (see pool.ts): the same engine as the
 * main thread's, on its own SO_REUSEPORT listeners, fed config, health and
 * admin state by the control plane. It logs through the control plane and
 * holds no config of its own beyond the snapshot it was sent.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { describeError } from "../../errors.ts";
import { routeAccessLines, setLogLevel, setupLogging } from "../../log.ts";
import { createRuntime, type Runtime, swapSnapshot } from "../../snapshot.ts";
import { createEngine } from "../choose.ts";
import type { Engine } from "../engine.ts";
import type { FromWorker, ToWorker } from "./pool.ts";

/** How often counters go to the control plane. */
const STATS_INTERVAL_MS = 1000;

const post = (m: FromWorker) => self.postMessage(m);
let id = 0;
let runtime: Runtime;
let engine: Engine;
let statsTimer: ReturnType<typeof setInterval> | undefined;

const sendStats = (seq: number | null) =>
  post({ type: "stats", seq, stats: engine.stats(), fds: engine.listenerFds() });

self.addEventListener("unhandledrejection", (e) => {
  e.preventDefault();
  post({
    type: "log",
    // Posted as a record, not logged: logging may not be set up yet when it happens.
    record: {
      module: "worker",
      level: "error",
      message: `worker ${id}: unexpected error, still serving: ${describeError(e.reason)}`,
      timestamp: Date.now(),
      properties: { event: "internal_error", worker: id },
    },
  });
});

/** Access lines waiting to go to the control plane, sent in batches. */
let accessBatch: string[] = [];
const ACCESS_BATCH_MS = 200;

function sendAccess(): void {
  if (accessBatch.length === 0) return;
  post({ type: "access", lines: accessBatch });
  accessBatch = [];
}

function start(m: Extract<ToWorker, { type: "start" }>): void {
  id = m.id;
  setupLogging({
    level: m.config.log_level,
    format: "json",
    forward: (record) => post({ type: "log", record }),
  });
  routeAccessLines((line) => {
    if (accessBatch.push(line) === 1) Deno.unrefTimer(setTimeout(sendAccess, ACCESS_BATCH_MS));
  });
  runtime = createRuntime(m.config, m.configPath);
  for (const [key, state] of m.health) runtime.health.set(key, state);
  for (const [key, admin] of m.admin) runtime.admin.set(key, admin);
  for (const [service, state] of m.protection) runtime.protection.set(service, state);
  engine = createEngine(m.engine, runtime, {
    id,
    reusePort: true,
    claimPort: false,
    planes: m.planes,
    inherited: m.inherited,
    onResult: (backend, obs) => post({ type: "result", id: backend.id, obs }),
    onNoBackend: (service, at) => post({ type: "no_backend", service, at }),
  });
  try {
    engine.apply(m.config);
  } catch (err) {
    return post({ type: "failed", id, error: describeError(err) });
  }
  statsTimer = setInterval(() => sendStats(null), STATS_INTERVAL_MS);
  sendStats(null);
  post({ type: "ready", id });
}

self.onmessage = async (e: MessageEvent<ToWorker>) => {
  const m = e.data;
  switch (m.type) {
    case "start":
      return start(m);
    case "config":
      // The control plane bound these addresses already, so with SO_REUSEPORT this succeeds.
      engine.apply(m.config);
      swapSnapshot(runtime, m.config);
      return setLogLevel(m.config.log_level);
    case "health":
      runtime.health.set(m.id, m.state);
      return;
    case "admin":
      runtime.admin.set(m.id, m.admin);
      return;
    case "protection":
      runtime.protection.set(m.service, m.state);
      return;
    case "stats":
      return sendStats(m.seq);
    case "kill":
      return post({ type: "killed", seq: m.seq, plane: id, count: engine.kill(m.id) });
    case "stop": {
      await engine.stopAccepting();
      post({ type: "closed", id });
      clearInterval(statsTimer);
      const forced = await engine.drain(m.drainMs);
      sendAccess();
      sendStats(null);
      return post({ type: "drained", id, forced });
    }
    case "force":
      await engine.drain(0);
      return;
  }
};
