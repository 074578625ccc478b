/**
 * `deno task install:global [--root DIR]`: installs `bal` as a command for
 * users who already have Deno (`deno install -g`), with exactly the flags of
 * the `bal` task. Extra arguments go to `deno install` (e.g. `--root DIR`).
 *
 * @module
 */
import { RUN_FLAGS } from "../src/build.ts";

const root = new URL("..", import.meta.url).pathname;
const args = [
  "install",
  "--global",
  "--force",
  "--name",
  "bal",
  ...Deno.args,
  ...RUN_FLAGS,
  "--config",
  `${root}deno.json`,
  `${root}src/main.ts`,
];
const { code } = await new Deno.Command(Deno.execPath(), { args }).output();
Deno.exit(code);
