/**
 * `bal upgrade` and `bal restart`: a new bal from the program on disk takes
 * the running one's listening sockets (instance/handover.ts), and the old
 * one drains and exits. No listening socket closes, so no client is
 * refused. Any failure before the new bal serves leaves the old one
 * serving, unchanged.
 *
 * @module
 */
import { drainTimeout, readConfig } from "../config/mod.ts";
import { startDaemon } from "../instance/daemon.ts";
import { ReloadRefused } from "../instance/control.ts";
import { findInstance, processStatus } from "../instance/state_file.ts";
import { type StatePaths, statePaths } from "../instance/paths.ts";
import { BalError, describeError, StateError } from "../errors.ts";
import { quote } from "../text.ts";
import { configPathOf, out, plural, sayListening } from "./output.ts";

/** Options of `bal upgrade`. */
export interface UpgradeOptions {
  config?: string;
  /** Wait for the old bal to drain and exit. */
  wait?: boolean;
  /** Seconds the new bal has to take over and serve. */
  timeout?: string;
}

/** `bal upgrade`. */
export async function upgradeCommand(options: UpgradeOptions): Promise<number> {
  const paths = statePaths();
  if (options.timeout !== undefined && !/^\d+(\.\d+)?$/.test(options.timeout)) {
    throw new BalError(`--timeout takes seconds, e.g. --timeout 30; got ${quote(options.timeout)}`);
  }
  const timeoutMs = Number(options.timeout ?? 30) * 1000;
  if (Deno.build.os !== "linux") {
    throw new StateError(
      `bal upgrade hands listening sockets over, which needs Linux; on ${Deno.build.os}, bal stop, then bal start -d`,
    );
  }
  const found = await findInstance(paths);
  if (found.kind !== "running" || !found.state) {
    throw new StateError("bal is not running; bal start -d starts it");
  }
  const old = found.pid;
  const configPath = options.config ? configPathOf(options.config, paths) : found.state.config_path;
  // Checked here first for the line:col errors; the new bal checks it again.
  const check = await readConfig(configPath);
  if (!check.ok) {
    throw new ReloadRefused(check.errors, "not upgraded: the running bal is unchanged");
  }
  const foreground = found.state.daemon === false;
  let started;
  try {
    started = await startDaemon(configPath, paths, {
      upgradeTimeoutMs: timeoutMs,
      foregroundLog: foreground ? found.state.log_format ?? "text" : undefined,
    });
  } catch (err) {
    await removeStaleHandoverSockets(paths);
    throw new BalError(
      `upgrade failed; bal (pid ${old}) serves on, unchanged: ${describeError(err)}`,
      1,
      { cause: err },
    );
  }
  const u = started.upgraded;
  sayListening(`upgraded: bal pid ${old} -> pid ${started.pid}`, started.listening);
  out(
    `${plural(u?.sockets ?? 0, "listening socket")} handed over; pid ${old} drains ${
      plural(u?.draining ?? 0, "connection")
    }${foreground ? "; the new bal logs to this command's standard error" : ""}`,
  );
  if (options.wait) {
    await waitForExit(old, drainTimeout(check.config));
    out(`pid ${old} drained and exited`);
  }
  return 0;
}

/** Waits until `pid` has exited: its drain timeout, plus a margin, at most. */
async function waitForExit(pid: number, drainMs: number): Promise<void> {
  const deadline = Date.now() + drainMs + 10_000;
  while ((await processStatus(pid)) === "running") {
    if (Date.now() > deadline) {
      throw new BalError(
        `pid ${pid} has not exited ${(drainMs + 10_000) / 1000} s after the upgrade`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Removes the hand-over sockets of new bals that died before they finished. */
async function removeStaleHandoverSockets(paths: StatePaths): Promise<void> {
  for await (const e of Deno.readDir(paths.dir)) {
    const pid = Number(/^bal\.upgrade\.(\d+)\.sock$/.exec(e.name)?.[1]);
    if (pid && (await processStatus(pid)) !== "running") {
      await Deno.remove(`${paths.dir}/${e.name}`).catch(() => {});
    }
  }
}
