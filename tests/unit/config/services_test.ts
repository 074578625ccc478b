/** The `services:` form of the config, and how the single-service form maps onto it. */
import assert from "node:assert/strict";
import { checkConfig, configWarnings, parseConfig } from "../../../src/config/mod.ts";

const F = "/etc/bal/s.yaml";

function errorsOf(text: string): string[] {
  const r = checkConfig(text, F);
  assert.equal(r.ok, false, `expected errors for:\n${text}`);
  return r.ok ? [] : r.errors.map((e) => e.message);
}

const TWO = `services:
  - name: api
    port: 8080
    method: least_connections
    backends:
      - {host: 10.0.0.1, port: 80, weight: 3}
      - {host: 10.0.0.2, port: 80, backup: true, max_connections: 50}
  - name: db
    bind_address: 127.0.0.1
    port: 5433
    backends: ["10.0.0.5:5432", "10.0.0.6:5432", "10.0.0.7:5432"]
    runtime:
      connection_idle_timeout_ms: 0
runtime:
  backend_connect_timeout_ms: 250
`;

Deno.test("config services: each service has its listener, method, backends and merged runtime", () => {
  const c = parseConfig(TWO, F);
  assert.equal(c.single, false);
  const [api, db] = c.services;
  assert.deepEqual([api.name, api.bind_address, api.port, api.method], [
    "api",
    "0.0.0.0",
    8080,
    "least_connections",
  ]);
  assert.deepEqual([db.name, db.bind_address, db.port, db.method], [
    "db",
    "127.0.0.1",
    5433,
    "round_robin",
  ]);
  assert.deepEqual(
    api.backends.map((b) => [b.id, b.weight, b.backup, b.max_connections]),
    [["api/10.0.0.1:80", 3, false, null], ["api/10.0.0.2:80", 1, true, 50]],
  );
  // Global keys apply to every service; a service's own keys override them one by one.
  assert.equal(api.runtime.backend_connect_timeout_ms, 250);
  assert.equal(db.runtime.backend_connect_timeout_ms, 250);
  assert.equal(api.runtime.connection_idle_timeout_ms, 120000);
  assert.equal(db.runtime.connection_idle_timeout_ms, 0);
  // Tuned defaults follow each service's own backend count (2 -> 500 ms, 3 -> 700 ms).
  assert.equal(api.runtime.health_check_interval_ms, 500);
  assert.equal(db.runtime.health_check_interval_ms, 700);
});

Deno.test("config services: the single-service form is one service named default, as before", () => {
  const c = parseConfig("port: 9000\nbackends: ['127.0.0.1:1']\nruntime: {tcp_backlog: 10}\n", F);
  assert.equal(c.single, true);
  assert.equal(c.services.length, 1);
  const [s] = c.services;
  assert.deepEqual([s.name, s.port, s.bind_address, s.method], [
    "default",
    9000,
    "0.0.0.0",
    "round_robin",
  ]);
  assert.equal(s.backends[0].id, "default/127.0.0.1:1");
  assert.deepEqual(s.runtime, c.runtime);
  assert.equal(s.runtime.tcp_backlog, 10);
});

Deno.test("config services: mixing the two forms says how to convert", () => {
  const errors = errorsOf(
    `port: 9295\nbackends: [a:1]\nservices:\n  - {name: x, port: 1, backends: [a:1]}\n`,
  );
  assert.equal(errors.length, 2);
  assert.match(
    errors[0],
    /:1:1: port: cannot stand beside `services:`; move port, bind_address, method and backends into an entry of services:/,
  );
  assert.match(errors[1], /:2:1: backends: cannot stand beside `services:`/);
});

Deno.test("config services: names are required, well-formed and unique; ports required", () => {
  assert.match(
    errorsOf("services:\n  - {port: 1, backends: [a:1]}\n")[0],
    /:2:5: services\[0\]\.name: missing; expected a name of a-z, 0-9, _ and -/,
  );
  assert.match(
    errorsOf("services:\n  - {name: Api!, port: 1, backends: [a:1]}\n")[0],
    /services\[0\]\.name: expected a name of a-z, 0-9, _ and - \(at most 32\), got the text "Api!"/,
  );
  assert.match(
    errorsOf("services:\n  - {name: a, backends: [a:1]}\n")[0],
    /services\[0\]\.port: missing; expected an integer from 1 to 65535/,
  );
  assert.deepEqual(
    errorsOf(
      "services:\n  - {name: a, port: 1, backends: [a:1]}\n  - {name: a, port: 2, backends: [a:1]}\n",
    ),
    [`${F}:3:12: services[1].name: duplicate service name "a" (also services[0] at 2:12)`],
  );
  assert.match(errorsOf("services: []\n")[0], /services: expected a non-empty list of services/);
});

Deno.test("config services: two services on the same address and port name both, with line:col", () => {
  const [error] = errorsOf(
    "services:\n  - {name: a, port: 80, bind_address: 127.0.0.1, backends: [x:1]}\n  - {name: b, port: 80, bind_address: 127.0.0.1, backends: [x:1]}\n",
  );
  assert.equal(
    error,
    `${F}:3:21: services[1].port: service "b" listens on 127.0.0.1:80, which collides with service "a" on 127.0.0.1:80 (services[0] at 2:21); give each service its own port or address`,
  );
  // A wildcard covers every address on its port; other ports or addresses are fine.
  assert.match(
    errorsOf(
      "services:\n  - {name: a, port: 80, backends: [x:1]}\n  - {name: b, port: 80, bind_address: 127.0.0.1, backends: [x:1]}\n",
    )[0],
    /collides with service "a" on 0\.0\.0\.0:80/,
  );
  const ok = checkConfig(
    "services:\n  - {name: a, port: 80, bind_address: 127.0.0.1, backends: [x:1]}\n  - {name: b, port: 80, bind_address: 127.0.0.2, backends: [x:1]}\n  - {name: c, port: 81, backends: [x:1]}\n",
    F,
  );
  assert.equal(ok.ok, true);
});

Deno.test("config services: backend weight, backup and max_connections are checked", () => {
  const one = (b: string) => errorsOf(`backends:\n  - ${b}\n`)[0];
  assert.match(
    one("{host: a, port: 1, weight: 257}"),
    /backends\[0\]\.weight: expected an integer from 0 to 256, got 257/,
  );
  assert.match(one("{host: a, port: 1, weight: -1}"), /weight: expected an integer from 0 to 256/);
  assert.match(
    one("{host: a, port: 1, backup: yes}"),
    /backends\[0\]\.backup: expected true or false, got the text "yes"/,
  );
  assert.match(
    one("{host: a, port: 1, max_connections: 0}"),
    /max_connections: expected an integer from 1 to 1000000, got 0/,
  );
  const c = parseConfig("backends:\n  - {host: a, port: 1, weight: 0}\n", F);
  assert.equal(c.services[0].backends[0].weight, 0);
});

Deno.test("config services: a service's runtime block is checked key by key, and misplaced keys say where they go", () => {
  assert.match(
    errorsOf("services:\n  - {name: a, port: 1, backends: [x:1], runtime: {tcp_backlog: 0}}\n")[0],
    /services\[0\]\.runtime\.tcp_backlog: expected an integer from 1 to 65535, got 0/,
  );
  assert.match(
    errorsOf("services:\n  - {name: a, port: 1, backends: [x:1], tcp_backlog: 5}\n")[0],
    /services\[0\]\.tcp_backlog: unknown key; it belongs under its `runtime:`/,
  );
  assert.match(
    errorsOf("services:\n  - {name: a, port: 1, backends: [x:1], runtime: {port: 5}}\n")[0],
    /services\[0\]\.runtime\.port: unknown key; it belongs in the service itself/,
  );
  // A backoff pair split over two layers is blamed on the layer that wrote the max.
  assert.match(
    errorsOf(
      "runtime: {failover_backoff_initial_ms: 900}\nservices:\n  - {name: a, port: 1, backends: [x:1], runtime: {failover_backoff_max_ms: 800}}\n",
    )[0],
    /services\[0\]\.runtime\.failover_backoff_max_ms: 800 is below failover_backoff_initial_ms \(900\)/,
  );
});

Deno.test("config services: a backend that is a service's own listener is an error at its line:col", () => {
  assert.deepEqual(
    errorsOf(
      "services:\n  - {name: a, port: 7001, bind_address: 127.0.0.1, backends: ['127.0.0.1:7002']}\n  - {name: b, port: 7002, bind_address: 0.0.0.0, backends: ['127.0.0.1:9']}\n",
    ),
    [
      `${F}:2:63: services[0].backends[0]: 127.0.0.1:7002 is service "b"'s listen address, so every client would loop back into bal without end; point it at the server behind bal`,
    ],
  );
  // Not certainly bal: another loopback address than the one it listens on, or another port.
  const c = parseConfig(
    "services:\n  - {name: a, port: 7001, bind_address: 127.0.0.1, backends: ['127.0.0.2:7001', '127.0.0.1:7003']}\n",
    F,
  );
  assert.equal(c.services[0].backends.length, 2);
});

const ROUTED = `services:
  - name: tls
    port: 443
    method: least_connections
    routes:
      - name: app
        sni: [App.Example.com, "*.app.example.com."]
        backends: ["10.0.0.1:443", "10.0.0.2:443"]
      - sni: [api.example.com]
        method: source_hash
        backends: [{host: 10.0.0.3, port: 443, weight: 2}]
      - name: rest
        backends: ["10.0.0.9:443"]
    default_route: rest
`;

Deno.test("config routes: names lowercased, methods inherited, backends tagged with their route", () => {
  const [tls] = parseConfig(ROUTED, F).services;
  assert.deepEqual(
    tls.routes.map((r) => [r.name, r.sni, r.method, r.backends.map((b) => b.address)]),
    [
      ["app", ["app.example.com", "*.app.example.com"], "least_connections", [
        "10.0.0.1:443",
        "10.0.0.2:443",
      ]],
      ["api.example.com", ["api.example.com"], "source_hash", ["10.0.0.3:443"]],
      ["rest", [], "least_connections", ["10.0.0.9:443"]],
    ],
  );
  assert.equal(tls.default_route, "rest");
  // Every route's backends are the service's: health, admin and status see one list.
  assert.deepEqual(tls.backends.map((b) => [b.id, b.route, b.weight]), [
    ["tls/10.0.0.1:443", "app", 1],
    ["tls/10.0.0.2:443", "app", 1],
    ["tls/10.0.0.3:443", "api.example.com", 2],
    ["tls/10.0.0.9:443", "rest", 1],
  ]);
  assert.equal(tls.runtime.tls_hello_timeout_ms, 5000);
  assert.deepEqual(configWarnings(parseConfig(ROUTED, F)), [], "every route reachable");
});

Deno.test("config routes: each mistake names its place", () => {
  const bad = (from: string, to: string) => errorsOf(ROUTED.replace(from, to));
  assert.deepEqual(bad("    default_route: rest", "    default_route: nope"), [
    `${F}:14:20: services[0].default_route: expected the name of one of the routes ("app", "api.example.com", "rest"), got the text "nope"`,
  ]);
  assert.deepEqual(bad("[api.example.com]", "[api..example.com]"), [
    `${F}:9:15: services[0].routes[1].sni[0]: "api..example.com" is not a DNS name (letters, digits, \`-\`, \`_\` and dots; labels of 1-63)`,
  ]);
  assert.deepEqual(bad("[api.example.com]", '["api.*.com"]'), [
    `${F}:9:15: services[0].routes[1].sni[0]: "api.*.com" is wrong: a wildcard is \`*.\` followed by a name (\`*.example.com\`), nothing else`,
  ]);
  assert.deepEqual(bad('["10.0.0.9:443"]', '["10.0.0.2:443"]'), [
    `${F}:13:20: services[0].routes[2].backends[0]: backend 10.0.0.2:443 is also in services[0].routes[0].backends[1]; a backend serves one route`,
  ]);
  assert.deepEqual(bad("      - name: rest\n", "      - \n"), [
    `${F}:13:9: services[0].routes[2].name: missing; a route without \`sni\` needs a name for default_route`,
    `${F}:14:20: services[0].default_route: expected the name of one of the routes ("app", "api.example.com"), got the text "rest"`,
  ]);
  assert.deepEqual(bad("    routes:", '    backends: ["10.0.0.1:1"]\n    routes:'), [
    `${F}:5:5: services[0].backends: cannot stand beside \`routes:\`; list each route's backends in it, and name the route other clients go to with default_route`,
  ]);
  assert.deepEqual(
    errorsOf('port: 1\nbackends: ["10.0.0.1:1"]\ndefault_route: x\n'),
    [
      `${F}:3:1: default_route: goes with \`routes:\`; without routes every client goes to backends`,
    ],
  );
});

Deno.test("config routes: check warns of a route that can never match, and of a name listed in vain", () => {
  const c = parseConfig(
    `bind_address: 127.0.0.1
port: 443
routes:
  - name: a
    sni: [a.test, "*.test"]
    backends: ["10.0.0.1:1"]
  - name: b
    sni: [a.test, b.test]
    backends: ["10.0.0.2:1"]
  - name: c
    sni: ["*.test"]
    backends: ["10.0.0.3:1"]
  - name: d
    backends: ["10.0.0.4:1"]
`,
    F,
  );
  assert.deepEqual(configWarnings(c), [
    'routes[1].sni: "a.test" is also in route "a", which comes first and gets it',
    'routes[2]: route "c" can never be chosen: every name it lists belongs to an earlier route (a)',
    'routes[3]: route "d" can never be chosen: it has no `sni` and is not the default_route',
  ]);
});
