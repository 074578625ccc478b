/**
 * bal's entry point: `deno task bal ...` from source, or the compiled binary.
 *
 * @module
 */
import { main } from "./cli/commands.ts";

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
