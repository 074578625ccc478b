/**
 * The running bal as other commands see it: `bal.pid`, the state file it
 * keeps up to date (`bal.state.json`: listening address, reload outcomes),
 * and whether that pid is really a live bal.
 *
 * A pid counts as running only if the process exists, is not a zombie
 * (an exited daemon can stay one for seconds before it is reaped), holds
 * the state directory's lock (`bal.lock`, which the kernel releases however
 * bal dies) and, where the platform tells, started when the state file says
 * it did: a reused pid is never taken for bal.
 *
 * @module
 */
import type { StatePaths } from "./paths.ts";
import type { PlaneStats } from "../stats/counters.ts";

/** What the running bal reports about itself. */
export interface InstanceState {
  pid: number;
  /** Process start time as the OS reports it, to tell a reused pid apart. */
  proc_start: string | null;
  status: "running" | "stopping" | "draining";
  /** Whether it runs as a daemon (logging to bal.log); absent from bals before upgrades. */
  daemon?: boolean;
  /** Its terminal log format, when in the foreground. */
  log_format?: "text" | "json";
  config_path: string;
  /** `host:port` the first service listens on. */
  listen: string | null;
  /** `host:port` of every service's listener, by service name. */
  listening: Record<string, string>;
  started_at: string;
  /** Reload attempts so far (SIGHUP received and handled). */
  reloads: number;
  last_reload: ReloadOutcome | null;
  /** Counters of each data plane (0 is the main thread), refreshed every second. */
  data_planes: PlaneStats[];
}

/** How the last reload went. */
export interface ReloadOutcome {
  at: string;
  ok: boolean;
  error: string | null;
  /** Snapshot generation in force after it. */
  generation: number;
  /** Backends of every service. */
  backends: number;
  services: number;
  /** The first service's listen address. */
  listen: string | null;
  /** Every service's listen address, by name. */
  listening: Record<string, string>;
  /** What it changed, in a line (`no change`, `services added: api; ...`); null when it failed. */
  changes: string | null;
}

/** What the pid file says about bal. */
export type Instance =
  | { kind: "running"; pid: number; state: InstanceState | null }
  | { kind: "stale"; pid: number }
  | { kind: "none" };

/** Whether a pid is a live process, an unreaped zombie, or gone. */
export type ProcessStatus = "running" | "zombie" | "gone";

/** The OS's view of a process: its state letter and its start time. */
interface ProcessInfo {
  state: string;
  start: string;
}

/** The trimmed standard output of a command that succeeded, else null. */
async function output(cmd: string, args: string[]): Promise<string | null> {
  const out = await new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "null" })
    .output()
    .catch(() => null);
  const text = out?.success ? new TextDecoder().decode(out.stdout).trim() : "";
  return text || null;
}

/**
 * A file under `/proc`, read through `cat`: Deno requires --allow-all to
 * read `/proc` and bal runs with narrower permissions. Null when it cannot
 * be read (or there is no `/proc`).
 */
export function readProc(path: string): Promise<string | null> {
  return output("cat", [path]);
}

/**
 * Asks the OS about `pid`, or null when there is no such process. Linux:
 * `/proc/PID/stat`. Elsewhere: `ps`, which reports the same two facts.
 */
async function processInfo(pid: number): Promise<ProcessInfo | null> {
  const linux = Deno.build.os === "linux";
  const text = linux
    ? await readProc(`/proc/${pid}/stat`)
    : await output("ps", ["-o", "stat=,lstart=", "-p", String(pid)]);
  if (!text) return null;
  if (!linux) {
    const [state, ...start] = text.split(/\s+/);
    return { state, start: start.join(" ") };
  }
  // The command name (field 2) may hold spaces and parentheses: split after the last ")".
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { state: fields[0], start: fields[19] };
}

/** Whether `pid` is running, a zombie, or gone. */
export async function processStatus(pid: number): Promise<ProcessStatus> {
  const info = await processInfo(pid);
  if (!info) return "gone";
  return info.state.startsWith("Z") || info.state.startsWith("X") ? "zombie" : "running";
}

/** Whether `pid` is stopped by a signal (SIGSTOP, a debugger): it runs but answers nothing. */
export async function isPaused(pid: number): Promise<boolean> {
  const state = (await processInfo(pid))?.state ?? "";
  return state.startsWith("T") || state.startsWith("t");
}

/** When `pid` started, as the OS words it, or null when it is gone. */
export async function processStart(pid: number): Promise<string | null> {
  return (await processInfo(pid))?.start ?? null;
}

/** Reads the pid file: a positive integer, or null when absent or unreadable. */
export async function readPid(paths: StatePaths): Promise<number | null> {
  try {
    const pid = Number((await Deno.readTextFile(paths.pid)).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** Reads the state file, or null when absent or unreadable. */
export async function readState(paths: StatePaths): Promise<InstanceState | null> {
  try {
    return JSON.parse(await Deno.readTextFile(paths.state)) as InstanceState;
  } catch {
    return null;
  }
}

/**
 * Whether no process holds the state directory's lock (so no bal runs
 * there, whatever the pid file says). Takes and drops the lock to find out.
 */
async function lockFree(paths: StatePaths): Promise<boolean> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(paths.lock, { read: true });
  } catch {
    return true;
  }
  try {
    return await file.tryLock(true);
  } finally {
    file.close();
  }
}

/**
 * Finds the running bal from the pid file. A pid counts only while its
 * process is alive, not a zombie, started when the state file says, and
 * the directory's lock is held.
 */
export async function findInstance(paths: StatePaths): Promise<Instance> {
  const pid = await readPid(paths);
  if (pid === null) return { kind: "none" };
  if (pid === Deno.pid || (await processStatus(pid)) !== "running") return { kind: "stale", pid };
  // A live process that is not bal (the pid was reused, the state file is gone).
  if (await lockFree(paths)) return { kind: "stale", pid };
  const state = await readState(paths);
  if (state && state.pid === pid && state.proc_start !== null) {
    const start = await processStart(pid);
    if (start !== null && start !== state.proc_start) return { kind: "stale", pid };
  }
  return { kind: "running", pid, state: state?.pid === pid ? state : null };
}

/**
 * Whether a bal is on its way up without a pid file yet: its daemon holds
 * the lock, or a `bal start -d` that is still waiting for it is alive.
 */
export async function isStarting(paths: StatePaths): Promise<boolean> {
  if (!(await lockFree(paths))) return true;
  const pid = Number((await Deno.readTextFile(paths.starting).catch(() => "")).trim());
  return Number.isInteger(pid) && pid > 0 && (await processStatus(pid)) === "running";
}

/** Writes a file whole or not at all (write aside, then rename). */
export async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(tmp, text, { mode: 0o600 });
  await Deno.rename(tmp, path);
}

/** Writes this process's pid file. */
export async function writePid(paths: StatePaths): Promise<void> {
  await writeAtomic(paths.pid, `${Deno.pid}\n`);
}

/** Writes this process's state file. */
export async function writeState(paths: StatePaths, state: InstanceState): Promise<void> {
  await writeAtomic(paths.state, JSON.stringify(state, null, 2) + "\n");
}

/**
 * Removes the pid and state files, but only if the pid file names `pid`:
 * a newer bal may own them already.
 */
export async function removeInstanceFiles(paths: StatePaths, pid: number): Promise<void> {
  if ((await readPid(paths)) !== pid) return;
  for (const file of [paths.pid, paths.state]) {
    await Deno.remove(file).catch(() => {});
  }
}
