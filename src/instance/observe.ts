/**
 * What a running bal shows of itself: the status report and the metrics (every worker's counters as
 * of now), and the admin endpoint that serves them.
 *
 * @module
 */
import { summarizeLag } from "../stats/loop_lag.ts";
import type { Config } from "../config/mod.ts";
import { VERSION } from "../build.ts";
import { buildStatus, type Status } from "./status_report.ts";
import { type AdminServer, startAdmin } from "../admin/endpoint.ts";
import { renderMetrics } from "../stats/metrics.ts";
import type { Running } from "./running.ts";
import { dispatch } from "../admin/registry.ts";
import { engineOf } from "../engine/tls/beside.ts";
import { certificateSamples, tlsStatusOf } from "./tls_status.ts";

/** How long `bal status` waits for the workers' current counters before using their last report. */
const STATUS_REFRESH_MS = 250;

/** The live status, with every worker's counters as of now. */
export async function statusOf(running: Running): Promise<Status> {
  await running.pool?.refresh(STATUS_REFRESH_MS);
  const { runtime } = running;
  const status = buildStatus({
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
    upgrades: running.upgrade.count,
    retired: running.upgrade.retired,
    engine: running.engine.name,
    engineFallback: running.engineFallback,
    loopLag: summarizeLag(running.lag),
    discovery: running.discovery.status(),
    udp: running.udp.counters(),
    udpEngine: running.udp.engine,
    engineOf: (service) => engineOf(running.engine, service),
    tlsOf: await tlsStatusOf(runtime.snapshot.services.values()),
  });
  return { ...status, last_change: running.lastChange };
}

/** The admin endpoint on `settings.listen`, serving this bal's metrics and status. */
export function openAdmin(running: Running, settings: Config["admin"]): AdminServer | null {
  return startAdmin(settings.listen, () => running.runtime.snapshot.config.admin, {
    metrics: () => metricsOf(running),
    status: () => statusOf(running),
    command: async (request, caller) =>
      await dispatch(running.commands, { ...request, caller: `token ${caller.name}` }),
  }, running.upgrade.held);
}

/** The metrics, with every worker's counters as of now. */
async function metricsOf(running: Running): Promise<string> {
  await running.pool?.refresh(STATUS_REFRESH_MS);
  const { runtime } = running;
  return renderMetrics({
    version: VERSION,
    engine: running.engine.name,
    engineFallback: running.engineFallback,
    lag: running.lag,
    startedAt: running.startedAt,
    rssBytes: Deno.memoryUsage().rss,
    openFds: await openFds(),
    snapshot: runtime.snapshot,
    health: runtime.health,
    admin: runtime.admin,
    protection: runtime.protection,
    planes: running.stats(),
    reloads: running.reloadOutcomes,
    upgrades: running.upgrade.count,
    udp: running.udp.counters(),
    certificates: certificateSamples(
      runtime.snapshot.config.services,
      await tlsStatusOf(runtime.snapshot.services.values()),
    ),
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
