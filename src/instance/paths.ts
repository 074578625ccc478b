/**
 * Where bal keeps its files: `$BAL_HOME` if set, else `~/.bal`, resolved at
 * run time because Deno does not expand `~` and a compiled binary's
 * permissions are fixed when it is built.
 *
 * @module
 */
import { BalError, ioReason } from "../errors.ts";

/** The files in the state directory. */
export interface StatePaths {
  /** The state directory itself. */
  dir: string;
  /** Default config file. */
  config: string;
  /** Pid of the running bal (foreground or daemon). */
  pid: string;
  /** Daemon log, one JSON object per line. */
  log: string;
  /** What the running bal reports about itself (listening, reload outcomes). */
  state: string;
  /** Control socket answering `bal status`. */
  sock: string;
  /** Held locked (flock) by the running bal for its whole life: one bal per directory. */
  lock: string;
  /** Pid of a `bal start -d` still waiting for its daemon to be ready. */
  starting: string;
}

/** Resolves the state directory from the environment. */
export function stateDir(): string {
  const override = Deno.env.get("BAL_HOME");
  if (override) return absolute(override);
  const home = Deno.env.get("HOME");
  if (!home) throw new BalError("cannot find the state directory: set HOME or BAL_HOME");
  return `${home}/.bal`;
}

/** The state directory's files. */
export function statePaths(dir: string = stateDir()): StatePaths {
  return {
    dir,
    config: `${dir}/config.yaml`,
    pid: `${dir}/bal.pid`,
    log: `${dir}/bal.log`,
    state: `${dir}/bal.state.json`,
    sock: `${dir}/bal.sock`,
    lock: `${dir}/bal.lock`,
    starting: `${dir}/bal.starting`,
  };
}

/**
 * Makes a path absolute against the directory the user ran bal from, so it
 * survives a `chdir` (the daemon runs in `/`).
 */
export function absolute(path: string): string {
  if (path.startsWith("/")) return path;
  return `${callerDir()}/${path}`.replace(/\/\.\//g, "/");
}

/**
 * Where the user ran bal: the binary's current directory. `deno task` runs
 * from the project root instead and passes the caller's directory as
 * INIT_CWD, so from source a relative `-c FILE` means what it would mean
 * to the binary.
 */
function callerDir(): string {
  const init = Deno.build.standalone ? undefined : Deno.env.get("INIT_CWD");
  return init?.startsWith("/") ? init : Deno.cwd();
}

/**
 * Creates the state directory (mode 0700) when it is missing and makes sure
 * bal can write there, so a daemon is never started into a directory where
 * it cannot keep its lock, pid file or log.
 */
export async function ensureStateDir(paths: StatePaths): Promise<void> {
  const fail = (err: unknown): never => {
    throw new BalError(
      `cannot use ${paths.dir} as the state directory: ${
        ioReason(err)
      }; set BAL_HOME to a directory bal can write`,
    );
  };
  await Deno.mkdir(paths.dir, { recursive: true, mode: 0o700 }).catch(fail);
  const probe = `${paths.dir}/.bal-write-test-${Deno.pid}`;
  await Deno.writeTextFile(probe, "").catch(fail);
  await Deno.remove(probe).catch(() => {});
}
