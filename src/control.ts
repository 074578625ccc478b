/**
 * Commands that act on the running bal: `stop` (SIGTERM, then wait for the
 * drain), `graceful` (validate, SIGHUP, then wait for the daemon's reload
 * report), and the live status from its control socket.
 *
 * @module
 */
import { readConfig, RUNTIME_RULES } from "./config/mod.ts";
import { BalError, type ConfigError, describeError, StateError } from "./errors.ts";
import {
  findInstance,
  processStatus,
  readState,
  type ReloadOutcome,
  removeInstanceFiles,
} from "./instance.ts";
import type { StatePaths } from "./paths.ts";
import { request } from "./socket.ts";
import { notRunning, type Status } from "./status.ts";

/** Extra time `stop` allows beyond the drain timeout for the process to exit. */
const STOP_MARGIN_MS = 5_000;
/** How long `graceful` waits for the daemon to report the reload. */
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

/**
 * Sends SIGTERM and waits until the process has exited: up to its drain
 * timeout plus a margin. Resolves to the stopped pid.
 */
export async function stop(paths: StatePaths): Promise<number> {
  const pid = await runningPid(paths);
  // The drain timeout in force, not the one in a file edited since.
  const drainMs = await liveStatus(paths)
    .then(drainOf)
    .catch(() => undefined) ?? RUNTIME_RULES.shutdown_drain_timeout_ms.tuned[0];
  Deno.kill(pid, "SIGTERM");
  const deadline = Date.now() + drainMs + STOP_MARGIN_MS;
  while ((await processStatus(pid)) === "running") {
    if (Date.now() > deadline) {
      throw new BalError(
        `bal (pid ${pid}) did not exit within ${(drainMs + STOP_MARGIN_MS) / 1000} s of SIGTERM`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  // A zombie cannot remove its own files; a clean exit already did.
  await removeInstanceFiles(paths, pid);
  return pid;
}

/** The longest drain timeout of the running bal's services. */
function drainOf(s: Status): number | undefined {
  const all = (s.services ?? []).map((x) => x.runtime.shutdown_drain_timeout_ms);
  return all.length ? Math.max(...all) : s.runtime?.shutdown_drain_timeout_ms;
}

/**
 * Validates the running bal's config file, then sends SIGHUP and waits for
 * the outcome the daemon reports. An invalid file sends nothing.
 */
export async function graceful(paths: StatePaths): Promise<ReloadOutcome> {
  const pid = await runningPid(paths);
  const before = await readState(paths);
  if (!before) throw new StateError(`bal (pid ${pid}) is starting or stopping; try again`);
  const check = await readConfig(before.config_path);
  if (!check.ok) throw new ReloadRefused(check.errors);
  Deno.kill(pid, "SIGHUP");
  const deadline = Date.now() + RELOAD_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const now = await readState(paths);
    if (now && now.pid === pid && now.reloads > before.reloads && now.last_reload) {
      return now.last_reload;
    }
    if ((await processStatus(pid)) !== "running") {
      throw new StateError(`bal (pid ${pid}) exited during the reload`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new BalError(
    `bal (pid ${pid}) did not report the reload within ${RELOAD_TIMEOUT_MS / 1000} s`,
  );
}

/** `graceful` found the config invalid and sent nothing. */
export class ReloadRefused extends BalError {
  readonly errors: ConfigError[];

  constructor(errors: ConfigError[]) {
    super(`${errors[0].message}\nnot reloaded: the running config is unchanged`);
    this.name = "ReloadRefused";
    this.errors = errors;
  }
}

/** The running bal's live status from its control socket, or "not running". */
export async function liveStatus(paths: StatePaths): Promise<Status> {
  const found = await findInstance(paths);
  if (found.kind === "stale") await removeInstanceFiles(paths, found.pid);
  if (found.kind !== "running") return notRunning();
  try {
    const reply = await request(paths.sock, { cmd: "status" }) as Status & { error?: string };
    if (reply.error) throw new Error(reply.error);
    return reply;
  } catch (e) {
    throw new BalError(
      `bal (pid ${found.pid}) runs but its control socket ${paths.sock} does not answer: ${
        describeError(e)
      }`,
    );
  }
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
    throw new BalError(
      `bal (pid ${pid}) runs but its control socket ${paths.sock} does not answer: ${
        describeError(e)
      }`,
    );
  }
  if (typeof reply.error === "string") throw new BalError(reply.error);
  return reply;
}
