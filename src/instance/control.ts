/**
 * Commands that act on the running bal: `stop` (SIGTERM, then wait for the
 * drain), `graceful` (validate, then the `reload` control command, which
 * answers with the outcome), and the live status from its control socket.
 *
 * @module
 */
import { BalError, type ConfigError, describeError, StateError } from "../errors.ts";
import {
  findInstance,
  type Instance,
  isPaused,
  isStarting,
  processStatus,
  readState,
  type ReloadOutcome,
  removeInstanceFiles,
} from "./state_file.ts";
import type { StatePaths } from "./paths.ts";
import { NoAnswer, request } from "./control_socket.ts";
import { notRunning, type Status } from "./status_report.ts";
import { drainingBals } from "./draining.ts";

/** Extra time `stop` allows beyond the drain timeout for the process to exit. */
const STOP_MARGIN_MS = 5_000;
/** How long `graceful` waits for the daemon to answer its reload. */
const RELOAD_TIMEOUT_MS = 10_000;

async function runningPid(paths: StatePaths): Promise<number> {
  const found = await findInstance(paths);
  if (found.kind === "stale") await removeInstanceFiles(paths, found.pid);
  if (found.kind !== "running") {
    const note = found.kind === "stale" ? ` (removed the stale pid file of pid ${found.pid})` : "";
    throw new StateError(`bal is not running${note}`);
  }
  return found.pid;
}

/** How long `stop` waits for a bal that is starting to be ready. */
const START_WAIT_MS = 30_000;

/**
 * The pid of a bal that is starting, once it is ready, or null when no
 * start is under way (or it failed). `onWait` hears once that it waits.
 */
async function awaitStarting(paths: StatePaths, onWait: () => void): Promise<number | null> {
  if (!(await isStarting(paths))) return null;
  onWait();
  const deadline = Date.now() + START_WAIT_MS;
  while (Date.now() < deadline) {
    const found = await findInstance(paths);
    if (found.kind === "running" && found.state) return found.pid;
    if (found.kind !== "running" && !(await isStarting(paths))) return null;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new BalError(`bal did not finish starting within ${START_WAIT_MS / 1000} s; try again`);
}

/** How `stop` goes about it. */
export interface StopOptions {
  /** Hears once that bal is starting and stop waits for it. */
  onWait?(): void;
  /** Hears when the drain begins: connections live then and the drain timeout. */
  onDraining?(active: number, drainMs: number): void;
  /** Hears the live connection count about twice a second while bal drains. */
  onProgress?(left: number): void;
  /** After this long, close what is left (a second SIGTERM) instead of waiting more. */
  timeoutMs?: number;
  /** Close live connections at once. */
  force?: boolean;
}

/**
 * Sends SIGTERM and waits until the process has exited: up to its drain
 * timeout (or `timeoutMs`) plus a margin. A bal that is starting is waited
 * for first, then stopped. Resolves to the stopped pid.
 */
export async function stop(paths: StatePaths, options: StopOptions = {}): Promise<Stopped> {
  const found = await findInstance(paths);
  // Only a bal with no pid file yet can be starting; a stale pid file is just stale.
  const starting = found.kind === "none"
    ? await awaitStarting(paths, options.onWait ?? (() => {}))
    : null;
  const pid = found.kind === "running" ? found.pid : starting ?? await runningPid(paths);
  // The drain timeout in force, not the one in a file edited since.
  const status = await liveStatus(paths).catch(() => null);
  const drainMs = (status && drainOf(status)) ?? await defaultDrainMs();
  options.onDraining?.(status ? activeOf(status) : 0, drainMs);
  const logFrom = await Deno.stat(paths.log).then((s) => s.size, () => 0);
  Deno.kill(pid, "SIGTERM");
  const cutAfter = options.force ? 0 : options.timeoutMs;
  await waitForExit(paths, pid, Math.min(drainMs, cutAfter ?? drainMs), cutAfter, options);
  // A zombie cannot remove its own files; a clean exit already did.
  await removeInstanceFiles(paths, pid);
  return { pid, forced: await forcedInLog(paths.log, logFrom) };
}

/** A stopped bal: its pid, and how many live connections it closed rather than waited for. */
export interface Stopped {
  pid: number;
  /** Closed at the drain timeout or by `--timeout`/`--force`; null when its log could not be read. */
  forced: number | null;
}

/**
 * Connections the daemon says it closed, in the log lines it wrote from
 * `offset` on: a second signal's `drain_forced` (`left`), else the drain
 * timeout's `drain_timeout` (`forced`). A bal in the foreground logs to its
 * terminal, not the file: then nothing is known here (null).
 */
async function forcedInLog(path: string, offset: number): Promise<number | null> {
  let text: string;
  try {
    const file = await Deno.open(path);
    try {
      await file.seek(offset, Deno.SeekMode.Start);
      text = await new Response(file.readable).text();
    } catch (e) {
      file.close();
      throw e;
    }
  } catch {
    return null;
  }
  let forced: number | null = null;
  let stopped = false;
  for (const line of text.split("\n")) {
    const event = /"event":"(drain_forced|drain_timeout|stopped)"/.exec(line)?.[1];
    if (!event) continue;
    const fields = (JSON.parse(line) as { fields?: Record<string, unknown> }).fields ?? {};
    const value = Number(fields[event === "drain_forced" ? "left" : "forced"]);
    if (event === "stopped") stopped = true;
    else if (event === "drain_forced") forced = value;
    // A removed service's own drain timeout (it names the service) is not the shutdown's.
    else if (forced === null && fields.service === undefined) forced = value;
  }
  return stopped ? forced ?? 0 : null;
}

/**
 * The default drain timeout, for a bal whose status cannot be read. Loaded
 * here, not at the top: the config module brings the YAML parser, which
 * `bal status` (also served by this module) does not need.
 */
async function defaultDrainMs(): Promise<number> {
  return (await import("../config/runtime.ts")).RUNTIME_RULES.shutdown_drain_timeout_ms.tuned[0];
}

const activeOf = (s: Status) => (s.services ?? []).reduce((n, x) => n + x.active_connections, 0);

/**
 * Polls until `pid` has exited; after `cutAfter` ms (once bal says it is
 * stopping, so the two signals are not merged into one) sends the second
 * SIGTERM that closes what is left.
 */
async function waitForExit(
  paths: StatePaths,
  pid: number,
  waitMs: number,
  cutAfter: number | undefined,
  options: StopOptions,
): Promise<void> {
  const started = Date.now();
  const deadline = started + waitMs + STOP_MARGIN_MS;
  let cut = false;
  let polled = 0;
  while ((await processStatus(pid)) === "running") {
    const now = Date.now();
    if (!cut && cutAfter !== undefined && now - started >= cutAfter) {
      const state = await readState(paths);
      if (state?.status === "stopping" || now - started > 1000) {
        cut = true;
        Deno.kill(pid, "SIGTERM");
      }
    }
    if (options.onProgress && now - polled >= 500) {
      polled = now;
      const s = await request(paths.sock, { cmd: "status" }, 400).catch(() => null) as
        | Status
        | null;
      if (s?.services) options.onProgress(activeOf(s));
    }
    if (now > deadline) {
      throw new BalError(
        `bal (pid ${pid}) did not exit within ${(waitMs + STOP_MARGIN_MS) / 1000} s of SIGTERM`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The longest drain timeout of the running bal's services. */
function drainOf(s: Status): number | undefined {
  const all = (s.services ?? []).map((x) => x.runtime.shutdown_drain_timeout_ms);
  return all.length ? Math.max(...all) : s.runtime?.shutdown_drain_timeout_ms;
}

/**
 * Validates the running bal's config file, then asks the daemon to reload
 * over its control socket and returns the outcome it answers with (the
 * same reload SIGHUP runs). An invalid file sends nothing.
 */
export async function graceful(paths: StatePaths): Promise<ReloadOutcome> {
  const pid = await runningPid(paths);
  const before = await readState(paths);
  if (!before) throw new StateError(`bal (pid ${pid}) is starting or stopping; try again`);
  const { readConfig } = await import("../config/mod.ts");
  const check = await readConfig(before.config_path);
  if (!check.ok) throw new ReloadRefused(check.errors);
  let reply: ReloadOutcome & { error?: string };
  try {
    reply = await request(paths.sock, { cmd: "reload" }, RELOAD_TIMEOUT_MS) as typeof reply;
  } catch (e) {
    if (e instanceof NoAnswer) throw await reloadUnanswered(pid);
    if ((await processStatus(pid)) !== "running") {
      throw new StateError(`bal (pid ${pid}) exited during the reload`, { cause: e });
    }
    throw await notAnswering(pid, paths, e);
  }
  if (typeof reply.ok === "boolean") return reply;
  if (/^unknown cmd "reload"/.test(String(reply.error))) {
    throw new StateError(
      `the running bal (pid ${pid}) predates the reload command; \`kill -HUP ${pid}\` reloads it`,
    );
  }
  throw new BalError(`reload: ${reply.error}`);
}

/** The request is in the daemon's socket, so it will reload: only the outcome is unknown. */
async function reloadUnanswered(pid: number): Promise<BalError> {
  const paused = await isPaused(pid);
  return new BalError(
    `asked bal (pid ${pid}) to reload, but it has not answered within ${
      RELOAD_TIMEOUT_MS / 1000
    } s${
      paused ? `: the process is stopped (kill -CONT ${pid} resumes it)` : ""
    }; the request was delivered and the reload applies when bal gets to it, so the outcome is not known yet (bal status --verbose shows it)`,
  );
}

/** `graceful` found the config invalid and sent nothing. */
export class ReloadRefused extends BalError {
  readonly errors: ConfigError[];

  /** What the command did not do, said after the errors. */
  readonly outcome: string;

  constructor(errors: ConfigError[], outcome = "not reloaded: the running config is unchanged") {
    super(`${errors[0].message}\n${outcome}`);
    this.outcome = outcome;
    this.name = "ReloadRefused";
    this.errors = errors;
  }
}

/**
 * The running bal's live status from its control socket, or "not running"
 * with the stale files it found and removed (a pid file, a control socket
 * left by `kill -9`).
 */
export async function liveStatus(paths: StatePaths): Promise<Status> {
  const found = await findInstance(paths);
  if (found.kind !== "running") return notRunning(await removeStale(paths, found));
  let reply: Status & { error?: string };
  try {
    reply = await request(paths.sock, { cmd: "status" }) as typeof reply;
    if (reply.error) throw new Error(reply.error);
  } catch (e) {
    throw await notAnswering(found.pid, paths, e);
  }
  const draining = await drainingBals(paths.dir, async (path) => {
    const s = await request(path, { cmd: "status" }, 1000).catch(() => null) as Status | null;
    return s?.services ? { active: activeOf(s) } : null;
  });
  return draining.length ? { ...reply, draining } : reply;
}

/** Removes what a dead bal left behind, unless one is starting; says what it removed. */
async function removeStale(paths: StatePaths, found: Instance): Promise<string[]> {
  const removed: string[] = [];
  if (found.kind === "stale") {
    await removeInstanceFiles(paths, found.pid);
    removed.push(`the stale pid file of pid ${found.pid}`);
  }
  // A bal that holds the lock (starting, or behind a pid file not its own) owns its socket.
  if (await isStarting(paths)) return removed;
  if (await Deno.remove(paths.sock).then(() => true, () => false)) {
    removed.push(`the stale control socket ${paths.sock}`);
  }
  return removed;
}

/** The error for a bal that runs but does not answer its control socket, saying why if known. */
async function notAnswering(pid: number, paths: StatePaths, e: unknown): Promise<BalError> {
  const why = await isPaused(pid)
    ? `the process is stopped (kill -CONT ${pid} resumes it)`
    : describeError(e);
  return new BalError(
    `bal (pid ${pid}) runs but its control socket ${paths.sock} does not answer: ${why}`,
  );
}

/** Sends one command to the running bal's control socket; its `{error}` becomes a BalError. */
export async function command(
  paths: StatePaths,
  body: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const pid = await runningPid(paths);
  let reply: Record<string, unknown>;
  try {
    reply = await request(paths.sock, body) as Record<string, unknown>;
  } catch (e) {
    throw await notAnswering(pid, paths, e);
  }
  if (typeof reply.error === "string") throw new BalError(reply.error);
  return reply;
}
