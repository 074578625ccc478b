/**
 * What the CLI's changes from code share (`bal backend add|remove`, `bal
 * service add|remove`): the `config_change` control command, and a line
 * that says what changed and where it was saved.
 *
 * @module
 */
import { command } from "../instance/control.ts";
import { statePaths } from "../instance/paths.ts";
import { out } from "./output.ts";

/** The uid this CLI runs as (Linux: from /proc, which needs no extra permission), or null. */
async function ownUid(): Promise<number | null> {
  const status = await Deno.readTextFile("/proc/self/status").catch(() => "");
  const m = /^Uid:\s+(\d+)/m.exec(status);
  return m ? Number(m[1]) : null;
}

/** Asks the running bal to make `edit`, saved into its config file; prints what changed. */
export async function runChange(edit: Record<string, unknown>, json: boolean): Promise<number> {
  const reply = await command(statePaths(), {
    cmd: "config_change",
    edit,
    uid: await ownUid(),
  });
  out(json ? JSON.stringify(reply) : `${reply.change}; saved in ${reply.saved}`);
  return 0;
}
