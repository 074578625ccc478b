import assert from "node:assert/strict";
import denoJson from "../../deno.json" with { type: "json" };
import { flagsOfTask, RUN_FLAGS, VERSION } from "../../src/build.ts";

Deno.test("build: the version is deno.json's", () => {
  assert.equal(VERSION, denoJson.version);
  assert.match(VERSION, /^\d+\.\d+\.\d+/);
});

Deno.test("build: run flags come from the bal task, and are not --allow-all", () => {
  assert.deepEqual(RUN_FLAGS, flagsOfTask(denoJson.tasks.bal.command));
  assert.ok(RUN_FLAGS.length > 0);
  assert.ok(!RUN_FLAGS.some((f) => f === "-A" || f === "--allow-all"));
  assert.ok(RUN_FLAGS.every((f) => f.startsWith("--")));
});

Deno.test("build: flagsOfTask rejects a task of another shape", () => {
  assert.deepEqual(flagsOfTask("deno run --allow-net src/main.ts"), ["--allow-net"]);
  assert.throws(
    () => flagsOfTask("deno test src/main.ts"),
    /must read "deno run <flags> src\/main.ts"/,
  );
});
