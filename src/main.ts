/**
 * bal's entry point: `deno task bal ...` from source, or the compiled binary.
 *
 * @module
 */
import { main } from "./cli/main.ts";

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
