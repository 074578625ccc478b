/**
 * `bal start -d`: starts bal again as a detached child (new session, no
 * terminal, cwd `/`) and returns only once that child is listening or has
 * failed, with its real error.
 *
 * The child reports through a one-off "ready file" rather than the state
 * file, so a failed start never overwrites the files of a bal that runs.
 *
 * @module
 */
import { selfCommand } from "../build.ts";
import { BalError } from "../errors.ts";
import { writeAtomic } from "./state_file.ts";
import type { StatePaths } from "./paths.ts";
import type { Upgraded } from "./running.ts";

/** What the daemon child reports once it is listening or has failed. */
export type ReadyReport =
  | { ok: true; pid: number; listening: Record<string, string>; upgraded?: Upgraded | null }
  | { ok: false; error: string };

/** How long the parent waits for the child to report, unless told otherwise. */
const READY_TIMEOUT_MS = 30_000;

/** The daemon as it started. */
export interface Started {
  pid: number;
  /** Every service's listen address, by name. */
  listening: Record<string, string>;
  /** After `bal upgrade`, what the hand-over did. */
  upgraded: Upgraded | null;
}

/** How to start the child: cold, or taking over from the running bal. */
export interface DaemonOptions {
  /** Take over from the running bal, giving up after this long. */
  upgradeTimeoutMs?: number;
  /**
   * Log to this command's standard error in `format`, as the foreground
   * bal being upgraded did (under systemd, the journal), not to bal.log.
   */
  foregroundLog?: "text" | "json";
}

/**
 * Spawns the daemon for `configPath` (absolute) and waits for its report.
 * Throws a BalError carrying the daemon's own message when it fails.
 */
export async function startDaemon(
  configPath: string,
  paths: StatePaths,
  options: DaemonOptions = {},
): Promise<Started> {
  const readyFile = `${paths.dir}/bal.ready.${Deno.pid}.json`;
  await Deno.remove(readyFile).catch(() => {});
  // Until the daemon holds its lock there is nothing else for `bal stop` to find.
  if (!options.upgradeTimeoutMs) await writeAtomic(paths.starting, `${Deno.pid}\n`);
  const extra = [
    ...(options.upgradeTimeoutMs ? ["--upgrade-timeout", String(options.upgradeTimeoutMs)] : []),
    ...(options.foregroundLog ? ["--stderr-log", options.foregroundLog] : []),
  ];
  const { cmd, args } = selfCommand([
    "start",
    "-c",
    configPath,
    "--daemon-child",
    readyFile,
    ...extra,
  ]);
  const child = new Deno.Command(cmd, {
    args,
    cwd: "/",
    env: { BAL_HOME: paths.dir },
    stdin: "null",
    stdout: "null",
    stderr: options.foregroundLog ? "inherit" : "null",
    detached: true,
  }).spawn();
  // An upgrade's child gives up on its own at its timeout; the margin lets it say why.
  const timeoutMs = options.upgradeTimeoutMs ? options.upgradeTimeoutMs + 5000 : READY_TIMEOUT_MS;

  const end: { status: Deno.CommandStatus | null } = { status: null };
  child.status.then((s) => (end.status = s));
  try {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      // Whether it had exited before the read: a child reports before it
      // exits, so only then does a missing report mean it never wrote one.
      const gone = end.status;
      const report = await readReport(readyFile);
      if (report?.ok) {
        return { pid: report.pid, listening: report.listening, upgraded: report.upgraded ?? null };
      }
      if (report) throw new BalError(report.error);
      if (gone) {
        throw new BalError(
          `the daemon exited with code ${gone.code} before it was ready; see ${paths.log}`,
        );
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    child.kill("SIGKILL");
    throw new BalError(
      `the daemon did not report ready within ${timeoutMs / 1000} s; see ${paths.log}`,
    );
  } finally {
    child.unref();
    await Deno.remove(readyFile).catch(() => {});
    const marker = await Deno.readTextFile(paths.starting).catch(() => "");
    if (Number(marker.trim()) === Deno.pid) await Deno.remove(paths.starting).catch(() => {});
  }
}

async function readReport(path: string): Promise<ReadyReport | null> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as ReadyReport;
  } catch {
    return null;
  }
}

/** Called in the daemon child: tells the waiting parent how the start went. */
export async function reportReady(readyFile: string, report: ReadyReport): Promise<void> {
  await writeAtomic(readyFile, JSON.stringify(report));
}
