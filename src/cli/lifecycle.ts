/**
 * `bal graceful` (reload) and `bal stop` on the running bal.
 *
 * @module
 */
import { findInstance } from "../instance.ts";
import { graceful, stop } from "../control.ts";
import { StateError } from "../errors.ts";
import { type StatePaths, statePaths } from "../paths.ts";
import { configPathOf, err, out } from "./output.ts";

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
  out(
    `reloaded: generation ${outcome.generation}, ${outcome.backends} backends, listening on ${outcome.listen}`,
  );
  return 0;
}

/** `bal stop`. */
export async function stopCommand(options: { config?: string }): Promise<number> {
  const paths = statePaths();
  await sameConfig(paths, options.config);
  const pid = await stop(paths);
  out(`bal stopped (pid ${pid})`);
  return 0;
}
