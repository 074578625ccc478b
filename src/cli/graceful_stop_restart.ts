/**
 * `bal graceful` (reload) and `bal stop` on the running bal.
 *
 * @module
 */
import { findInstance } from "../instance/state_file.ts";
import { readConfig } from "../config/mod.ts";
import { graceful, ReloadRefused, stop } from "../instance/control.ts";
import { startDaemon } from "../instance/daemon.ts";
import { BalError, StateError } from "../errors.ts";
import { quote } from "../text.ts";
import { type StatePaths, statePaths } from "../instance/paths.ts";
import { configPathOf, err, out, plural, sayListening } from "./output.ts";

/**
 * With `-c FILE`, makes sure the running bal is the one using FILE: acting
 * on another bal's config would surprise whoever typed it.
 */
async function sameConfig(paths: StatePaths, option: string | undefined): Promise<void> {
  if (!option) return;
  const found = await findInstance(paths);
  const running = found.kind === "running" ? found.state?.config_path : undefined;
  const wanted = configPathOf(option, paths);
  if (running && running !== wanted) {
    throw new StateError(
      `the running bal (pid ${
        found.kind === "running" ? found.pid : "?"
      }) uses ${running}, not ${wanted}; run without -c to act on it`,
    );
  }
}

/** `bal graceful`. */
export async function gracefulCommand(options: { config?: string }): Promise<number> {
  const paths = statePaths();
  await sameConfig(paths, options.config);
  const outcome = await graceful(paths);
  if (!outcome.ok) {
    err(`reload failed, the running config is unchanged: ${outcome.error}`);
    return 1;
  }
  const head = `reloaded: generation ${outcome.generation}, ${plural(outcome.backends, "backend")}`;
  sayListening(head, outcome.listening);
  out(outcome.changes ?? "no change");
  return 0;
}

/** Options of `bal stop`. */
export interface StopCommandOptions {
  config?: string;
  /** Seconds to let connections drain before closing what is left. */
  timeout?: string;
  force?: boolean;
}

/** `bal stop`: says what it waits for, and on a terminal counts the connections down. */
export async function stopCommand(options: StopCommandOptions): Promise<number> {
  const paths = statePaths();
  await sameConfig(paths, options.config);
  if (options.timeout !== undefined && !/^\d+(\.\d+)?$/.test(options.timeout)) {
    throw new BalError(`--timeout takes seconds, e.g. --timeout 10; got ${quote(options.timeout)}`);
  }
  const tty = Deno.stdout.isTerminal();
  let last = -1;
  const { pid, forced } = await stop(paths, {
    force: options.force,
    timeoutMs: options.timeout === undefined ? undefined : Number(options.timeout) * 1000,
    onWait: () => out("bal is starting; waiting for it to be ready to stop it"),
    onDraining: (active, drainMs) => {
      if (active === 0) return;
      const limit = options.force
        ? "closing them now"
        : `up to ${Math.min(drainMs, Number(options.timeout ?? Infinity) * 1000) / 1000} s`;
      out(`stopping: draining ${plural(active, "connection")} (${limit})`);
      last = active;
    },
    onProgress: (left) => {
      // Nothing to count down unless a drain was announced.
      if (left === last || last < 0) return;
      last = left;
      // A terminal gets one line counting down; a pipe or file, a line per change.
      if (tty) {
        Deno.stdout.writeSync(
          new TextEncoder().encode(`\r  ${plural(left, "connection")} left   `),
        );
      } else out(`  ${plural(left, "connection")} left`);
    },
  });
  if (tty && last >= 0) out("");
  const cut = forced ? `; force-closed ${plural(forced, "connection")} still open` : "";
  out(`bal stopped (pid ${pid})${cut}`);
  return 0;
}

/**
 * `bal restart`: on Linux, `bal upgrade` with the running config (no
 * client refused). Where sockets cannot be handed over, the cold path:
 * stop (draining), then start as a daemon.
 */
export async function restartCommand(
  options: { config?: string; wait?: boolean; timeout?: string },
): Promise<number> {
  const paths = statePaths();
  await sameConfig(paths, options.config);
  if (Deno.build.os === "linux") {
    try {
      return await (await import("./upgrade.ts")).upgradeCommand({ ...options, config: undefined });
    } catch (err) {
      const { PREDATES_UPGRADE } = await import("../instance/handover.ts");
      if (!(err instanceof BalError && err.message.includes(PREDATES_UPGRADE))) throw err;
      out(`${PREDATES_UPGRADE}: restarting it cold (stop, then start)`);
    }
  }
  const found = await findInstance(paths);
  const configPath = found.kind === "running" ? found.state?.config_path : undefined;
  if (!configPath) {
    throw new StateError("bal is not running; bal start -d starts it");
  }
  // Checked before stopping: a config that cannot start must not cost the running bal.
  const check = await readConfig(configPath);
  if (!check.ok) throw new ReloadRefused(check.errors, "not restarted: bal keeps running");
  const { pid } = await stop(paths);
  out(`bal stopped (pid ${pid})`);
  const started = await startDaemon(configPath, paths);
  sayListening(`bal started in the background (pid ${started.pid})`, started.listening);
  return 0;
}
