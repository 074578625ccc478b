/**
 * Bals that handed over to a newer one (`bal upgrade`) and still drain,
 * found by the control sockets they moved to (`bal.draining.PID.sock`).
 *
 * @module
 */
import { processStatus } from "./state_file.ts";

/**
 * The bals still draining after an upgrade, as their moved control sockets
 * say: pid and live connections. A socket whose process is gone is removed.
 */
export async function drainingBals(
  dir: string,
  ask: (path: string) => Promise<{ active: number } | null>,
): Promise<{ pid: number; active_connections: number }[]> {
  const found: { pid: number; active_connections: number }[] = [];
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) names.push(e.name);
  } catch {
    return found;
  }
  for (const name of names.sort()) {
    const pid = Number(/^bal\.draining\.(\d+)\.sock$/.exec(name)?.[1]);
    if (!pid) continue;
    const answer = await ask(`${dir}/${name}`);
    if (answer) found.push({ pid, active_connections: answer.active });
    else if ((await processStatus(pid)) !== "running") {
      await Deno.remove(`${dir}/${name}`).catch(() => {});
    }
  }
  return found;
}
