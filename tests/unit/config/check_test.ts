import assert from "node:assert/strict";
import {
  checkConfig,
  closest,
  configWarnings,
  DEFAULT_CONFIG_TEXT,
  DEFAULTS,
  MAX_CONFIG_BYTES,
  normalizeHost,
  parseConfig,
  readConfig,
  RUNTIME_RULES,
  workerCount,
} from "../../../src/config/mod.ts";
import { ConfigError } from "../../../src/errors.ts";

const F = "/etc/bal/c.yaml";
const ONE = "backends:\n  - {host: 127.0.0.1, port: 9000}\n";

/** The messages of every error in `text`, or fails when it is valid. */
function errorsOf(text: string): string[] {
  const r = checkConfig(text, F);
  assert.equal(r.ok, false, `expected errors for:\n${text}`);
  return r.ok ? [] : r.errors.map((e) => e.message);
}

function only(text: string): string {
  const errors = errorsOf(text);
  assert.equal(errors.length, 1, errors.join("\n"));
  return errors[0];
}

Deno.test("config: the default file parses to the documented defaults", () => {
  const c = parseConfig(DEFAULT_CONFIG_TEXT, F);
  assert.equal(c.services[0].port, 9295);
  assert.equal(c.services[0].bind_address, "0.0.0.0");
  assert.equal(c.services[0].method, "round_robin");
  assert.equal(c.log_level, "info");
  assert.equal(c.workers, 1);
  assert.deepEqual(c.services[0].backends.map((b) => b.address), [
    "127.0.0.1:9000",
    "127.0.0.1:9100",
  ]);
  assert.deepEqual(c.runtime, {
    health_check_interval_ms: 500,
    health_check_timeout_ms: 800,
    health_check_fail_threshold: 2,
    health_check_success_threshold: 1,
    backend_connect_timeout_ms: 800,
    max_failover_attempts: 3,
    failover_backoff_initial_ms: 200,
    failover_backoff_max_ms: 5000,
    backend_cooldown_ms: 500,
    protection_trigger_threshold: 10,
    protection_window_ms: 30000,
    protection_stable_success_threshold: 12,
    shutdown_drain_timeout_ms: 30000,
    max_concurrent_connections: 4000,
    connection_idle_timeout_ms: 120000,
    tcp_backlog: 4096,
    slow_start_ms: 0,
    proxy_header_timeout_ms: 3000,
    tls_hello_timeout_ms: 5000,
    dns_min_ttl_ms: 1000,
    dns_max_ttl_ms: 300000,
    max_connections_per_client: 0,
    connection_rate_per_client: 0,
    overload_policy: "reject",
  });
});

Deno.test("config: the default file's commented runtime block is every key at its default", () => {
  const lines = DEFAULT_CONFIG_TEXT.split("\n");
  const block = lines.slice(lines.indexOf("# runtime:"))
    .filter((l) => l.startsWith("# runtime:") || l.startsWith("#   "))
    .map((l) => l.slice(2))
    .join("\n");
  const c = parseConfig(`${ONE}${block}\n`, F);
  assert.deepEqual(c.runtime, parseConfig(ONE, F).runtime);
  assert.equal(Object.keys(c.runtime).length, Object.keys(RUNTIME_RULES).length + 1);
});

const backends = (n: number) =>
  `backends:\n${Array.from({ length: n }, (_, i) => `  - "10.0.0.${i + 1}:80"`).join("\n")}\n`;

Deno.test("config: runtime defaults are tuned by backend count (<= 2, 3-5, >= 6)", () => {
  const tuned = (n: number) => {
    const r = parseConfig(backends(n), F).runtime;
    return [
      r.health_check_interval_ms,
      r.health_check_timeout_ms,
      r.health_check_fail_threshold,
      r.health_check_success_threshold,
      r.backend_connect_timeout_ms,
      r.failover_backoff_initial_ms,
      r.failover_backoff_max_ms,
      r.backend_cooldown_ms,
      r.protection_trigger_threshold,
      r.protection_window_ms,
      r.protection_stable_success_threshold,
      r.max_concurrent_connections,
      r.connection_idle_timeout_ms,
    ];
  };
  const small = [500, 800, 2, 1, 800, 200, 5000, 500, 10, 30000, 12, 4000, 120000];
  const mid = [700, 1000, 2, 1, 1000, 300, 7000, 700, 12, 30000, 14, 8000, 120000];
  const large = [1000, 1200, 3, 2, 1200, 500, 10000, 1000, 14, 30000, 16, 12000, 120000];
  assert.deepEqual([1, 2, 3, 5, 6, 20].map(tuned), [small, small, mid, mid, large, large]);
});

Deno.test("config: a partial runtime map overrides only its keys; the rest keep the tuned defaults", () => {
  const c = parseConfig(`${backends(6)}runtime:\n  connection_idle_timeout_ms: 0\n`, F);
  assert.equal(c.runtime.connection_idle_timeout_ms, 0);
  assert.equal(c.runtime.max_concurrent_connections, 12000);
  assert.equal(c.runtime.health_check_fail_threshold, 3);
});

Deno.test("config: failover_backoff_max_ms must not be below the initial backoff", () => {
  assert.equal(
    only(`${ONE}runtime:\n  failover_backoff_max_ms: 100\n`),
    `${F}:4:28: runtime.failover_backoff_max_ms: 100 is below failover_backoff_initial_ms (200); the backoff grows from initial up to max`,
  );
  assert.match(
    only(`${ONE}runtime:\n  failover_backoff_initial_ms: 9000\n`),
    /4:32: runtime\.failover_backoff_initial_ms: 9000 is above failover_backoff_max_ms \(5000\)/,
  );
});

Deno.test("config: overload_policy is reject", () => {
  assert.equal(
    parseConfig(`${ONE}runtime:\n  overload_policy: reject\n`, F).runtime.overload_policy,
    "reject",
  );
  assert.equal(
    only(`${ONE}runtime:\n  overload_policy: queue\n`),
    `${F}:4:20: runtime.overload_policy: expected one of "reject", got the text "queue"`,
  );
  assert.match(
    only(`overload_policy: reject\n${ONE}`),
    /overload_policy: unknown key; it belongs under `runtime:`/,
  );
});

Deno.test("config: the tuned defaults raise no warning; a tcp_backlog above somaxconn does", () => {
  // The tuned defaults pair a 500 ms interval with an 800 ms timeout on purpose: no warning.
  const plain = parseConfig(`bind_address: 127.0.0.1\n${ONE}`, F);
  assert.deepEqual(configWarnings(plain), []);
  assert.deepEqual(configWarnings(plain, { somaxconn: 4096 }), []);
  const big = parseConfig(`bind_address: 127.0.0.1\n${ONE}runtime:\n  tcp_backlog: 8192\n`, F);
  assert.deepEqual(configWarnings(big), []);
  assert.deepEqual(configWarnings(big, { somaxconn: 4096 }), [
    "runtime.tcp_backlog: 8192 is above net.core.somaxconn (4096) on this machine; the kernel listens with 4096",
  ]);
});

Deno.test("config: only backends is required; everything else defaults", () => {
  const c = parseConfig(ONE, F);
  assert.equal(c.services[0].port, DEFAULTS.port);
  assert.equal(c.services[0].bind_address, DEFAULTS.bind_address);
  assert.equal(
    c.runtime.shutdown_drain_timeout_ms,
    RUNTIME_RULES.shutdown_drain_timeout_ms.tuned[0],
  );
});

Deno.test("config: a partial runtime map overrides only its keys", () => {
  const c = parseConfig(`${ONE}runtime:\n  health_check_interval_ms: 250\n`, F);
  assert.equal(c.runtime.health_check_interval_ms, 250);
  assert.equal(c.runtime.health_check_timeout_ms, 800);
});

Deno.test("config: an empty runtime key means no overrides", () => {
  assert.equal(parseConfig(`${ONE}runtime:\n`, F).runtime.backend_connect_timeout_ms, 800);
});

Deno.test("config: the result is frozen", () => {
  const c = parseConfig(ONE, F);
  assert.ok(
    Object.isFrozen(c) && Object.isFrozen(c.services[0].backends) &&
      Object.isFrozen(c.services[0].backends[0]),
  );
  assert.ok(Object.isFrozen(c.runtime));
});

Deno.test("config: port must be an integer from 1 to 65535", () => {
  assert.equal(
    only(`port: 0\n${ONE}`),
    `${F}:1:7: port: expected an integer from 1 to 65535, got 0`,
  );
  assert.equal(
    only(`port: 65536\n${ONE}`),
    `${F}:1:7: port: expected an integer from 1 to 65535, got 65536`,
  );
  assert.match(only(`port: "9295"\n${ONE}`), /port: expected an integer .* got the text "9295"/);
  assert.match(only(`port: 80.5\n${ONE}`), /port: .* got 80.5/);
  assert.match(only(`port:\n${ONE}`), /port: .* got nothing/);
  assert.match(only(`port: [1]\n${ONE}`), /port: .* got a list/);
  assert.equal(parseConfig(`port: 1\n${ONE}`, F).services[0].port, 1);
  assert.equal(parseConfig(`port: 65535\n${ONE}`, F).services[0].port, 65535);
});

Deno.test("config: bind_address accepts IPv4, IPv6 and hostnames", () => {
  assert.equal(
    parseConfig(`bind_address: 127.0.0.1\n${ONE}`, F).services[0].bind_address,
    "127.0.0.1",
  );
  assert.equal(parseConfig(`bind_address: "::1"\n${ONE}`, F).services[0].bind_address, "::1");
  assert.equal(parseConfig(`bind_address: "[::]"\n${ONE}`, F).services[0].bind_address, "::");
  assert.equal(
    parseConfig(`bind_address: LocalHost\n${ONE}`, F).services[0].bind_address,
    "localhost",
  );
  assert.equal(
    only(`bind_address: 300.1.1.1\n${ONE}`),
    `${F}:1:15: bind_address: "300.1.1.1" is not an IP address or hostname`,
  );
  assert.match(
    only(`bind_address: "a b"\n${ONE}`),
    /bind_address: "a b" is not an IP address or hostname/,
  );
  assert.match(
    only(`bind_address: 8080\n${ONE}`),
    /bind_address: expected an IP address or hostname, got 8080/,
  );
});

Deno.test("config: method and log_level take their listed values, with a hint", () => {
  assert.equal(
    only(`method: roundrobin\n${ONE}`),
    `${F}:1:9: method: expected one of "round_robin", "least_connections", "source_hash", "random_two", got the text "roundrobin"; did you mean "round_robin"?`,
  );
  assert.match(
    only(`log_level: warning\n${ONE}`),
    /log_level: expected one of "debug", "info", "warn", "error", got the text "warning"; did you mean "warn"\?/,
  );
  assert.match(
    only(`log_level: loud\n${ONE}`),
    /log_level: expected one of .* got the text "loud"$/,
  );
  for (const level of ["debug", "info", "warn", "error"]) {
    assert.equal(parseConfig(`log_level: ${level}\n${ONE}`, F).log_level, level);
  }
});

Deno.test("config: workers is auto or 1 to 64, default 1", () => {
  assert.equal(parseConfig(ONE, F).workers, 1);
  assert.equal(parseConfig(`workers: auto\n${ONE}`, F).workers, "auto");
  assert.equal(parseConfig(`workers: 4\n${ONE}`, F).workers, 4);
  assert.equal(
    only(`workers: 0\n${ONE}`),
    `${F}:1:10: workers: expected "auto" or an integer from 1 to 64, got 0`,
  );
  assert.match(only(`workers: many\n${ONE}`), /workers: expected "auto" .* got the text "many"/);
  assert.equal(workerCount("auto"), navigator.hardwareConcurrency);
  assert.equal(workerCount(3), 3);
});

Deno.test("config: backends is a required, non-empty list", () => {
  assert.equal(
    only("port: 80\n"),
    `${F}:1:1: backends: missing; list at least one backend, e.g. \`backends: [{host: 127.0.0.1, port: 9000}]\``,
  );
  assert.match(
    only("backends: []\n"),
    /backends: expected a non-empty list of backends, got an empty list/,
  );
  assert.match(
    only("backends: x\n"),
    /backends: expected a non-empty list of backends, got the text "x"/,
  );
});

Deno.test("config: each backend needs a valid host and port", () => {
  assert.match(only("backends:\n  - {port: 9000}\n"), /:2:5: backends\[0\]\.host: missing/);
  assert.match(only("backends:\n  - {host: a}\n"), /:2:5: backends\[0\]\.port: missing/);
  assert.match(
    only("backends:\n  - {host: a, port: 0}\n"),
    /backends\[0\]\.port: expected an integer from 1 to 65535, got 0/,
  );
  assert.match(
    only("backends:\n  - {host: 'no spaces', port: 1}\n"),
    /backends\[0\]\.host: "no spaces" is not/,
  );
  assert.match(
    only("backends:\n  - 42\n"),
    /backends\[0\]: expected a mapping \{host, port\}, got 42/,
  );
  assert.match(
    only("backends:\n  - {host: a, port: 1, wieght: 2}\n"),
    /backends\[0\]\.wieght: unknown key; did you mean "weight"\?/,
  );
  assert.deepEqual(errorsOf("backends:\n  - {hots: a, port: 1}\n"), [
    `${F}:2:5: backends[0].host: missing; expected an IP address or hostname`,
    `${F}:2:6: backends[0].hots: unknown key; did you mean "host"?`,
  ]);
});

Deno.test("config: backends may be IPv6 literals, hostnames or HOST:PORT strings", () => {
  const c = parseConfig(
    "backends:\n  - {host: '::1', port: 1}\n  - {host: '[fe80::1]', port: 2}\n  - {host: db.internal, port: 3}\n  - '10.0.0.1:4'\n  - '[::2]:5'\n",
    F,
  );
  assert.deepEqual(c.services[0].backends.map((b) => b.address), [
    "[::1]:1",
    "[fe80::1]:2",
    "db.internal:3",
    "10.0.0.1:4",
    "[::2]:5",
  ]);
  assert.equal(c.services[0].backends[0].host, "::1");
  assert.match(
    only("backends:\n  - 'nope'\n"),
    /backends\[0\]: "nope" is not a backend; write \{host: HOST, port: PORT\} or "HOST:PORT"/,
  );
});

Deno.test("config: duplicate backends are rejected, also when written differently", () => {
  assert.equal(
    only("backends:\n  - {host: 127.0.0.1, port: 9000}\n  - '127.0.0.1:9000'\n"),
    `${F}:3:5: backends[1]: duplicate backend 127.0.0.1:9000 (also backends[0])`,
  );
  assert.match(
    only("backends:\n  - {host: '::1', port: 1}\n  - {host: '0:0::1', port: 1}\n"),
    /duplicate backend \[::1\]:1/,
  );
  assert.match(
    only("backends:\n  - {host: Db, port: 1}\n  - {host: db, port: 1}\n"),
    /duplicate backend db:1/,
  );
});

Deno.test("config: every runtime key is range-checked", () => {
  for (const [key, rule] of Object.entries(RUNTIME_RULES)) {
    const over = only(`${ONE}runtime:\n  ${key}: ${rule.max + 1}\n`);
    assert.equal(
      over,
      `${F}:4:${
        key.length + 5
      }: runtime.${key}: expected an integer from ${rule.min} to ${rule.max}, got ${rule.max + 1}`,
    );
    if (rule.min > 0) {
      assert.match(
        only(`${ONE}runtime:\n  ${key}: ${rule.min - 1}\n`),
        new RegExp(`runtime\\.${key}: expected`),
      );
    }
    assert.match(only(`${ONE}runtime:\n  ${key}: fast\n`), /got the text "fast"/);
  }
  assert.match(only(`${ONE}runtime: 5\n`), /runtime: expected a mapping of settings, got 5/);
});

Deno.test("config: unknown keys are errors with a did-you-mean hint", () => {
  assert.equal(only(`poort: 80\n${ONE}`), `${F}:1:1: poort: unknown key; did you mean "port"?`);
  assert.match(
    only(`${ONE}runtime:\n  health_check_interval: 5\n`),
    /:4:3: runtime\.health_check_interval: unknown key; did you mean "health_check_interval_ms"\?/,
  );
  assert.match(
    only(`zzz: 1\n${ONE}`),
    /zzz: unknown key; expected one of: port, bind_address, method, backends, allow, deny, send_proxy, accept_proxy, proxy_trusted, health_check_send_proxy, routes, default_route, discovery, protocol, udp, bandwidth, mirror, tls, backend_tls, health_check, access_log, access_log_path, admin, log_level, workers, engine, resolver, runtime, services/,
  );
});

Deno.test("config: a runtime key at the top level says where it belongs", () => {
  assert.equal(
    only(`health_check_interval_ms: 5\n${ONE}`),
    `${F}:1:1: health_check_interval_ms: unknown key; it belongs under \`runtime:\``,
  );
  assert.match(
    only(`${ONE}runtime:\n  port: 5\n`),
    /runtime\.port: unknown key; it belongs at the top level/,
  );
});

Deno.test("config: the legacy key mode is accepted and ignored", () => {
  assert.equal(parseConfig(`mode: tcp\n${ONE}`, F).services[0].port, 9295);
});

Deno.test("config: YAML syntax errors carry line and column", () => {
  assert.equal(
    only(`${ONE}port: 1\nport: 2\n`),
    `${F}:4:1: invalid YAML: the same key twice in one mapping`,
  );
  assert.match(
    only("backends: [{host: a, port: 1}\n"),
    /^\/etc\/bal\/c\.yaml:\d+:\d+: invalid YAML: /,
  );
  assert.match(only("a: b: c\n"), /c\.yaml:1:\d+: invalid YAML/);
});

Deno.test("config: an empty file or a non-mapping is one clear error", () => {
  assert.equal(only(""), `${F}: the file is empty; it needs at least a \`backends:\` list`);
  assert.equal(
    only("# only a comment\n"),
    `${F}: the file is empty; it needs at least a \`backends:\` list`,
  );
  assert.equal(only("- 1\n"), `${F}:1:1: expected a mapping of settings, got a list`);
});

Deno.test("config: all errors are reported, in file order", () => {
  const errors = errorsOf("port: x\nmethod: y\nbackends: []\n");
  assert.deepEqual(errors.map((e) => e.split(": ")[1]), ["port", "method", "backends"]);
});

Deno.test("config: error messages are one line and carry their parts", () => {
  const r = checkConfig(`port: x\n${ONE}`, F);
  assert.ok(!r.ok);
  const e = r.errors[0];
  assert.ok(e instanceof ConfigError);
  assert.equal(e.keyPath, "port");
  assert.deepEqual(e.location, { file: F, line: 1, col: 7 });
  assert.ok(!e.message.includes("\n"));
});

Deno.test("config: readConfig reports a missing, unreadable or huge file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const missing = await readConfig(`${dir}/nope.yaml`);
    assert.ok(!missing.ok);
    assert.match(missing.errors[0].message, /nope\.yaml: not found \(give another with -c/);

    const asDir = await readConfig(dir);
    assert.ok(!asDir.ok);
    assert.match(asDir.errors[0].message, /is not a regular file/);

    await Deno.writeTextFile(`${dir}/big.yaml`, "#".repeat(MAX_CONFIG_BYTES + 1));
    const big = await readConfig(`${dir}/big.yaml`);
    assert.ok(!big.ok);
    assert.match(big.errors[0].message, /big\.yaml: is \d+ bytes; a config may be at most 1048576/);

    await Deno.writeTextFile(`${dir}/ok.yaml`, ONE);
    assert.ok((await readConfig(`${dir}/ok.yaml`)).ok);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config: host normalisation", () => {
  assert.equal(normalizeHost("[::1]"), "::1");
  assert.equal(normalizeHost("::ffff:1.2.3.4"), "::ffff:102:304");
  assert.equal(normalizeHost("1.2.3"), undefined);
  assert.equal(normalizeHost("Example.COM."), "example.com.");
  assert.equal(normalizeHost("-bad.com"), undefined);
  assert.equal(normalizeHost("[::1"), undefined);
});

Deno.test("config: did-you-mean picks close words only", () => {
  assert.equal(closest("bakends", ["backends", "port"]), "backends");
  assert.equal(closest("xyzzy", ["backends", "port"]), undefined);
});

Deno.test("config: admin.tokens are named, long, unique, and read or write", () => {
  const admin = (tokens: string) =>
    `admin:\n  listen: "0.0.0.0:9296"\n  token: "the-full-rights-token"\n  tokens:\n${tokens}${ONE}`;
  const ok = checkConfig(
    admin(
      `    - {name: ci, token: "ci-token-0123456789", role: write}\n    - {name: graf, token: "graf-token-012345678"}\n`,
    ),
    F,
  );
  assert.ok(ok.ok);
  assert.deepEqual(ok.config.admin.tokens, [
    { name: "ci", token: "ci-token-0123456789", role: "write" },
    { name: "graf", token: "graf-token-012345678", role: "read" },
  ]);
  assert.deepEqual(
    errorsOf(admin(
      `    - {name: a, token: "short"}\n    - {name: a, token: "the-full-rights-token"}\n    - {name: c, token: "c-token-0123456789", role: admin}\n    - {name: "x y", token: "x-token-0123456789"}\n`,
    )),
    [
      `${F}:5:24: admin.tokens[0].token: expected a secret of at least 16 characters`,
      `${F}:6:14: admin.tokens[1].name: the name a is used twice`,
      `${F}:6:24: admin.tokens[1].token: the same token as admin.token; each needs its own`,
      `${F}:7:52: admin.tokens[2].role: expected read or write, got "admin"`,
      `${F}:8:14: admin.tokens[3].name: expected a name of letters, digits and _.@- (logged with each change)`,
    ],
  );
});
