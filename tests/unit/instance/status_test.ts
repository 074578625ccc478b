/** `bal status` assembled from plain state (instance/status.ts): sums, overrides and timers. */
import assert from "node:assert/strict";
import { checkConfig } from "../../../src/config/mod.ts";
import { createRuntime, type Runtime } from "../../../src/snapshot.ts";
import { buildStatus, notRunning, type StatusInput } from "../../../src/instance/status_report.ts";
import { type PlaneStats, zeroCounters, zeroServiceCounters } from "../../../src/stats/counters.ts";

const A = "web/127.0.0.1:9001";
const NOW = 1_700_000_100_000;

function plane(id: number, accepted: number, served: number): PlaneStats {
  const s = { ...zeroServiceCounters(), accepted, active: 1 };
  return {
    id,
    ...s,
    services: { web: s },
    backends: { [A]: { ...zeroCounters(), served, active: 1, refused: id } },
  };
}

/** Status input whose tables the test may change. */
type Input = StatusInput & { health: Runtime["health"]; admin: Runtime["admin"] };

function input(yaml: string): Input {
  const checked = checkConfig(yaml, "/etc/bal/st.yaml");
  assert.ok(checked.ok, checked.ok ? "" : checked.errors[0].message);
  const runtime = createRuntime(checked.config, "/etc/bal/st.yaml");
  return {
    pid: 4242,
    startedAt: NOW - 90_500,
    now: NOW,
    snapshot: runtime.snapshot,
    health: runtime.health,
    admin: runtime.admin,
    protection: runtime.protection,
    planes: [plane(0, 3, 2), plane(1, 4, 1)],
    reloads: 1,
    lastReload: null,
    upgrades: 3,
    retired: false,
    engine: "uring",
    engineFallback: null,
    loopLag: { p50: 0.2, p99: 3, max: 7.5 },
    discovery: [],
    udp: {},
    udpEngine: "native",
    engineOf: () => "uring",
    tlsOf: () => null,
  };
}

const ONE = `services:
  - {name: web, port: 9100, backends: ["127.0.0.1:9001", {host: 127.0.0.1, port: 9002, weight: 4}]}
  - {name: db, port: 9101, backends: ["127.0.0.1:9003"]}
`;

Deno.test("status: counters are summed over the planes, per service and per backend", () => {
  const status = buildStatus(input(ONE));
  const web = status.services!.find((s) => s.name === "web")!;
  assert.deepEqual([web.connections_accepted, web.active_connections], [7, 2]);
  const a = web.backends.find((b) => b.address === "127.0.0.1:9001")!;
  assert.deepEqual([a.connections_served, a.active_connections, a.counters.refused], [3, 2, 1]);
  assert.deepEqual([status.running, status.pid, status.uptime_s, status.workers], [
    true,
    4242,
    90,
    2,
  ]);
  assert.equal(status.port, 9100, "the first service is also at the top, as the one-service form");
});

Deno.test("status: an operator's weight and state override the config's; a cooling backend says for how long", () => {
  const i = input(ONE);
  i.admin.set("web/127.0.0.1:9002", { state: "draining", weight: 9 });
  i.health.set(A, { ...i.health.get(A)!, healthy: false, cooldown_until: NOW + 1500 });
  const web = buildStatus(i).services!.find((s) => s.name === "web")!;
  const [a, b] = web.backends;
  assert.deepEqual([b.weight, b.admin_state], [9, "draining"]);
  assert.deepEqual([a.reachable, a.cooldown_remaining_ms], [false, 1500]);
  assert.deepEqual([web.backend_total, web.backend_reachable], [2, 1]);
});

Deno.test("status: slow start says what is left of it, and nothing once it is over", () => {
  const i = input(ONE.replace("port: 9100,", "port: 9100, runtime: {slow_start_ms: 10000},"));
  i.health.set(A, { ...i.health.get(A)!, up_since: NOW - 4000 });
  const web = () => buildStatus(i).services!.find((s) => s.name === "web")!;
  assert.equal(web().backends[0].slow_start_remaining_ms, 6000);
  i.health.set(A, { ...i.health.get(A)!, up_since: NOW - 10000 });
  assert.equal(web().backends[0].slow_start_remaining_ms, null);
});

Deno.test("status: a bal that is not running says so, with the stale files it removed", () => {
  assert.deepEqual(notRunning(), {
    running: false,
    pid: null,
    protection_mode: { enabled: false, reason: null, since: null },
  });
  assert.deepEqual(notRunning(["/x/bal.pid"]).removed, ["/x/bal.pid"]);
});
