/**
 * What the benchmarks share about processes: which tools exist, running a
 * command on one core (with taskset, when there) under a raised fd limit,
 * waiting for a port, the CPU time a process used, and the load
 * generator's command line.
 *
 * @module
 */

import { RUN_FLAGS } from "../src/build.ts";

const root = new URL("..", import.meta.url).pathname;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whether `tool` is on the PATH. */
export function has(tool: string): boolean {
  return new Deno.Command("sh", {
    args: ["-c", `command -v ${tool}`],
    stdout: "null",
    stderr: "null",
  }).outputSync()
    .success;
}

/** The fd hard limit: a proxy needs two fds per held connection, so it caps the big hold. */
export const FD_LIMIT = Number(
  new TextDecoder().decode(
    new Deno.Command("sh", { args: ["-c", "ulimit -Hn"], stdout: "piped" }).outputSync().stdout,
  )
    .trim(),
) || 20000;

/** Whether processes can be pinned to a core. */
export const pinned = has("taskset");

/** argv run on a core (when taskset exists) with a raised fd limit. */
export function onCpu(cpu: number | null, argv: string[]): string[] {
  const quoted = argv.map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");
  const pin = pinned && cpu !== null ? `taskset -c ${cpu} ` : "";
  return ["sh", "-c", `ulimit -n ${FD_LIMIT}; exec ${pin}${quoted}`];
}

/** Resolves once something accepts on 127.0.0.1:`port`. */
export async function waitPort(port: number, timeoutMs = 15000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await sleep(10);
    }
  }
  throw new Error(`nothing listens on ${port}`);
}

/** Clock ticks per second in /proc/PID/stat (USER_HZ). */
export const TICKS_PER_S = 100;

/**
 * Measures the user and system CPU seconds a process uses between calls of
 * `take`, from `/proc/PID/stat`: unlike a rate, this leaves out the time a
 * virtual machine's host steals.
 */
export function cpuMeter(pid: number): { take(): { user: number; sys: number } } {
  const read = () => {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { user: Number(fields[11]) / TICKS_PER_S, sys: Number(fields[12]) / TICKS_PER_S };
  };
  let last = read();
  return {
    take() {
      const now = read();
      const used = { user: now.user - last.user, sys: now.sys - last.sys };
      last = now;
      return used;
    },
  };
}

/** `bal start -c config` as the released binary runs it (the release flags), on core `cpu`. */
export function balStartArgv(config: string, cpu: number | null): string[] {
  return onCpu(cpu, [
    Deno.execPath(),
    "run",
    ...RUN_FLAGS,
    `${root}src/main.ts`,
    "start",
    "-c",
    config,
  ]);
}

/** The load generator's command line for `workload` against `port`, on core `cpu`. */
export function loadArgv(
  workload: string,
  port: number,
  extra: string[],
  cpu: number | null = 0,
): string[] {
  return onCpu(cpu, [
    Deno.execPath(),
    "run",
    "--allow-net",
    `${root}bench/load.ts`,
    workload,
    "--port",
    String(port),
    ...extra,
  ]);
}
