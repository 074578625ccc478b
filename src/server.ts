/**
 * A running bal, from start to exit, as named steps: {@link startPlanes}
 * (runtime, engine, workers), the state file, the control socket's
 * commands, signals, {@link reload} on SIGHUP, and {@link shutdown} on
 * SIGTERM/SIGINT (stop accepting, drain). The same in the foreground and as
 * a daemon; only where logs go differs.
 *
 * @module
 */
import { configChanges, describeChanges } from "./config/changes.ts";
import {
  allBackends,
  type Backend,
  type Config,
  drainTimeout,
  readConfig,
  workerCount,
} from "./config/mod.ts";
import { describeError, ListenError, StateError } from "./errors.ts";
import {
  type HealthChecks,
  recordNoBackend,
  recordResult,
  startHealthChecks,
} from "./health/checker.ts";
import type { Observation } from "./health/state.ts";
import {
  type InstanceState,
  lockInstance,
  processStart,
  readPid,
  type ReloadOutcome,
  removeInstanceFiles,
  writePid,
  writeState,
} from "./instance.ts";
import {
  flushAccessLog,
  type LogFormat,
  logger,
  reopenLog,
  setAccessFile,
  setLogLevel,
  setupLogging,
} from "./log.ts";
import { plural } from "./text.ts";
import type { StatePaths } from "./paths.ts";
import {
  createRuntime,
  protectionOf,
  type Runtime,
  type Snapshot,
  swapSnapshot,
} from "./snapshot.ts";
import { type Discovery, startDiscovery } from "./discovery/mod.ts";
import { expandConfig } from "./discovery/expand.ts";
import { VERSION } from "./build.ts";
import { chooseEngine, createEngine } from "./engine/choose.ts";
import type { Engine, EngineName } from "./engine/engine.ts";
import type { PlaneStats } from "./engine/counters.ts";
import { startWorkers, type WorkerPool } from "./engine/workers.ts";
import { serveControl } from "./socket.ts";
import { buildStatus, type Status } from "./status.ts";
import { type Command, dispatch, type Registry } from "./admin/registry.ts";
import { backendCommands } from "./admin/backend.ts";
import { type AdminServer, sameListen, startAdmin } from "./admin/http.ts";
import { renderMetrics } from "./stats/metrics.ts";

/** How often the state file's counters are refreshed. */
const STATS_INTERVAL_MS = 1000;
/** How long `bal status` waits for the workers' current counters before using their last report. */
const STATUS_REFRESH_MS = 250;

const log = logger("server");

/** How to run. */
export interface ServeOptions {
  /** Absolute path of the config file. */
  configPath: string;
  paths: StatePaths;
  logFormat: LogFormat;
  /** Log to `bal.log` instead of the terminal. */
  daemon: boolean;
  /** Called once bal is listening, with every service's address; the daemon reports here. */
  onReady?: (listening: Record<string, string>) => Promise<void> | void;
}

/** The data planes and the one recorder of everything they observe. */
interface Planes {
  runtime: Runtime;
  /** Applies a check's or data plane's result and tells every worker what changed. */
  record(backend: Backend, obs: Observation): void;
  engine: Engine;
  pool: WorkerPool | null;
  count: number;
  stats(): PlaneStats[];
}

/** A running bal: its planes, checks and state file. */
interface Running extends Planes {
  options: ServeOptions;
  checks: HealthChecks;
  state: InstanceState;
  saveState(): Promise<void>;
  startedAt: number;
  /** The reload under way, if any; reloads run one at a time. */
  reloading: Promise<void>;
  /** Reloads by outcome, for the metrics. */
  reloadOutcomes: { ok: number; failed: number };
  /** The admin HTTP endpoint, when `admin.listen` is set. */
  adminServer: AdminServer | null;
  /** The config as the file says it; the snapshot's is this with discovered backends filled in. */
  declared: Config;
  /** DNS names, SRV records and etcd prefixes being followed for backends. */
  discovery: Discovery;
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
    accessFile: config.access_log_path,
  });
  if (stalePid !== null) {
    log.warn("replaced the stale pid file of pid {pid}, which is not a running bal", {
      event: "stale_pid",
      pid: stalePid,
    });
  }
  const onUnhandled = (e: PromiseRejectionEvent) => {
    e.preventDefault();
    log.error("unexpected error, still serving: {error}", {
      event: "internal_error",
      error: describeError(e.reason),
    });
  };
  globalThis.addEventListener("unhandledrejection", onUnhandled);
  const running = await startRunning(options, await startPlanes(config, configPath));
  const stopping = listenForSignals(running);
  const control = serveControl(paths.sock, (req) => dispatch(commands(running), req));
  await writePid(paths);
  await running.saveState();
  await options.onReady?.(running.state.listening);
  await shutdown(running, await stopping.requested);
  control.close();
  stopping.remove();
  globalThis.removeEventListener("unhandledrejection", onUnhandled);
  flushAccessLog();
  log.info("stopped", { event: "stopped", pid: Deno.pid });
  await removeInstanceFiles(paths, Deno.pid);
  return 0;
}

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

/**
 * The engine every data plane runs: the config's choice (or BAL_ENGINE's),
 * native when `auto` and its self-check passes; a fallback says why.
 */
function engineFor(config: Config): EngineName {
  const decision = chooseEngine(config.engine, Deno.env.get("BAL_ENGINE"));
  if (decision.fallback) {
    log.warn("engine: native is not available ({reason}); using the deno engine", {
      event: "engine_fallback",
      reason: decision.fallback,
    });
  }
  return decision.name;
}

/** The runtime, the main thread's engine listening, and the worker threads. */
async function startPlanes(config: Config, configPath: string): Promise<Planes> {
  const runtime = createRuntime(config, configPath);
  const count = planeCount(config);
  const planes: Planes = {
    runtime,
    record: () => {},
    engine: null!,
    pool: null,
    count,
    stats: () => [],
  };
  // Workers count successes only while protection is on: tell them when it flips.
  const syncProtection = (service: string, wasOn: boolean) => {
    const now = protectionOf(runtime, service);
    if (planes.pool && now.enabled !== wasOn) planes.pool.protection(service, now);
  };
  // Every result, from the checks or any data plane, goes through here, so the
  // table stays the one truth and each worker hears of each change.
  const onResult = (backend: Backend, obs: Observation) => {
    const wasOn = protectionOf(runtime, backend.service).enabled;
    recordResult(runtime, backend, obs);
    const state = runtime.health.get(backend.id);
    if (planes.pool && state) planes.pool.health(backend.id, state);
    syncProtection(backend.service, wasOn);
  };
  planes.record = onResult;
  const onNoBackend = (service: string, at: number) => {
    const wasOn = protectionOf(runtime, service).enabled;
    recordNoBackend(runtime, service, at);
    syncProtection(service, wasOn);
  };
  planes.engine = createEngine(engineFor(config), runtime, {
    id: 0,
    reusePort: count > 1,
    claimPort: true,
    planes: count,
    onResult,
    onNoBackend,
  });
  planes.engine.apply(config);
  if (count > 1) {
    try {
      planes.pool = await startWorkers(count - 1, planes.engine.name, runtime, {
        onResult,
        onNoBackend,
      });
    } catch (err) {
      await planes.engine.stopAccepting();
      throw err;
    }
  }
  planes.stats = () => [planes.engine.stats(), ...(planes.pool?.stats() ?? [])];
  return planes;
}

/** The state file kept current, health checks running, and the `started` line. */
async function startRunning(options: ServeOptions, planes: Planes): Promise<Running> {
  const { config } = planes.runtime.snapshot;
  const listening = planes.engine.listening();
  const state: InstanceState = {
    pid: Deno.pid,
    proc_start: await processStart(Deno.pid),
    status: "running",
    config_path: options.configPath,
    listen: listening[config.services[0].name],
    listening,
    started_at: new Date().toISOString(),
    reloads: 0,
    last_reload: null,
    data_planes: planes.stats(),
  };
  // One write at a time, each of the state as it is then: two writes racing
  // on the same temporary file could lose the newer one.
  let saving = Promise.resolve();
  const saveState = () =>
    saving = saving.then(() => writeState(options.paths, state)).catch((err) =>
      log.warn("cannot write the state file: {error}", {
        event: "state_write_failed",
        error: describeError(err),
      })
    );
  const statsTimer = setInterval(() => {
    const now = planes.stats();
    if (JSON.stringify(now) === JSON.stringify(state.data_planes)) return;
    state.data_planes = now;
    saveState();
  }, STATS_INTERVAL_MS);
  const checks = startHealthChecks(planes.runtime, planes.record);
  const running: Running = {
    ...planes,
    options,
    checks: {
      checkNow: checks.checkNow,
      stop: () => {
        checks.stop();
        clearInterval(statsTimer);
      },
    },
    state,
    saveState,
    startedAt: Date.now(),
    reloading: Promise.resolve(),
    reloadOutcomes: { ok: 0, failed: 0 },
    adminServer: null,
    declared: config,
    discovery: null!,
  };
  running.discovery = startDiscovery(config, () => applyDiscovered(running));
  try {
    running.adminServer = openAdmin(running, planes.runtime.snapshot.config.admin);
  } catch (err) {
    running.checks.stop();
    running.discovery.stop();
    await planes.engine.stopAccepting();
    planes.pool?.terminate();
    throw err;
  }
  logStarted(running);
  return running;
}

function logStarted(running: Running): void {
  const { config } = running.runtime.snapshot;
  const first = config.services[0];
  const backends = allBackends(config).length;
  log.info(
    config.single
      ? `bal {version} listening on {listen}, ${plural(backends, "backend")}, {method}, ${
        plural(running.count, "data plane")
      }`
      : `bal {version}: {services} services ({where}), ${plural(backends, "backend")}, ${
        plural(running.count, "data plane")
      }`,
    {
      event: "started",
      version: VERSION,
      listen: running.state.listen,
      listening: running.state.listening,
      where: Object.entries(running.state.listening).map(([n, a]) => `${n} on ${a}`).join(", "),
      services: config.services.length,
      backends,
      method: first.method,
      workers: running.count,
      engine: running.engine.name,
      pid: Deno.pid,
      config_path: running.options.configPath,
    },
  );
}

/** The live status, with every worker's counters as of now. */
async function statusOf(running: Running): Promise<Status> {
  await running.pool?.refresh(STATUS_REFRESH_MS);
  const { runtime } = running;
  return buildStatus({
    pid: Deno.pid,
    startedAt: running.startedAt,
    now: Date.now(),
    snapshot: runtime.snapshot,
    health: runtime.health,
    admin: runtime.admin,
    protection: runtime.protection,
    planes: running.stats(),
    reloads: running.state.reloads,
    lastReload: running.state.last_reload,
    engine: running.engine.name,
    discovery: running.discovery.status(),
  });
}

/** The admin endpoint on `settings.listen`, serving this bal's metrics and status. */
function openAdmin(running: Running, settings: Config["admin"]): AdminServer | null {
  return startAdmin(settings.listen, () => running.runtime.snapshot.config.admin, {
    metrics: () => metricsOf(running),
    status: () => statusOf(running),
  });
}

/** The metrics, with every worker's counters as of now. */
async function metricsOf(running: Running): Promise<string> {
  await running.pool?.refresh(STATUS_REFRESH_MS);
  const { runtime } = running;
  return renderMetrics({
    version: VERSION,
    engine: running.engine.name,
    startedAt: running.startedAt,
    rssBytes: Deno.memoryUsage().rss,
    openFds: await openFds(),
    snapshot: runtime.snapshot,
    health: runtime.health,
    admin: runtime.admin,
    protection: runtime.protection,
    planes: running.stats(),
    reloads: running.reloadOutcomes,
  });
}

/** Open descriptors of this process (Linux: entries of /proc/self/fd), or null. */
async function openFds(): Promise<number | null> {
  if (Deno.build.os !== "linux") return null;
  // Read in place: spawning `ls` failed (and threw) exactly when descriptors ran out.
  try {
    let n = 0;
    for await (const _ of Deno.readDir("/proc/self/fd")) n++;
    // The directory's own descriptor, open while it is read.
    return n - 1;
  } catch {
    return null;
  }
}

/** The control socket's commands. */
function commands(running: Running): Registry {
  return new Map<string, Command>([
    ["status", () => statusOf(running)],
    [
      "reload",
      () => queueReload(running).catch((e) => ({ error: `reload crashed: ${describeError(e)}` })),
    ],
    ...backendCommands({
      runtime: running.runtime,
      broadcast: (id, admin) => running.pool?.admin(id, admin),
      kill: async (id) => running.engine.kill(id) + (await running.pool?.kill(id, 1000) ?? 0),
      status: () => statusOf(running),
    }),
  ]);
}

/** Signal handlers: SIGHUP reloads, SIGUSR1 reopens the log, SIGTERM/SIGINT stop. */
function listenForSignals(running: Running) {
  let requested: (signal: string) => void = () => {};
  const stopRequested = new Promise<string>((resolve) => (requested = resolve));
  let signals = 0;
  const onStop = (signal: Deno.Signal) => () => {
    signals++;
    if (signals === 1) return requested(signal);
    // A second Ctrl-C or TERM means "now": close what is left without waiting.
    const left = running.stats().reduce((sum, p) => sum + p.active, 0);
    // A terminal's Ctrl-C can arrive twice (the process group, and a wrapper forwarding it):
    // only a second signal that cuts something is worth a line.
    if (left > 0) {
      log.warn(`{signal} again: closing ${plural(left, "connection")} still open`, {
        event: "drain_forced",
        signal,
        left,
      });
    }
    running.engine.drain(0);
    running.pool?.force();
  };
  const onHup = () => void queueReload(running).catch(() => {});
  // logrotate: `postrotate kill -USR1 $(cat ~/.bal/bal.pid)`.
  const onUsr1 = () => {
    reopenLog();
    log.info("log file reopened", { event: "log_reopened" });
  };
  const handlers: [Deno.Signal, () => void][] = [
    ["SIGHUP", onHup],
    ["SIGUSR1", onUsr1],
    ["SIGTERM", onStop("SIGTERM")],
    ["SIGINT", onStop("SIGINT")],
  ];
  for (const [signal, handler] of handlers) Deno.addSignalListener(signal, handler);
  return {
    requested: stopRequested,
    remove: () => {
      for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
    },
  };
}

/**
 * Re-reads the config file and applies it: new and moved listeners first
 * (all or nothing), then the snapshot swap that every data plane follows.
 * On any error the running config stays and the reason is logged.
 */
/**
 * Runs a reload after those already asked for (SIGHUP and the `reload`
 * command alike, one at a time in the order they came); its outcome.
 */
function queueReload(running: Running): Promise<ReloadOutcome> {
  const outcome = running.reloading.then(() => reload(running));
  running.reloading = outcome.then(() => {}, (err) => {
    log.error("reload crashed: {error}", { event: "reload_failed", error: describeError(err) });
  });
  return outcome;
}

async function reload(running: Running): Promise<ReloadOutcome> {
  const { runtime, engine, state } = running;
  state.reloads++;
  const before = runtime.snapshot.config;
  const result = await readConfig(running.options.configPath);
  let error: string | null = null;
  let summary: string | null = null;
  // What the file says, with the backends discovery knows of filled in.
  const wanted = result.ok ? expandConfig(result.config, running.discovery.known) : null;
  if (!wanted) {
    error = result.ok ? null : result.errors.map((e) => e.message).join("; ");
  } else {
    error = applyListeners(running, wanted);
  }
  if (error !== null) running.reloadOutcomes.failed++;
  else running.reloadOutcomes.ok++;
  if (error !== null || !result.ok || !wanted) {
    log.error("reload failed, keeping the running config: {error}", {
      event: "reload_failed",
      error,
    });
  } else {
    running.declared = result.config;
    running.discovery.follow(result.config);
    const next = install(running, wanted);
    warnDeferred(running, next.config);
    const backends = allBackends(next.config).length;
    const changed = configChanges(before, next.config);
    summary = describeChanges(changed, before.single && next.config.single);
    log.info(
      `reloaded: generation {generation}, ${
        plural(backends, "backend")
      }, listening on {listen}; {summary}`,
      {
        event: "reload_ok",
        generation: next.generation,
        backends,
        listen: engine.listening()[next.config.services[0].name],
        summary,
        ...changed,
      },
    );
  }
  const listening = engine.listening();
  const { config, generation } = runtime.snapshot;
  state.listening = listening;
  state.listen = listening[config.services[0].name];
  state.last_reload = {
    at: new Date().toISOString(),
    ok: error === null,
    error,
    generation,
    backends: allBackends(config).length,
    services: config.services.length,
    listen: state.listen,
    listening,
    changes: summary,
  };
  await running.saveState();
  return state.last_reload;
}

/** Makes `config` the one every plane runs, health and checks following. */
function install(running: Running, config: Config): Snapshot {
  const { runtime, pool } = running;
  const next = swapSnapshot(runtime, config);
  setLogLevel(next.config.log_level);
  setAccessFile(next.config.access_log_path);
  if (pool) {
    pool.config(next.config);
    for (const [id, health] of runtime.health) pool.health(id, health);
  }
  running.checks.checkNow();
  return next;
}

/**
 * Discovery found another set of backends: the file's config with them
 * filled in becomes the running one, as a reload would make it (new
 * backends are checked before they get clients; removed ones finish what
 * they carry).
 */
function applyDiscovered(running: Running): void {
  const before = running.runtime.snapshot.config;
  const next = install(running, expandConfig(running.declared, running.discovery.known));
  const { added, removed } = configChanges(before, next.config);
  log.info("discovery changed the backends: {added} added, {removed} removed", {
    event: "discovery_changed",
    generation: next.generation,
    added,
    removed,
  });
  running.state.data_planes = running.stats();
  running.saveState();
}

/**
 * Opens what a new config listens on, all or nothing: a new admin address
 * first, then the services' listeners. Returns why it could not, or null.
 */
function applyListeners(running: Running, config: Config): string | null {
  const before = running.runtime.snapshot.config.admin;
  const moving = !sameListen(before, config.admin);
  let admin: AdminServer | null = null;
  try {
    if (moving) admin = openAdmin(running, config.admin);
    running.engine.apply(config);
  } catch (err) {
    if (!(err instanceof ListenError)) throw err;
    admin?.close();
    return err.message;
  }
  if (moving) {
    running.adminServer?.close();
    running.adminServer = admin;
  }
  return null;
}

/** Settings a reload cannot apply to what is already running, each said once. */
function warnDeferred(running: Running, config: Config): void {
  const engine = Deno.env.get("BAL_ENGINE") || config.engine;
  if (engine !== "auto" && engine !== running.engine.name) {
    log.warn("engine: a new engine takes effect at restart; the {engine} engine keeps running", {
      event: "engine_unchanged",
      engine: running.engine.name,
    });
  }
  if (workerCount(config.workers) !== running.count) {
    log.warn(
      `workers: a new count takes effect at restart; ${
        plural(running.count, "data plane")
      } keep running`,
      {
        event: "workers_unchanged",
        planes: running.count,
      },
    );
  }
  for (const service of config.services) {
    const backlog = service.runtime.tcp_backlog;
    if (backlog === running.engine.backlog(service.name)) continue;
    log.warn(
      "tcp_backlog: {backlog} applies when bal next opens the listener of {service} (restart, or a new port or bind_address)",
      { event: "tcp_backlog_deferred", service: service.name, backlog },
    );
  }
}

/** Stops accepting on every plane, drains, and ends the workers. */
async function shutdown(running: Running, signal: string): Promise<void> {
  const { engine, pool, runtime } = running;
  running.discovery.stop();
  const drainMs = drainTimeout(runtime.snapshot.config);
  // Every data plane stops accepting now; the workers start draining as they do.
  const workers = pool?.drain(drainMs);
  const workersDrained = workers?.drained ?? Promise.resolve(0);
  await engine.stopAccepting();
  // "stopped accepting" is said once it is true of every plane (a worker that does not
  // answer within a second is not waited for: it is being ended anyway).
  if (workers) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([workers.closed, new Promise((r) => timer = setTimeout(r, 1000))]);
    clearTimeout(timer);
  }
  running.checks.stop();
  const active = running.stats().reduce((sum, p) => sum + p.active, 0);
  log.info(
    `{signal}: stopped accepting, draining ${plural(active, "connection")} (up to {drain_ms} ms)`,
    {
      event: "stopping",
      signal,
      active,
      drain_ms: drainMs,
    },
  );
  running.state.status = "stopping";
  await running.saveState();
  await running.reloading;
  await running.adminServer?.close();
  const [forcedHere, forcedWorkers] = await Promise.all([engine.drain(drainMs), workersDrained]);
  pool?.terminate();
  const forced = forcedHere + forcedWorkers;
  if (forced > 0) {
    log.warn(
      `drain timeout: closed ${plural(forced, "connection")} still open after {drain_ms} ms`,
      {
        event: "drain_timeout",
        forced,
        drain_ms: drainMs,
      },
    );
  }
}
