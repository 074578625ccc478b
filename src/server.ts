/**
 * A running bal, from start to exit: load the config, listen, write the
 * pid and state files, run health checks, reload on SIGHUP, and on
 * SIGTERM/SIGINT stop accepting and drain live connections. The same in the
 * foreground and as a daemon; only where logs go differs.
 *
 * @module
 */
import { type Backend, type Config, readConfig, workerCount } from "./config.ts";
import { describeError, ListenError, StateError } from "./errors.ts";
import { recordNoBackend, recordResult, startHealthChecks } from "./checker.ts";
import type { Observation } from "./health.ts";
import {
  type InstanceState,
  lockInstance,
  processStart,
  readPid,
  removeInstanceFiles,
  writePid,
  writeState,
} from "./instance.ts";
import { type LogFormat, logger, reopenLog, setLogLevel, setupLogging } from "./log.ts";
import type { StatePaths } from "./paths.ts";
import { createProxy, planeStats as statsOf } from "./proxy.ts";
import { createRuntime, swapSnapshot } from "./snapshot.ts";
import { VERSION } from "./build.ts";
import { startWorkers, type WorkerPool } from "./workers.ts";
import { serveControl } from "./socket.ts";
import { buildStatus } from "./status.ts";

/** How often the state file's counters are refreshed. */
const STATS_INTERVAL_MS = 1000;
/** How long `bal status` waits for the workers' current counters before using their last report. */
const STATUS_REFRESH_MS = 250;

/**
 * Data planes to run. SO_REUSEPORT spreads connections over sockets only on
 * Linux; elsewhere one socket would get them all, so one plane runs.
 */
function planeCount(config: Config): number {
  const wanted = workerCount(config.workers);
  if (wanted > 1 && Deno.build.os !== "linux") {
    log.warn("workers: {wanted} needs Linux (SO_REUSEPORT balancing); running 1 data plane", {
      event: "workers_unsupported",
      wanted,
      os: Deno.build.os,
    });
    return 1;
  }
  return wanted;
}

const log = logger("server");

/** How to run. */
export interface ServeOptions {
  /** Absolute path of the config file. */
  configPath: string;
  paths: StatePaths;
  logFormat: LogFormat;
  /** Log to `bal.log` instead of the terminal. */
  daemon: boolean;
  /** Called once bal is listening, with the address; the daemon reports readiness here. */
  onReady?: (listen: string) => Promise<void> | void;
}

/**
 * Runs bal until it is told to stop and has drained. Resolves to the exit
 * code; rejects with a BalError when it cannot start.
 */
export async function serve(options: ServeOptions): Promise<number> {
  const { paths } = options;
  const lock = await lockInstance(paths);
  if (!lock) {
    const pid = await readPid(paths);
    // Without a pid file yet, the other one is still starting.
    throw new StateError(`bal is already running (${pid ? `pid ${pid}` : "starting"})`);
  }
  try {
    return await serveLocked(options);
  } finally {
    lock.close();
  }
}

async function serveLocked(options: ServeOptions): Promise<number> {
  const { paths, configPath } = options;
  // With the lock ours, a pid file left behind can only be stale.
  const stalePid = await readPid(paths);

  const loaded = await readConfig(configPath);
  if (!loaded.ok) throw loaded.errors[0];
  const config = loaded.config;
  setupLogging({
    level: config.log_level,
    format: options.daemon ? "json" : options.logFormat,
    file: options.daemon ? paths.log : undefined,
  });
  if (stalePid !== null) {
    log.warn("replaced the stale pid file of pid {pid}, which is not a running bal", {
      event: "stale_pid",
      pid: stalePid,
    });
  }

  const runtime = createRuntime(config, configPath);
  const planes = planeCount(config);
  let pool: WorkerPool | null = null;
  // Workers count successes only while protection is on: tell them when it flips.
  const syncProtection = (wasOn: boolean) => {
    if (pool && runtime.protection.enabled !== wasOn) pool.protection(runtime.protection);
  };
  // Every result, from the checks or any data plane, goes through here, so the
  // table stays the one truth and each worker hears of each change.
  const record = (backend: Backend, obs: Observation) => {
    const wasOn = runtime.protection.enabled;
    recordResult(runtime, backend, obs);
    const state = runtime.health.get(backend.address);
    if (pool && state) pool.health(backend.address, state);
    syncProtection(wasOn);
  };
  const noBackend = (at: number) => {
    const wasOn = runtime.protection.enabled;
    recordNoBackend(runtime, at);
    syncProtection(wasOn);
  };
  const proxy = createProxy(runtime, {
    reusePort: planes > 1,
    claimPort: true,
    planes,
    onResult: record,
    onNoBackend: noBackend,
  });
  proxy.listen(config);
  if (planes > 1) {
    try {
      pool = await startWorkers(planes - 1, runtime, {
        onResult: record,
        onNoBackend: noBackend,
        backend: (address) => runtime.snapshot.config.backends.find((b) => b.address === address),
      });
    } catch (err) {
      await proxy.stopAccepting();
      throw err;
    }
  }
  const planeStats = () => [statsOf(0, proxy), ...(pool?.stats() ?? [])];

  const state: InstanceState = {
    pid: Deno.pid,
    proc_start: await processStart(Deno.pid),
    status: "running",
    config_path: configPath,
    listen: proxy.address(),
    started_at: new Date().toISOString(),
    reloads: 0,
    last_reload: null,
    data_planes: planeStats(),
  };
  // One write at a time, each of the state as it is then: two writes racing
  // on the same temporary file could lose the newer one.
  let saving = Promise.resolve();
  const saveState = () =>
    saving = saving.then(() => writeState(paths, state)).catch((err) =>
      log.warn("cannot write the state file: {error}", {
        event: "state_write_failed",
        error: describeError(err),
      })
    );
  const statsTimer = setInterval(() => {
    const now = planeStats();
    if (JSON.stringify(now) === JSON.stringify(state.data_planes)) return;
    state.data_planes = now;
    saveState();
  }, STATS_INTERVAL_MS);

  const onUnhandled = (e: PromiseRejectionEvent) => {
    e.preventDefault();
    log.error("unexpected error, still serving: {error}", {
      event: "internal_error",
      error: describeError(e.reason),
    });
  };
  globalThis.addEventListener("unhandledrejection", onUnhandled);

  const checks = startHealthChecks(runtime, record);
  log.info(
    "bal {version} listening on {listen}, {backends} backends, {method}, {workers} data planes",
    {
      event: "started",
      version: VERSION,
      listen: proxy.address(),
      backends: config.backends.length,
      method: config.method,
      workers: planes,
      pid: Deno.pid,
      config_path: configPath,
    },
  );
  // Reloads run one at a time, in the order the signals came.
  let reloading = Promise.resolve();
  const onHup = () => {
    reloading = reloading.then(() => reload()).catch((err) =>
      log.error("reload crashed: {error}", { event: "reload_failed", error: describeError(err) })
    );
  };

  async function reload(): Promise<void> {
    state.reloads++;
    const before = runtime.snapshot.config;
    const result = await readConfig(configPath);
    let error: string | null = null;
    if (!result.ok) {
      error = result.errors.map((e) => e.message).join("; ");
    } else {
      try {
        proxy.listen(result.config);
      } catch (err) {
        if (!(err instanceof ListenError)) throw err;
        error = err.message;
      }
    }
    if (error !== null || !result.ok) {
      log.error("reload failed, keeping the running config: {error}", {
        event: "reload_failed",
        error,
      });
    } else {
      const next = swapSnapshot(runtime, result.config);
      setLogLevel(next.config.log_level);
      if (pool) {
        pool.config(next.config);
        for (const [address, health] of runtime.health) pool.health(address, health);
      }
      if (workerCount(next.config.workers) !== planes) {
        log.warn(
          "workers: a new count takes effect at restart; {planes} data planes keep running",
          {
            event: "workers_unchanged",
            planes,
          },
        );
      }
      const backlog = next.config.runtime.tcp_backlog;
      if (backlog !== proxy.backlog()) {
        log.warn(
          "tcp_backlog: {backlog} applies when bal next opens its listener (restart, or a new port or bind_address)",
          { event: "tcp_backlog_deferred", backlog },
        );
      }
      checks.checkNow();
      log.info("reloaded: generation {generation}, {backends} backends, listening on {listen}", {
        event: "reload_ok",
        generation: next.generation,
        backends: next.config.backends.length,
        listen: proxy.address(),
        ...backendChanges(before, next.config),
      });
    }
    state.listen = proxy.address();
    state.last_reload = {
      at: new Date().toISOString(),
      ok: error === null,
      error,
      generation: runtime.snapshot.generation,
      backends: runtime.snapshot.config.backends.length,
      listen: proxy.address(),
    };
    await saveState();
  }

  let stopRequested: (signal: string) => void = () => {};
  const stopping = new Promise<string>((resolve) => (stopRequested = resolve));
  let signals = 0;
  const onStop = (signal: Deno.Signal) => () => {
    signals++;
    if (signals === 1) return stopRequested(signal);
    // A second Ctrl-C or TERM means "now": close what is left without waiting.
    proxy.drain(0);
    pool?.force();
  };
  // logrotate: `postrotate kill -USR1 $(cat ~/.bal/bal.pid)`.
  const onUsr1 = () => {
    reopenLog();
    log.info("log file reopened", { event: "log_reopened" });
  };
  const onTerm = onStop("SIGTERM");
  const onInt = onStop("SIGINT");
  Deno.addSignalListener("SIGHUP", onHup);
  Deno.addSignalListener("SIGUSR1", onUsr1);
  Deno.addSignalListener("SIGTERM", onTerm);
  Deno.addSignalListener("SIGINT", onInt);
  // Found (pid file) and ready only now: a signal sent as soon as bal can be
  // found must meet these handlers, not the default action.
  const startedAt = Date.now();
  const control = serveControl(paths.sock, async (req) => {
    if (req.cmd !== "status") {
      return { error: `unknown cmd ${JSON.stringify(req.cmd)}; known: "status"` };
    }
    // Counters as of now, not as of the workers' last once-a-second report.
    await pool?.refresh(STATUS_REFRESH_MS);
    return buildStatus({
      pid: Deno.pid,
      startedAt,
      now: Date.now(),
      snapshot: runtime.snapshot,
      health: runtime.health,
      protection: runtime.protection,
      planes: planeStats(),
      reloads: state.reloads,
      lastReload: state.last_reload,
    });
  });
  await writePid(paths);
  await saveState();
  await options.onReady?.(proxy.address()!);

  const signal = await stopping;
  const drainMs = runtime.snapshot.config.runtime.shutdown_drain_timeout_ms;
  // Every data plane stops accepting now; the workers start draining as they do.
  const workersDrained = pool?.drain(drainMs) ?? Promise.resolve(0);
  await proxy.stopAccepting();
  checks.stop();
  clearInterval(statsTimer);
  log.info("{signal}: stopped accepting, draining {active} connections (up to {drain_ms} ms)", {
    event: "stopping",
    signal,
    active: planeStats().reduce((sum, p) => sum + p.active, 0),
    drain_ms: drainMs,
  });
  state.status = "stopping";
  await saveState();
  await reloading;
  const [forcedHere, forcedWorkers] = await Promise.all([proxy.drain(drainMs), workersDrained]);
  pool?.terminate();
  const forced = forcedHere + forcedWorkers;
  if (forced > 0) {
    log.warn("drain timeout: closed {forced} connections still open after {drain_ms} ms", {
      event: "drain_timeout",
      forced,
      drain_ms: drainMs,
    });
  }
  control.close();
  log.info("stopped", { event: "stopped", pid: Deno.pid });
  Deno.removeSignalListener("SIGHUP", onHup);
  Deno.removeSignalListener("SIGUSR1", onUsr1);
  Deno.removeSignalListener("SIGTERM", onTerm);
  Deno.removeSignalListener("SIGINT", onInt);
  globalThis.removeEventListener("unhandledrejection", onUnhandled);
  await removeInstanceFiles(paths, Deno.pid);
  return 0;
}

/** Which backends a reload added and removed, for the log. */
function backendChanges(before: Config, after: Config): { added: string[]; removed: string[] } {
  const old = new Set(before.backends.map((b) => b.address));
  const now = new Set(after.backends.map((b) => b.address));
  return {
    added: [...now].filter((a) => !old.has(a)),
    removed: [...old].filter((a) => !now.has(a)),
  };
}
