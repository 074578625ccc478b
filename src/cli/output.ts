/**
 * How every command talks to the operator: results on stdout, problems as
 * `bal: <one line>` on stderr, and the config file a command works on.
 *
 * @module
 */
import { absolute, type StatePaths, statePaths } from "../instance/paths.ts";
export { plural } from "../text.ts";

/** A line of output. */
export const out = (line: string): void => console.log(line);

/** A line on stderr; messages that already name bal ("bal is not running") are not prefixed twice. */
export const err = (line: string): void =>
  console.error(line.startsWith("bal ") ? line : `bal: ${line}`);

/**
 * The config file a command uses: `-c FILE` made absolute, else the state
 * directory's `config.yaml` (only then is the state directory needed).
 */
export function configPathOf(option: string | undefined, paths?: StatePaths): string {
  return option ? absolute(option) : (paths ?? statePaths()).config;
}

/**
 * `head`, then where bal listens: on the same line for one service
 * (`…, listening on 0.0.0.0:9295`), a line per service for several.
 */
export function sayListening(head: string, listening: Record<string, string>): void {
  const services = Object.entries(listening);
  if (services.length === 1) return out(`${head}, listening on ${services[0][1]}`);
  out(`${head}, ${services.length} services:`);
  const width = Math.max(...services.map(([name]) => name.length));
  for (const [name, address] of services) out(`  ${name.padEnd(width)}  listening on ${address}`);
}
