/**
 * A running bal from start to stop, as named steps: lock, config, logging, data planes, state file,
 * checks, discovery, admin endpoint, control socket and signals; then stop accepting, drain and
 * exit.
 *
 * @module
 */
import { emptyLag, sampleLoop } from "../stats/loop_lag.ts";
import { allBackends, type Config, drainTimeout, readConfig } from "../config/mod.ts";
import { expandConfig } from "../discovery/expand.ts";
import { drainingSocket, type Handover, retire, takeHandover } from "./handover.ts";
import { faultInjected, notifySystemd, seedOf, upgradeCommands } from "./upgrade.ts";
import { describeError, StateError } from "../errors.ts";
import { startHealthChecks } from "../health/checker.ts";
import {
  type InstanceState,
  processStart,
  readPid,
  removeInstanceFiles,
  writePid,
  writeState,
} from "./state_file.ts";
import { flushAccessLog, setupLogging } from "../log.ts";
import { plural } from "../text.ts";
import { startDiscovery } from "../discovery/mod.ts";
import { VERSION } from "../build.ts";
import { serveControl } from "./control_socket.ts";
import { heldFd, type InstanceLock, lockInstance } from "./lock.ts";
import { type Command, dispatch, type Registry } from "../admin/registry.ts";
import { backendCommands } from "../admin/backend_control.ts";
import { changeCommands } from "./config_change.ts";
import { openAdmin, statusOf } from "./observe.ts";
import { listeningOf, startPlanes } from "./planes.ts";
import { applyDiscovered, queueReload } from "./reload.ts";
import type { Planes, Running, ServeOptions, Upgraded, UpgradeState } from "./running.ts";
import { listenForSignals } from "./signals.ts";
import { trimWatch, trimWhenQuiet } from "./heap_trim.ts";
import { logger } from "../log.ts";

const log = logger("server");

/** How often the state file's counters are refreshed. */
const STATS_INTERVAL_MS = 1000;

/**
 * Runs bal until it is told to stop and has drained. Resolves to the exit
 * code; rejects with a BalError when it cannot start. With
 * `options.upgrade`, takes over from the running bal instead (handover.ts).
 */
export async function serve(options: ServeOptions): Promise<number> {
  if (options.upgrade) return await serveUpgrade(options, options.upgrade.timeoutMs);
  const { paths } = options;
  const lock = await lockInstance(paths);
  if (!lock) {
    const pid = await readPid(paths);
    // Without a pid file yet, the other one is still starting.
    throw new StateError(`bal is already running (${pid ? `pid ${pid}` : "starting"})`);
  }
  try {
    // With the lock ours, a pid file left behind can only be stale.
    const stalePid = await readPid(paths);
    const loaded = await prepare(options);
    if (stalePid !== null) {
      log.warn("replaced the stale pid file of pid {pid}, which is not a running bal", {
        event: "stale_pid",
        pid: stalePid,
      });
    }
    return await run(options, lock, loaded, null);
  } finally {
    lock.close();
  }
}

/** The config and its text, checked, and logging set up for it. */
async function prepare(options: ServeOptions): Promise<{ config: Config; text: string }> {
  const { paths, configPath } = options;
  const loaded = await readConfig(configPath);
  if (!loaded.ok) throw loaded.errors[0];
  const config = loaded.config;
  setupLogging({
    level: config.log_level,
    format: options.daemon ? "json" : options.logFormat,
    file: options.daemon ? paths.log : undefined,
    accessFile: config.access_log_path,
  });
  return { config, text: loaded.text };
}

/**
 * `bal upgrade`'s new bal: checks its config, receives the running bal's
 * sockets, lock and state, serves on them, then retires the old one and
 * takes the pid file, state file and control socket. Before the retire,
 * any failure leaves the old bal serving as it was.
 */
async function serveUpgrade(options: ServeOptions, timeoutMs: number): Promise<number> {
  const loaded = await prepare(options);
  const handover = await takeHandover(options.paths, timeoutMs);
  const lock = heldFd(handover.lockFd);
  try {
    if (faultInjected("crash_after_handover")) Deno.exit(70);
    if (faultInjected("hang_after_handover")) await new Promise(() => setInterval(() => {}, 1000));
    return await run(options, lock, loaded, handover);
  } finally {
    lock.close();
  }
}

/** Serves from the planes' start to the drained stop; `handover` when upgrading. */
async function run(
  options: ServeOptions,
  lock: InstanceLock,
  { config: declared, text }: { config: Config; text: string },
  handover: Handover | null,
): Promise<number> {
  const { paths } = options;
  const onUnhandled = (e: PromiseRejectionEvent) => {
    e.preventDefault();
    log.error("unexpected error, still serving: {error}", {
      event: "internal_error",
      error: describeError(e.reason),
    });
  };
  globalThis.addEventListener("unhandledrejection", onUnhandled);
  const known = new Map(handover?.discovered ?? []);
  const planes = await startPlanes(
    expandConfig(declared, known),
    options.configPath,
    handover ? seedOf(handover, declared) : undefined,
  );
  const running = await startRunning(options, planes, lock, declared, handover);
  running.declaredText = text;
  running.discovery.seed(known);
  const stopping = listenForSignals(running);
  running.upgrade.stop = stopping.stop;
  const upgraded = handover ? await retireOld(running, handover) : null;
  // Only the admin API names its caller; a control socket request cannot.
  const handler = ({ caller: _, ...req }: Record<string, unknown>) =>
    dispatch(running.commands, req);
  let control = serveControl(paths.sock, handler);
  // Deno unlinks a Unix socket's path when it closes the listener: a retiring bal opens
  // its draining socket first, then closes bal.sock before the new bal makes its own.
  running.upgrade.moveControl = async () => {
    const moved = serveControl(drainingSocket(paths, Deno.pid), handler);
    await control.close();
    control = moved;
  };
  await writePid(paths);
  await running.saveState();
  await options.onReady?.(running.state.listening, upgraded);
  notifySystemd(upgraded);
  await shutdown(running, await stopping.requested);
  await control.close();
  stopping.remove();
  globalThis.removeEventListener("unhandledrejection", onUnhandled);
  flushAccessLog();
  log.info("stopped", { event: "stopped", pid: Deno.pid });
  // A retired bal's pid and state files are the new bal's, whenever it writes them.
  if (!running.upgrade.retired) await removeInstanceFiles(paths, Deno.pid);
  return 0;
}

/**
 * Tells the old bal to retire now that this one serves. When it does not
 * answer, this bal stops (its clients drain) and the old one serves on.
 */
async function retireOld(running: Running, handover: Handover): Promise<Upgraded> {
  try {
    const draining = await retire(running.options.paths, 10_000);
    log.info(
      `upgraded from pid {old_pid}: ${
        plural(handover.listeners.length, "listening socket")
      } taken over`,
      {
        event: "upgraded",
        old_pid: handover.pid,
        sockets: handover.listeners.length,
        draining,
      },
    );
    return { old_pid: handover.pid, sockets: handover.listeners.length, draining };
  } catch (err) {
    await shutdown(running, "upgrade failed");
    throw err;
  }
}

/** What the state file says first. */
async function initialState(options: ServeOptions, planes: Planes): Promise<InstanceState> {
  const { config } = planes.runtime.snapshot;
  const listening = listeningOf(planes);
  return {
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
    daemon: options.daemon,
    log_format: options.logFormat,
  };
}

/** This bal's part in upgrades at its start: one more than the bal it took over from. */
function upgradeState(handover: Handover | null): UpgradeState {
  return {
    count: handover ? handover.upgrades + 1 : 0,
    held: new Set(handover?.held ?? []),
    to: null,
    retired: false,
    stop: () => {},
    moveControl: () => Promise.resolve(),
  };
}

/** The state file kept current, health checks running, and the `started` line. */
async function startRunning(
  options: ServeOptions,
  planes: Planes,
  lock: InstanceLock,
  declared: Config,
  handover: Handover | null,
): Promise<Running> {
  const state = await initialState(options, planes);
  // One write at a time, each of the state as it is then: two writes racing
  // on the same temporary file could lose the newer one.
  let saving = Promise.resolve();
  // Once retired by an upgrade, the state file is the new bal's.
  const saveState = () =>
    saving = saving.then(() =>
      running.upgrade.retired ? undefined : writeState(options.paths, state)
    ).catch((err) =>
      log.warn("cannot write the state file: {error}", {
        event: "state_write_failed",
        error: describeError(err),
      })
    );
  const trim = trimWatch();
  const statsTimer = setInterval(() => {
    const now = planes.stats();
    trimWhenQuiet(trim, now);
    if (JSON.stringify(now) === JSON.stringify(state.data_planes)) return;
    state.data_planes = now;
    saveState();
  }, STATS_INTERVAL_MS);
  const checks = startHealthChecks(planes.runtime, planes.record);
  const lag = emptyLag();
  const sampler = sampleLoop(lag);
  const running: Running = {
    ...planes,
    options,
    lock,
    upgrade: upgradeState(handover),
    checks: {
      checkNow: checks.checkNow,
      stop: () => {
        checks.stop();
        clearInterval(statsTimer);
        sampler.stop();
      },
    },
    lag,
    state,
    saveState,
    startedAt: Date.now(),
    reloading: Promise.resolve(),
    reloadOutcomes: { ok: 0, failed: 0 },
    adminServer: null,
    declared,
    declaredText: "",
    lastChange: null,
    commands: new Map(),
    discovery: null!,
  };
  running.commands = commands(running);
  running.discovery = startDiscovery(declared, () => applyDiscovered(running));
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

/** The control socket's commands. */
function commands(running: Running): Registry {
  return new Map<string, Command>([
    ["status", () => statusOf(running)],
    [
      "reload",
      () => queueReload(running).catch((e) => ({ error: `reload crashed: ${describeError(e)}` })),
    ],
    // A bal from before upgrades, as tests play it.
    ...(faultInjected("no_handover") ? [] : upgradeCommands(running)),
    ...changeCommands(running),
    ...backendCommands({
      runtime: running.runtime,
      broadcast: (id, admin) => running.pool?.admin(id, admin),
      kill: async (id) =>
        running.engine.kill(id) + running.udp.kill(id) + (await running.pool?.kill(id, 1000) ?? 0),
      status: () => statusOf(running),
    }),
  ]);
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
  const [forcedHere, forcedWorkers] = await Promise.all([
    engine.drain(drainMs),
    workersDrained,
    running.udp.stop(drainMs, running.upgrade.retired),
  ]);
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
