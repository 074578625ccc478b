/**
 * What this build of bal is: its version and the Deno flags it runs with.
 *
 * Both come from `deno.json`, which is embedded at compile time, so the
 * `bal` task there stays the only place the permission flags are written.
 *
 * @module
 */
import denoJson from "../deno.json" with { type: "json" };

/** The released version, from `deno.json`. */
export const VERSION: string = denoJson.version;

/** The entry module the `bal` task runs, relative to the project root. */
const ENTRY = "src/main.ts";

/**
 * Extracts the flags between `deno run` and the entry module of a task
 * command line, e.g. `--allow-net --allow-read`.
 */
export function flagsOfTask(command: string): string[] {
  const words = command.trim().split(/\s+/);
  const run = words.indexOf("run");
  const entry = words.indexOf(ENTRY);
  if (words[0] !== "deno" || run !== 1 || entry <= run) {
    throw new Error(`task must read "deno run <flags> ${ENTRY}", got "${command}"`);
  }
  return words.slice(run + 1, entry);
}

/**
 * The permission and unstable flags of the `bal` task, which
 * `deno compile` bakes into the binary and the daemon re-runs itself with.
 * deno.json cannot hold comments, so each flag is justified here:
 *
 * - `--allow-net`: listen on the configured address, connect to any backend.
 * - `--allow-read`: the config may be anywhere (`-c`), and the state
 *   directory (`$BAL_HOME` or `~/.bal`) is only known at run time; Deno does
 *   not expand `~` and a binary's paths are fixed when it is built.
 * - `--allow-write`: the state directory, for the same reason.
 * - `--allow-run`: `start -d` re-runs bal detached; `stop`/`graceful` send
 *   signals; process state comes from `cat /proc/PID/stat` or `ps`, since
 *   Deno wants `--allow-all` to read `/proc/PID` itself.
 * - `--allow-env=HOME,BAL_HOME,BAL_ENGINE,INIT_CWD`: the state directory,
 *   the engine override, and the caller's directory under `deno task`
 *   (relative `-c` paths); nothing else.
 * - `--unstable-net`: `reusePort` on the listener, so `workers` data planes
 *   share the port.
 * - `--v8-flags=--max-semi-space-size=4`: a 4 MB young generation per
 *   isolate (Deno's default grows far larger). Measured on short
 *   connections: 14,600/s against 12,700/s with the default and 12,800/s
 *   with 1 MB; RSS under sustained load 114 MB against 203 MB (2 workers,
 *   35,000 streamed connections).
 */
export const RUN_FLAGS: readonly string[] = Object.freeze(
  flagsOfTask(denoJson.tasks.bal.command),
);

/** Path of `deno.json`, needed to re-run from source (it holds the import map). */
function denoConfigPath(): string {
  return new URL("../deno.json", import.meta.url).pathname;
}

/**
 * The command line that starts this same program again with other
 * arguments: the binary itself when compiled, `deno run` with the same
 * flags and import map when run from source.
 */
export function selfCommand(args: string[]): { cmd: string; args: string[] } {
  if (Deno.build.standalone) return { cmd: Deno.execPath(), args };
  const main = new URL("./main.ts", import.meta.url).pathname;
  return {
    cmd: Deno.execPath(),
    args: ["run", ...RUN_FLAGS, "--config", denoConfigPath(), main, ...args],
  };
}
