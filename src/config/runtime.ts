/**
 * The `runtime:` knobs: one table of bounds, tuned defaults and notes (it
 * also writes the default config's comments), and the reading of a
 * `runtime:` block, global or per service, into the keys it sets.
 *
 * @module
 */
import { isMap, type Node } from "./yaml.ts";
import {
  describeNode,
  enumField,
  type Field,
  intField,
  isEmpty,
  mapFields,
  type Misplaced,
  type Report,
} from "./fields.ts";
import { type IntSettings, OVERLOAD_POLICIES, type RuntimeSettings } from "./schema.ts";

/** Bounds and defaults of one integer setting. */
interface IntRule {
  min: number;
  max: number;
  /**
   * Defaults by backend count: <= 2, 3-5, >= 6 backends (bal v2's tuning:
   * more backends, more patience before declaring one dead).
   */
  tuned: readonly [number, number, number];
}

/** A day: timers beyond it are typos, and setTimeout overflows past 2^31 ms. */
const DAY_MS = 86_400_000;

const same = (n: number) => [n, n, n] as const;

/** Every integer `runtime:` key with its bounds and defaults. */
export const RUNTIME_RULES: { readonly [K in keyof IntSettings]: IntRule } = {
  health_check_interval_ms: { min: 100, max: DAY_MS, tuned: [500, 700, 1000] },
  health_check_timeout_ms: { min: 10, max: DAY_MS, tuned: [800, 1000, 1200] },
  health_check_fail_threshold: { min: 1, max: 1000, tuned: [2, 2, 3] },
  health_check_success_threshold: { min: 1, max: 1000, tuned: [1, 1, 2] },
  backend_connect_timeout_ms: { min: 10, max: DAY_MS, tuned: [800, 1000, 1200] },
  // HAProxy's `retries` is 3 too: a client never waits on every dead backend of a large pool.
  max_failover_attempts: { min: 1, max: 1000, tuned: same(3) },
  failover_backoff_initial_ms: { min: 1, max: DAY_MS, tuned: [200, 300, 500] },
  failover_backoff_max_ms: { min: 1, max: DAY_MS, tuned: [5000, 7000, 10000] },
  backend_cooldown_ms: { min: 0, max: DAY_MS, tuned: [500, 700, 1000] },
  protection_trigger_threshold: { min: 1, max: 1_000_000, tuned: [10, 12, 14] },
  protection_window_ms: { min: 100, max: DAY_MS, tuned: same(30000) },
  protection_stable_success_threshold: { min: 1, max: 1_000_000, tuned: [12, 14, 16] },
  shutdown_drain_timeout_ms: { min: 0, max: DAY_MS, tuned: same(30000) },
  max_concurrent_connections: { min: 1, max: 1_000_000, tuned: [4000, 8000, 12000] },
  // 0 turns the idle timeout off.
  connection_idle_timeout_ms: { min: 0, max: DAY_MS, tuned: same(120000) },
  // Linux caps it at net.core.somaxconn (4096 by default since 5.4).
  tcp_backlog: { min: 1, max: 65535, tuned: same(4096) },
  // 0 turns slow start off: a backend that comes back up gets its full share at once.
  slow_start_ms: { min: 0, max: DAY_MS, tuned: same(0) },
  // With accept_proxy: a client whose header is not complete by then is closed.
  proxy_header_timeout_ms: { min: 1, max: DAY_MS, tuned: same(3000) },
  // With routes: a client without a complete ClientHello by then goes to the default route.
  tls_hello_timeout_ms: { min: 1, max: DAY_MS, tuned: same(5000) },
  // Discovery re-resolves a name when its records' TTL runs out, kept within these bounds.
  dns_min_ttl_ms: { min: 100, max: DAY_MS, tuned: same(1000) },
  dns_max_ttl_ms: { min: 100, max: DAY_MS, tuned: same(300000) },
  // 0 turns each per-client limit off.
  max_connections_per_client: { min: 0, max: 1_000_000, tuned: same(0) },
  connection_rate_per_client: { min: 0, max: 1_000_000, tuned: same(0) },
};

/** Every key a `runtime:` block may hold. */
export const RUNTIME_KEYS: readonly string[] = [...Object.keys(RUNTIME_RULES), "overload_policy"];

/** The default of every setting for `backendCount` backends. */
export function runtimeDefaults(backendCount: number): RuntimeSettings {
  const tier = backendCount <= 2 ? 0 : backendCount <= 5 ? 1 : 2;
  const entries = Object.entries(RUNTIME_RULES).map(([k, rule]) => [k, rule.tuned[tier]]);
  return { ...Object.fromEntries(entries) as unknown as IntSettings, overload_policy: "reject" };
}

/** The keys one `runtime:` block sets, with their nodes for error positions. */
export interface RuntimeLayer {
  values: Partial<Record<keyof RuntimeSettings, number | string>>;
  nodes: Map<string, Node | null>;
  /** Key path prefix, e.g. `runtime` or `services[1].runtime`. */
  path: string;
}

/** Reads a `runtime:` block at `path`: only the keys it sets, each validated. */
export function runtimeLayer(
  field: Field | undefined,
  path: string,
  at: Report,
  misplaced?: Misplaced,
): RuntimeLayer {
  const layer: RuntimeLayer = { values: {}, nodes: new Map(), path };
  if (isEmpty(field)) return layer;
  if (!isMap(field!.value)) {
    at(field!.value, path, `expected a mapping of settings, got ${describeNode(field!.value)}`);
    return layer;
  }
  const fields = mapFields(field!.value, path, RUNTIME_KEYS, at, { misplaced });
  for (const [key, f] of fields) {
    layer.nodes.set(key, f.value);
    if (key === "overload_policy") {
      layer.values.overload_policy = enumField(
        f,
        `${path}.${key}`,
        OVERLOAD_POLICIES,
        "reject",
        at,
      );
      continue;
    }
    const rule = RUNTIME_RULES[key as keyof IntSettings];
    const value = intField(f, `${path}.${key}`, { ...rule, default: NaN }, at);
    if (!Number.isNaN(value)) layer.values[key as keyof IntSettings] = value;
  }
  return layer;
}

/**
 * The settings in force: the tuned defaults for `backendCount` backends with
 * each layer's keys laid over them in turn (global, then the service's).
 * Reports a backoff whose max is below its initial, blaming the key the
 * operator wrote last.
 */
export function mergeRuntime(
  backendCount: number,
  layers: readonly RuntimeLayer[],
  at: Report,
): RuntimeSettings {
  const merged = { ...runtimeDefaults(backendCount) } as Record<string, number | string>;
  for (const layer of layers) Object.assign(merged, layer.values);
  const settings = merged as unknown as RuntimeSettings;
  const { failover_backoff_initial_ms: initial, failover_backoff_max_ms: max } = settings;
  if (max < initial) {
    const setter = (key: string) => [...layers].reverse().find((l) => l.nodes.has(key));
    const maxLayer = setter("failover_backoff_max_ms");
    const [layer, key, reason] = maxLayer
      ? [
        maxLayer,
        "failover_backoff_max_ms",
        `${max} is below failover_backoff_initial_ms (${initial})`,
      ]
      : [
        setter("failover_backoff_initial_ms"),
        "failover_backoff_initial_ms",
        `${initial} is above failover_backoff_max_ms (${max})`,
      ];
    at(
      layer?.nodes.get(key),
      `${layer?.path ?? "runtime"}.${key}`,
      `${reason}; the backoff grows from initial up to max`,
    );
  }
  return settings;
}

/** What each runtime key does, in a few words, for the default config's comments. */
export const RUNTIME_NOTES: { readonly [K in keyof RuntimeSettings]: string } = {
  health_check_interval_ms: "time between TCP health checks",
  health_check_timeout_ms: "a check not connected by then failed",
  health_check_fail_threshold: "consecutive failures that mark a backend down",
  health_check_success_threshold: "consecutive successes that mark it up",
  backend_connect_timeout_ms: "per connect on the data path; then the next backend",
  max_failover_attempts: "backends one client tries at most, the first included",
  failover_backoff_initial_ms: "first cooldown after a failed connect, doubling per failure",
  failover_backoff_max_ms: "the cooldown stops doubling here",
  backend_cooldown_ms: "shortest cooldown; a passing health check ends it",
  protection_trigger_threshold:
    "failed connects (timeout/refused) in the window that turn protection on",
  protection_window_ms: "the window those failures are counted in",
  protection_stable_success_threshold: "consecutive successes that turn protection off",
  shutdown_drain_timeout_ms: "how long stop waits for live connections",
  max_concurrent_connections: "beyond it a new client is closed at once",
  connection_idle_timeout_ms: "no byte either way for this long: closed; 0 = never",
  tcp_backlog:
    "clients waiting to be accepted; the kernel caps it at net.core.somaxconn. Set when the listener opens",
  slow_start_ms: "a backend back up ramps from 10 % to its full weight over this long; 0 = at once",
  proxy_header_timeout_ms:
    "with accept_proxy, a client whose PROXY header is not complete by then is closed",
  tls_hello_timeout_ms:
    "with routes, a client whose TLS ClientHello is not complete by then goes to default_route",
  dns_min_ttl_ms: "dns/srv backends: re-resolved no sooner than this, whatever the TTL says",
  dns_max_ttl_ms: "dns/srv backends: re-resolved at least this often, whatever the TTL says",
  max_connections_per_client:
    "connections one client address may hold open at once (per data plane); 0 = no limit",
  connection_rate_per_client:
    "new connections per second one client address may open (per data plane); 0 = no limit",
  overload_policy: "reject: closed at once, counted, logged once a second",
};
