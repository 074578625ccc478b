/** One immutable snapshot per reload (snapshot.ts): what a swap replaces and what outlives it. */
import assert from "node:assert/strict";
import { checkConfig } from "../../src/config/mod.ts";
import type { Config } from "../../src/config/schema.ts";
import { createRuntime, protectionOf, swapSnapshot } from "../../src/snapshot.ts";

function config(yaml: string): Config {
  const checked = checkConfig(yaml, "/etc/bal/s.yaml");
  assert.ok(checked.ok, checked.ok ? "" : checked.errors[0].message);
  return checked.config;
}

const A = "default/127.0.0.1:9001";
const B = "default/127.0.0.1:9002";

Deno.test("snapshot: a swap is a new generation; the old snapshot is left as it was", () => {
  const runtime = createRuntime(config(`backends: ["127.0.0.1:9001"]\n`), "/etc/bal/s.yaml");
  const first = runtime.snapshot;
  const second = swapSnapshot(runtime, config(`backends: ["127.0.0.1:9002"]\n`));
  assert.deepEqual([first.generation, second.generation], [1, 2]);
  assert.equal(runtime.snapshot, second);
  assert.ok(first.backends.has(A) && !first.backends.has(B));
  assert.ok(second.backends.has(B) && !second.backends.has(A));
  assert.equal(second.configPath, "/etc/bal/s.yaml");
});

Deno.test("snapshot: health and admin state survive a swap for backends that stay, and go with those that leave", () => {
  const runtime = createRuntime(
    config(`backends: ["127.0.0.1:9001", "127.0.0.1:9002"]\n`),
    "/etc/bal/s.yaml",
  );
  runtime.health.set(A, { ...runtime.health.get(A)!, healthy: false, last_error: "refused" });
  runtime.admin.set(A, { state: "draining", weight: 3 });
  runtime.admin.set(B, { state: "disabled", weight: null });
  swapSnapshot(runtime, config(`backends: ["127.0.0.1:9001", "127.0.0.1:9003"]\n`));
  assert.equal(runtime.health.get(A)?.last_error, "refused");
  assert.deepEqual(runtime.admin.get(A), { state: "draining", weight: 3 });
  assert.equal(runtime.health.has(B), false);
  assert.equal(runtime.admin.has(B), false);
  assert.equal(runtime.health.get("default/127.0.0.1:9003")?.healthy, true);
});

Deno.test("snapshot: a balancer lives on while its method stays, and is made anew when it changes", () => {
  const runtime = createRuntime(config(`backends: ["127.0.0.1:9001"]\n`), "/etc/bal/s.yaml");
  const before = runtime.balancers.get("default");
  swapSnapshot(runtime, config(`backends: ["127.0.0.1:9001", "127.0.0.1:9002"]\n`));
  assert.equal(runtime.balancers.get("default"), before, "round robin keeps its place");
  swapSnapshot(runtime, config(`method: least_connections\nbackends: ["127.0.0.1:9001"]\n`));
  assert.notEqual(runtime.balancers.get("default"), before);
  assert.equal(runtime.balancers.get("default")?.method, "least_connections");
});

Deno.test("snapshot: protection mode follows the services, off for one it does not know", () => {
  const runtime = createRuntime(config(`backends: ["127.0.0.1:9001"]\n`), "/etc/bal/s.yaml");
  assert.equal(protectionOf(runtime, "default").enabled, false);
  assert.equal(protectionOf(runtime, "nowhere").enabled, false);
  swapSnapshot(
    runtime,
    config(`services:\n  - {name: other, port: 9100, backends: ["127.0.0.1:9001"]}\n`),
  );
  assert.deepEqual([...runtime.protection.keys()], ["other"]);
});
