/**
 * Reloading: the config re-read and applied (listeners first, all or nothing, then the snapshot
 * every data plane follows), one reload at a time whether SIGHUP or the `reload` control command
 * asked; discovery's changes applied the same way.
 *
 * @module
 */
import { configChanges, describeChanges } from "../config/changes.ts";
import { allBackends, type Config, readConfig, workerCount } from "../config/mod.ts";
import { describeError, ListenError } from "../errors.ts";
import type { ReloadOutcome } from "./state_file.ts";
import { setAccessFile, setLogLevel } from "../log.ts";
import { plural } from "../text.ts";
import { type Snapshot, swapSnapshot } from "../snapshot.ts";
import { expandConfig } from "../discovery/expand.ts";
import { type AdminServer, sameListen } from "../admin/endpoint.ts";
import { openAdmin } from "./observe.ts";
import { listeningOf } from "./planes.ts";
import type { Running } from "./running.ts";
import { logger } from "../log.ts";

const log = logger("server");

/**
 * Runs a reload after those already asked for (SIGHUP and the `reload`
 * command alike, one at a time in the order they came); its outcome.
 */
export function queueReload(running: Running): Promise<ReloadOutcome> {
  const outcome = running.reloading.then(() => reload(running));
  running.reloading = outcome.then(() => {}, (err) => {
    log.error("reload crashed: {error}", { event: "reload_failed", error: describeError(err) });
  });
  return outcome;
}

/**
 * Re-reads the config file and applies it: new and moved listeners first
 * (all or nothing), then the snapshot swap that every data plane follows.
 * On any error the running config stays and the reason is logged. The
 * caller holds the queue ({@link queueReload}, or a change from code).
 */
export async function reload(running: Running): Promise<ReloadOutcome> {
  const { runtime, state } = running;
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
    running.declaredText = result.text;
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
        listen: listeningOf(running)[next.config.services[0].name],
        summary,
        ...changed,
      },
    );
  }
  const listening = listeningOf(running);
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
export function applyDiscovered(running: Running): void {
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
    running.udp.apply(config);
    try {
      running.engine.apply(config);
    } catch (err) {
      // The UDP sockets just opened close again: all or nothing.
      running.udp.apply(running.runtime.snapshot.config);
      throw err;
    }
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
