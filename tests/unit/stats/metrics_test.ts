/** The counters (stats/counters.ts) and their exposition (stats/metrics.ts), from plain data. */
import assert from "node:assert/strict";
import { checkConfig } from "../../../src/config/mod.ts";
import { createRuntime } from "../../../src/snapshot.ts";
import {
  backendTotal,
  CONNECT_BUCKETS,
  observeConnect,
  type PlaneStats,
  zeroCounters,
  zeroServiceCounters,
} from "../../../src/stats/counters.ts";
import { emptyLag, LAG_BUCKETS, recordLag, summarizeLag } from "../../../src/stats/loop_lag.ts";
import { METRICS, type MetricsInput, renderMetrics } from "../../../src/stats/metrics.ts";
import { zeroService, zeroTraffic } from "../../../src/stats/udp_counters.ts";

const ID = "default/127.0.0.1:9001";

/** A plane's stats with one backend's counters set from `backend` and the service's from `service`. */
function plane(
  id: number,
  backend: Partial<ReturnType<typeof zeroCounters>>,
  service: Partial<ReturnType<typeof zeroServiceCounters>> = {},
): PlaneStats {
  const s = { ...zeroServiceCounters(), ...service };
  return {
    id,
    ...s,
    services: { default: s },
    backends: { [ID]: { ...zeroCounters(), ...backend } },
  };
}

function input(planes: PlaneStats[]): MetricsInput {
  const checked = checkConfig(`backends: ["127.0.0.1:9001"]\n`, "m.yaml");
  assert.ok(checked.ok);
  const runtime = createRuntime(checked.config, "m.yaml");
  return {
    version: "0.0.0-test",
    engine: "epoll",
    engineFallback: "io_uring refused by the kernel",
    lag: emptyLag(),
    startedAt: 1_700_000_000_000,
    rssBytes: 1234,
    openFds: 10,
    snapshot: runtime.snapshot,
    health: runtime.health,
    admin: runtime.admin,
    protection: runtime.protection,
    planes,
    reloads: { ok: 2, failed: 1 },
    upgrades: 4,
    udp: {},
    certificates: [],
  };
}

Deno.test("counters: a connect's time lands in the first bucket whose bound it does not pass, else +Inf", () => {
  const c = zeroCounters();
  observeConnect(c, 0.001);
  observeConnect(c, 0.0011);
  observeConnect(c, 60);
  assert.equal(c.connect_buckets.length, CONNECT_BUCKETS.length + 1);
  assert.equal(c.connect_buckets[0], 1);
  assert.equal(c.connect_buckets[1], 1);
  assert.equal(c.connect_buckets.at(-1), 1);
  assert.ok(Math.abs(c.connect_seconds - 60.0021) < 1e-9);
});

Deno.test("counters: a backend's total sums every plane, buckets element by element", () => {
  const a = zeroCounters();
  observeConnect(a, 0.002);
  const b = zeroCounters();
  observeConnect(b, 0.002);
  observeConnect(b, 3);
  const total = backendTotal([
    plane(0, { ...a, served: 1, bytes_in: 10 }),
    plane(1, { ...b, served: 2, bytes_in: 5 }),
  ], ID);
  assert.deepEqual([total.served, total.bytes_in], [3, 15]);
  assert.equal(total.connect_buckets[1], 2);
  assert.equal(total.connect_buckets[CONNECT_BUCKETS.indexOf(5)], 1);
});

Deno.test("metrics: every metric has HELP and TYPE once, and samples sum the planes", () => {
  const text = renderMetrics(input([
    plane(0, { served: 3, refused: 1 }, { accepted: 4 }),
    plane(1, { served: 2 }, { accepted: 1 }),
  ]));
  for (const m of METRICS) {
    assert.equal(text.split(`# TYPE ${m.name} ${m.type}\n`).length, 2, m.name);
    assert.match(text, new RegExp(`^# HELP ${m.name} \\S`, "m"));
  }
  assert.match(
    text,
    /^bal_backend_connections_total\{service="default",backend="127.0.0.1:9001"\} 5$/m,
  );
  assert.match(text, /^bal_connections_accepted_total\{service="default"\} 5$/m);
  assert.match(text, /^bal_upgrades_total 4$/m);
  assert.match(
    text,
    /^bal_backend_connect_failures_total\{service="default",backend="127.0.0.1:9001",kind="refused"\} 1$/m,
  );
  assert.ok(text.endsWith("\n"));
});

Deno.test("metrics: the connect histogram is cumulative and ends in +Inf equal to its count", () => {
  const c = zeroCounters();
  observeConnect(c, 0.0005);
  observeConnect(c, 0.02);
  observeConnect(c, 100);
  const text = renderMetrics(input([plane(0, c)]));
  const bucket = (le: string) =>
    Number(
      text.match(
        new RegExp(
          `^bal_backend_connect_duration_seconds_bucket\\{[^}]*le="${le}"\\} (\\d+)$`,
          "m",
        ),
      )?.[1],
    );
  assert.deepEqual([bucket("0.001"), bucket("0.025"), bucket("5"), bucket("\\+Inf")], [1, 2, 2, 3]);
  assert.match(text, /^bal_backend_connect_duration_seconds_count\{[^}]*\} 3$/m);
});

Deno.test("metrics: label values are escaped as the exposition format says", () => {
  const i = input([]);
  i.version = 'a"b\\c\nd';
  assert.match(
    renderMetrics(i),
    /^bal_build_info\{version="a\\"b\\\\c\\nd",engine="epoll",engine_fallback="io_uring refused by the kernel"\} 1$/m,
  );
});

Deno.test("loop lag: samples land in the histogram's buckets, and status sees the latest minute's p50, p99 and most", () => {
  const lag = emptyLag();
  for (let i = 0; i < 98; i++) recordLag(lag, 0.5);
  recordLag(lag, 30);
  recordLag(lag, 2000);
  assert.equal(lag.buckets[0], 98);
  assert.equal(lag.buckets[LAG_BUCKETS.indexOf(0.05)], 1);
  assert.equal(lag.buckets.at(-1), 1, "over the last bound");
  assert.deepEqual(summarizeLag(lag), { p50: 0.5, p99: 30, max: 2000 });
  assert.deepEqual(summarizeLag(emptyLag()), { p50: 0, p99: 0, max: 0 });
  const i = input([]);
  recordLag(i.lag, 4);
  const text = renderMetrics(i);
  assert.match(text, /^bal_event_loop_lag_seconds_bucket\{le="0.005"\} 1$/m);
  assert.match(text, /^bal_event_loop_lag_seconds_count 1$/m);
});

Deno.test("metrics: a UDP service's datagrams, flows and drops, by direction and cause", () => {
  const checked = checkConfig(
    `services:\n  - {name: dns, protocol: udp, port: 53, backends: ["127.0.0.1:5353"]}\n`,
    "u.yaml",
  );
  assert.ok(checked.ok);
  const runtime = createRuntime(checked.config, "u.yaml");
  const counters = zeroService();
  Object.assign(counters, { datagrams_in: 7, datagrams_out: 6, flows_active: 1, flows_created: 7 });
  counters.drops.oversize = 2;
  counters.backends["dns/127.0.0.1:5353"] = { ...zeroTraffic(), flows_active: 1 };
  const text = renderMetrics({ ...input([]), snapshot: runtime.snapshot, udp: { dns: counters } });
  for (
    const line of [
      'bal_udp_datagrams_total{service="dns",direction="in"} 7',
      'bal_udp_datagrams_total{service="dns",direction="out"} 6',
      'bal_udp_flows_active{service="dns"} 1',
      'bal_udp_flows_total{service="dns"} 7',
      'bal_udp_dropped_total{service="dns",cause="oversize"} 2',
      'bal_udp_dropped_total{service="dns",cause="no_backend"} 0',
      'bal_udp_backend_flows_active{service="dns",backend="127.0.0.1:5353"} 1',
    ]
  ) assert.ok(text.includes(`\n${line}\n`), line);
});
