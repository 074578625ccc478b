/**
 * `bal doctor`: the installation diagnosed in one command.
 *
 * @module
 */
import { diagnose } from "../instance/diagnose.ts";
import { findInstance, readState } from "../instance/state_file.ts";
import { statePaths } from "../instance/paths.ts";
import { configPathOf, out } from "./output.ts";
import type { StatusOptions } from "./status.ts";

/** `bal doctor`. */
export async function doctorCommand(options: StatusOptions): Promise<number> {
  const paths = statePaths();
  // Without -c, the config of the running bal, which is the one that matters; after a
  // crash or a kill -9, the one the dead bal ran, as its state file says.
  const found = options.config ? null : await findInstance(paths);
  const last = found?.kind === "running"
    ? found.state?.config_path
    : found
    ? (await readState(paths))?.config_path
    : undefined;
  const diagnosis = await diagnose(paths, last ?? configPathOf(options.config, paths));
  const critical = diagnosis.checks.some((c) => c.level === "critical");
  if (options.json) {
    out(JSON.stringify(diagnosis));
    return critical ? 1 : 0;
  }
  const bad = diagnosis.checks.filter((c) => c.level !== "ok");
  if (options.brief) {
    out(
      bad.length
        ? bad.map((c) => `${c.level} ${c.name}: ${c.summary}`).join("; ")
        : "all checks ok",
    );
    return critical ? 1 : 0;
  }
  for (const c of diagnosis.checks) {
    out(`[${c.level}] ${c.name}: ${c.summary}`);
    if (options.verbose || c.level !== "ok") out(`       hint: ${c.hint}`);
  }
  const worst = bad.find((c) => c.level === "critical") ?? bad.find((c) => !c.expected);
  if (worst) {
    out(`what_happened: ${worst.name}: ${worst.summary}`);
    out(`why_likely: ${worst.why}`);
    out(`do_this_now: ${worst.hint}`);
  } else {
    out("all checks ok");
    out(diagnosis.pid === null ? "next: bal start -d" : "next: bal status shows it live");
  }
  return critical ? 1 : 0;
}
