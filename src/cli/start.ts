/**
 * `bal start` (foreground, or `-d` as a daemon) and `bal init`.
 *
 * @module
 */
import { DEFAULT_CONFIG_TEXT, readConfig } from "../config/mod.ts";
import { reportReady, startDaemon } from "../instance/daemon.ts";
import { BalError, describeError, ioReason } from "../errors.ts";
import type { LogFormat } from "../log.ts";
import { ensureStateDir, statePaths } from "../instance/paths.ts";
import { serve } from "../instance/lifecycle.ts";
import { configPathOf, out, sayListening } from "./output.ts";

/** Options of `bal start`. */
export interface StartOptions {
  config?: string;
  daemon?: boolean;
  logFormat: LogFormat;
  daemonChild?: string;
  /** As the child of `bal upgrade`: take over from the running bal within this long. */
  upgradeTimeoutMs?: number;
  /** Log to standard error in this format (a foreground bal's successor), not bal.log. */
  stderrLog?: LogFormat;
}

/** Writes the commented default config when there is none; true if it did. */
async function ensureDefaultConfig(path: string): Promise<boolean> {
  const info = await Deno.stat(path).catch(() => null);
  if (info && !info.isFile) {
    throw new BalError(
      `${path} is a directory; give the config file's path, e.g. -c ${
        path.replace(/\/$/, "")
      }/config.yaml`,
    );
  }
  try {
    await Deno.writeTextFile(path, DEFAULT_CONFIG_TEXT, { createNew: true, mode: 0o644 });
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) return false;
    throw new BalError(`cannot write the default config ${path}: ${ioReason(e)}`, 1, { cause: e });
  }
}

/** `bal start`. */
export async function startCommand(options: StartOptions): Promise<number> {
  const paths = statePaths();
  await ensureStateDir(paths);
  const configPath = configPathOf(options.config, paths);

  if (options.daemonChild) {
    const readyFile = options.daemonChild;
    try {
      return await serve({
        configPath,
        paths,
        logFormat: options.stderrLog ?? "json",
        daemon: !options.stderrLog,
        upgrade: options.upgradeTimeoutMs ? { timeoutMs: options.upgradeTimeoutMs } : undefined,
        onReady: (listening, upgraded) =>
          reportReady(readyFile, { ok: true, pid: Deno.pid, listening, upgraded }),
      });
    } catch (e) {
      await reportReady(readyFile, { ok: false, error: describeError(e) });
      throw e;
    }
  }

  if (!options.config && await ensureDefaultConfig(configPath)) {
    out(
      `wrote the default config to ${configPath} (port 9295, backends 127.0.0.1:9000 and 127.0.0.1:9100)`,
    );
  }
  const check = await readConfig(configPath);
  if (!check.ok) throw check.errors[0];

  if (options.daemon) {
    const started = await startDaemon(configPath, paths);
    sayListening(`bal started in the background (pid ${started.pid})`, started.listening);
    out(`log: ${paths.log}`);
    return 0;
  }
  return await serve({ configPath, paths, logFormat: options.logFormat, daemon: false });
}

/** `bal init`. */
export async function initCommand(options: { config?: string }): Promise<number> {
  const paths = statePaths();
  await ensureStateDir(paths);
  const configPath = configPathOf(options.config, paths);
  if (await ensureDefaultConfig(configPath)) out(`wrote the default config to ${configPath}`);
  else out(`${configPath} exists; left as it is`);
  return 0;
}
