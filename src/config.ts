/**
 * The config file: its schema, defaults, validation and the commented
 * default written on first start.
 *
 * Parsing and validation are pure (text in, frozen {@link Config} or
 * {@link ConfigError}s out); {@link loadConfig} is the only function here
 * that touches the file system. Field names are the YAML keys, so one name
 * means one setting in the file, the code, the logs and the docs.
 *
 * @module
 */
import { isMap, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument } from "yaml";
import { ConfigError } from "./errors.ts";

/** Log levels the config accepts, least severe first. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
/** A log level the config accepts. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Balancing methods bal implements. */
export const METHODS = ["round_robin"] as const;
/** A balancing method. */
export type Method = typeof METHODS[number];

/** One backend server. */
export interface Backend {
  /** IP literal (IPv6 without brackets) or hostname, as Deno.connect takes it. */
  readonly host: string;
  readonly port: number;
  /** `host:port` (`[v6]:port`): the backend's identity in logs and health state. */
  readonly address: string;
}

/** The integer knobs under `runtime:`. */
export interface IntSettings {
  readonly health_check_interval_ms: number;
  readonly health_check_timeout_ms: number;
  readonly health_check_fail_threshold: number;
  readonly health_check_success_threshold: number;
  readonly backend_connect_timeout_ms: number;
  readonly failover_backoff_initial_ms: number;
  readonly failover_backoff_max_ms: number;
  readonly backend_cooldown_ms: number;
  readonly protection_trigger_threshold: number;
  readonly protection_window_ms: number;
  readonly protection_stable_success_threshold: number;
  readonly shutdown_drain_timeout_ms: number;
  readonly max_concurrent_connections: number;
  readonly connection_idle_timeout_ms: number;
  readonly tcp_backlog: number;
}

/** What happens to a client beyond `max_concurrent_connections`. */
export const OVERLOAD_POLICIES = ["reject"] as const;
/** An overload policy. */
export type OverloadPolicy = typeof OVERLOAD_POLICIES[number];

/** Timing, threshold and limit knobs under `runtime:`. */
export interface RuntimeSettings extends IntSettings {
  readonly overload_policy: OverloadPolicy;
}

/** Data-plane threads: a count, or `auto` for one per CPU. */
export type Workers = number | "auto";

/** A validated, frozen config. */
export interface Config {
  readonly port: number;
  readonly bind_address: string;
  readonly method: Method;
  readonly log_level: LogLevel;
  readonly workers: Workers;
  readonly backends: readonly Backend[];
  readonly runtime: RuntimeSettings;
}

/** The result of checking a config text: a config, or every error found. */
export type ConfigCheck =
  | { ok: true; config: Config }
  | { ok: false; errors: ConfigError[] };

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
};

/** The default of every integer setting for a config with `backendCount` backends. */
export function runtimeDefaults(backendCount: number): IntSettings {
  const tier = backendCount <= 2 ? 0 : backendCount <= 5 ? 1 : 2;
  const entries = Object.entries(RUNTIME_RULES).map(([k, rule]) => [k, rule.tuned[tier]]);
  return Object.fromEntries(entries) as unknown as IntSettings;
}

/** Top-level defaults. */
export const DEFAULTS = {
  port: 9295,
  bind_address: "0.0.0.0",
  method: "round_robin",
  log_level: "info",
  workers: 1,
} as const;

/** Most data-plane threads a config may ask for. */
export const MAX_WORKERS = 64;

const TOP_KEYS = ["port", "bind_address", "method", "log_level", "workers", "backends", "runtime"];
/** Keys of configs written for older bal versions, read and ignored. */
const LEGACY_KEYS = ["mode"];
const BACKEND_KEYS = ["host", "port"];
const PORT_RULE = { default: DEFAULTS.port, min: 1, max: 65535 };

/** Files larger than this are refused before parsing: no config needs it. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

/**
 * Checks a config text and returns the frozen config or every error found,
 * each with the file, key path, line and column.
 */
export function checkConfig(text: string, file: string): ConfigCheck {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
  const errors: ConfigError[] = [];
  const at = (node: Node | null | undefined, keyPath: string, reason: string) => {
    const offset = node?.range?.[0];
    const pos = offset === undefined ? {} : lines.linePos(offset);
    errors.push(new ConfigError({ file, ...pos }, keyPath, reason));
  };

  for (const e of doc.errors) {
    const pos = lines.linePos(e.pos[0]);
    errors.push(new ConfigError({ file, ...pos }, "", `invalid YAML: ${yamlReason(e.message)}`));
  }
  if (errors.length > 0) return { ok: false, errors };

  const root = doc.contents;
  if (root === null || (isScalar(root) && root.value === null)) {
    at(root, "", "the file is empty; it needs at least a `backends:` list");
    return { ok: false, errors };
  }
  if (!isMap(root)) {
    at(root, "", `expected a mapping of settings, got ${describeNode(root)}`);
    return { ok: false, errors };
  }

  const fields = mapFields(root, "", TOP_KEYS, at);
  const port = intField(fields.get("port"), "port", PORT_RULE, at);
  const bind = fields.get("bind_address");
  const bindAddress = bind ? hostField(bind, "bind_address", at) : DEFAULTS.bind_address;
  const method = enumField(fields.get("method"), "method", METHODS, DEFAULTS.method, at);
  const logLevel = enumField(
    fields.get("log_level"),
    "log_level",
    LOG_LEVELS,
    DEFAULTS.log_level,
    at,
  );
  const workers = workersField(fields.get("workers"), at);
  const backends = backendsField(fields.get("backends"), root, at);
  const runtime = runtimeField(fields.get("runtime"), backends?.length ?? 0, at);

  if (errors.length > 0) return { ok: false, errors: errors.sort(byPosition) };
  return {
    ok: true,
    config: deepFreeze({
      port,
      bind_address: bindAddress!,
      method,
      log_level: logLevel,
      workers,
      backends: backends!,
      runtime,
    }),
  };
}

/** Parses and validates a config text, throwing the first {@link ConfigError}. */
export function parseConfig(text: string, file: string): Config {
  const result = checkConfig(text, file);
  if (!result.ok) throw result.errors[0];
  return result.config;
}

/** Reads a config file and checks it; a file that cannot be read is one error. */
export async function readConfig(file: string): Promise<ConfigCheck> {
  let text: string;
  try {
    const info = await Deno.stat(file);
    if (!info.isFile) return fileError(file, "is not a regular file");
    if (info.size > MAX_CONFIG_BYTES) {
      return fileError(file, `is ${info.size} bytes; a config may be at most ${MAX_CONFIG_BYTES}`);
    }
    text = await Deno.readTextFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      return fileError(
        file,
        "not found (give another with -c, or run `bal start` once to write the default)",
      );
    }
    if (err instanceof Deno.errors.PermissionDenied || err instanceof Deno.errors.NotCapable) {
      return fileError(file, "cannot be read: permission denied");
    }
    return fileError(file, `cannot be read: ${err instanceof Error ? err.message : err}`);
  }
  return checkConfig(text, file);
}

/** Reads and validates a config file, throwing the first {@link ConfigError}. */
export async function loadConfig(file: string): Promise<Config> {
  const result = await readConfig(file);
  if (!result.ok) throw result.errors[0];
  return result.config;
}

function byPosition(a: ConfigError, b: ConfigError): number {
  const { line: la = 0, col: ca = 0 } = a.location;
  const { line: lb = 0, col: cb = 0 } = b.location;
  return la - lb || ca - cb;
}

function fileError(file: string, reason: string): ConfigCheck {
  return { ok: false, errors: [new ConfigError({ file }, "", reason)] };
}

type Report = (node: Node | null | undefined, keyPath: string, reason: string) => void;

/** A present key: its key node (for "unknown key" positions) and value node. */
interface Field {
  key: Node;
  value: Node | null;
}

/** Collects a mapping's known keys; reports unknown and non-string keys. */
function mapFields(
  map: Node,
  prefix: string,
  known: readonly string[],
  at: Report,
): Map<string, Field> {
  const fields = new Map<string, Field>();
  if (!isMap(map)) return fields;
  for (const pair of map.items) {
    if (!isPair(pair)) continue;
    const keyNode = pair.key as Node;
    const name = isScalar(keyNode) ? String(keyNode.value) : undefined;
    const path = prefix ? `${prefix}.${name}` : String(name);
    if (name === undefined) {
      at(keyNode, prefix, "keys must be plain words");
    } else if (known.includes(name)) {
      fields.set(name, { key: keyNode, value: (pair.value as Node | null) ?? null });
    } else if (!(prefix === "" && LEGACY_KEYS.includes(name))) {
      at(keyNode, path, `unknown key${hint(name, prefix, known)}`);
    }
  }
  return fields;
}

/** A did-you-mean suffix for an unknown key. */
function hint(name: string, prefix: string, known: readonly string[]): string {
  if (prefix === "" && (name in RUNTIME_RULES || name === "overload_policy")) {
    return `; it belongs under \`runtime:\``;
  }
  if (prefix === "runtime" && TOP_KEYS.includes(name)) return "; it belongs at the top level";
  const close = closest(name, known);
  if (close) return `; did you mean "${close}"?`;
  return `; expected one of: ${known.join(", ")}`;
}

/** The known word closest to `word`, when it is close enough to be a typo. */
export function closest(word: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  const lower = word.toLowerCase();
  for (const candidate of known) {
    if (lower.startsWith(candidate) || candidate.startsWith(lower)) return candidate;
    const d = editDistance(lower, candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost);
    }
    prev = row;
  }
  return prev[b.length];
}

/** Bounds of an integer field, and its value when the key is absent. */
interface IntBounds {
  default: number;
  min: number;
  max: number;
}

function intField(field: Field | undefined, path: string, rule: IntBounds, at: Report): number {
  if (!field) return rule.default;
  const value = isScalar(field.value) ? field.value.value : undefined;
  if (
    typeof value === "number" && Number.isInteger(value) && value >= rule.min && value <= rule.max
  ) {
    return value;
  }
  at(
    field.value ?? field.key,
    path,
    `expected an integer from ${rule.min} to ${rule.max}, got ${describeNode(field.value)}`,
  );
  return rule.default;
}

function enumField<T extends string>(
  field: Field | undefined,
  path: string,
  allowed: readonly T[],
  fallback: T,
  at: Report,
): T {
  if (!field) return fallback;
  const value = isScalar(field.value) ? field.value.value : undefined;
  if (typeof value === "string" && (allowed as readonly string[]).includes(value)) {
    return value as T;
  }
  const close = typeof value === "string" ? closest(value, allowed) : undefined;
  const suggestion = close ? `; did you mean "${close}"?` : "";
  at(
    field.value ?? field.key,
    path,
    `expected one of ${allowed.map((a) => `"${a}"`).join(", ")}, got ${
      describeNode(field.value)
    }${suggestion}`,
  );
  return fallback;
}

function workersField(field: Field | undefined, at: Report): Workers {
  if (!field) return DEFAULTS.workers;
  const value = isScalar(field.value) ? field.value.value : undefined;
  if (value === "auto") return "auto";
  if (typeof value === "number" && Number.isInteger(value) && value >= 1 && value <= MAX_WORKERS) {
    return value;
  }
  at(
    field.value ?? field.key,
    "workers",
    `expected "auto" or an integer from 1 to ${MAX_WORKERS}, got ${describeNode(field.value)}`,
  );
  return DEFAULTS.workers;
}

/** The number of data-plane threads `workers` asks for on this machine. */
export function workerCount(workers: Workers): number {
  return workers === "auto"
    ? Math.min(MAX_WORKERS, Math.max(1, navigator.hardwareConcurrency))
    : workers;
}

/** Validates a host (IP literal or hostname) and returns it as Deno.connect takes it. */
function hostField(field: Field, path: string, at: Report): string | undefined {
  const value = isScalar(field.value) ? field.value.value : undefined;
  if (typeof value !== "string" || value.trim() === "") {
    at(
      field.value ?? field.key,
      path,
      `expected an IP address or hostname, got ${describeNode(field.value)}`,
    );
    return undefined;
  }
  const host = normalizeHost(value.trim());
  if (host === undefined) {
    at(field.value, path, `"${value}" is not an IP address or hostname`);
  }
  return host;
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const HOSTNAME =
  /^(?=.{1,253}\.?$)[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?(\.[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?)*\.?$/;

/**
 * Returns the canonical form of an IPv4, IPv6 (brackets optional) or
 * hostname, or undefined when it is none of them.
 */
export function normalizeHost(host: string): string | undefined {
  const v4 = IPV4.exec(host);
  if (v4) return v4.slice(1).every((o) => Number(o) <= 255) ? host : undefined;
  if (host.includes(":")) {
    const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
    try {
      return new URL(`http://[${bare}]/`).hostname.slice(1, -1);
    } catch {
      return undefined;
    }
  }
  return HOSTNAME.test(host) && !/^[\d.]+$/.test(host) ? host.toLowerCase() : undefined;
}

/** `host:port`, with brackets around IPv6 literals. */
export function formatAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function backendsField(field: Field | undefined, root: Node, at: Report): Backend[] | undefined {
  if (!field) {
    at(
      root,
      "backends",
      "missing; list at least one backend, e.g. `backends: [{host: 127.0.0.1, port: 9000}]`",
    );
    return undefined;
  }
  if (!isSeq(field.value) || field.value.items.length === 0) {
    at(
      field.value ?? field.key,
      "backends",
      `expected a non-empty list of backends, got ${describeNode(field.value)}`,
    );
    return undefined;
  }
  const backends: Backend[] = [];
  const seen = new Map<string, number>();
  field.value.items.forEach((item, i) => {
    const path = `backends[${i}]`;
    const backend = backendItem(item as Node, path, at);
    if (!backend) return;
    const first = seen.get(backend.address);
    if (first !== undefined) {
      at(item as Node, path, `duplicate backend ${backend.address} (also backends[${first}])`);
      return;
    }
    seen.set(backend.address, i);
    backends.push(backend);
  });
  return backends;
}

/** One backend: `{host, port}`, or the shorthand string `host:port`. */
function backendItem(item: Node, path: string, at: Report): Backend | undefined {
  if (isScalar(item) && typeof item.value === "string") {
    const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(item.value.trim());
    const host = m ? normalizeHost(m[1]) : undefined;
    const port = m ? Number(m[2]) : 0;
    if (!host || port < 1 || port > 65535) {
      at(
        item,
        path,
        `"${item.value}" is not a backend; write {host: HOST, port: PORT} or "HOST:PORT"`,
      );
      return undefined;
    }
    return { host, port, address: formatAddress(host, port) };
  }
  if (!isMap(item)) {
    at(item, path, `expected a mapping {host, port}, got ${describeNode(item)}`);
    return undefined;
  }
  const fields = mapFields(item, path, BACKEND_KEYS, at);
  const hostF = fields.get("host");
  const portF = fields.get("port");
  if (!hostF) at(item, `${path}.host`, "missing; expected an IP address or hostname");
  if (!portF) at(item, `${path}.port`, "missing; expected an integer from 1 to 65535");
  if (!hostF || !portF) return undefined;
  const host = hostField(hostF, `${path}.host`, at);
  const port = intField(portF, `${path}.port`, PORT_RULE, at);
  if (host === undefined) return undefined;
  return { host, port, address: formatAddress(host, port) };
}

function runtimeField(field: Field | undefined, backendCount: number, at: Report): RuntimeSettings {
  const ints: Record<keyof IntSettings, number> = { ...runtimeDefaults(backendCount) };
  const defaults: RuntimeSettings = { ...ints, overload_policy: "reject" };
  if (!field || (isScalar(field.value) && field.value.value === null) || field.value === null) {
    return defaults;
  }
  if (!isMap(field.value)) {
    at(field.value, "runtime", `expected a mapping of settings, got ${describeNode(field.value)}`);
    return defaults;
  }
  const keys = Object.keys(RUNTIME_RULES) as (keyof IntSettings)[];
  const fields = mapFields(field.value, "runtime", [...keys, "overload_policy"], at);
  for (const key of keys) {
    const rule = { ...RUNTIME_RULES[key], default: ints[key] };
    ints[key] = intField(fields.get(key), `runtime.${key}`, rule, at);
  }
  if (ints.failover_backoff_max_ms < ints.failover_backoff_initial_ms) {
    // Blame the key that was written: max when given, else the initial that outgrew its default.
    const { failover_backoff_initial_ms: initial, failover_backoff_max_ms: max } = ints;
    const [key, reason] = fields.has("failover_backoff_max_ms")
      ? ["failover_backoff_max_ms", `${max} is below failover_backoff_initial_ms (${initial})`]
      : ["failover_backoff_initial_ms", `${initial} is above failover_backoff_max_ms (${max})`];
    const node = fields.get(key);
    at(node?.value, `runtime.${key}`, `${reason}; the backoff grows from initial up to max`);
  }
  const policy = enumField(
    fields.get("overload_policy"),
    "runtime.overload_policy",
    OVERLOAD_POLICIES,
    "reject",
    at,
  );
  return { ...ints, overload_policy: policy };
}

/** How a value reads in an error message: `"abc"`, `42`, `a list`, `nothing`. */
function describeNode(node: Node | null | undefined): string {
  if (node === null || node === undefined) return "nothing";
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return node.items.length === 0 ? "an empty list" : "a list";
  if (isScalar(node)) {
    const v = node.value;
    if (v === null) return "nothing";
    if (typeof v === "string") return `the text ${JSON.stringify(v)}`;
    return String(v);
  }
  return "an unsupported value";
}

/** yaml's message without its own position suffix (we print ours). */
function yamlReason(message: string): string {
  // The parser recurses per nesting level and reports its own stack overflow.
  if (message.includes("call stack")) return "nested too deeply";
  return message.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object") {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost\.?)$/;
const ANY = /^(0\.0\.0\.0|::)$/;

/** Limits of the machine bal runs on that a config can exceed; unknown ones are left out. */
export interface HostLimits {
  /** `net.core.somaxconn`: Linux caps every listen backlog at it. */
  somaxconn?: number;
}

/**
 * Things a valid config allows but an operator likely did not mean: each
 * one line, naming the key. `bal check --strict` fails on them.
 */
export function configWarnings(config: Config, host: HostLimits = {}): string[] {
  const warnings: string[] = [];
  if (ANY.test(config.bind_address)) {
    warnings.push(
      `bind_address: ${config.bind_address} accepts connections on every interface; use 127.0.0.1 if only local clients should connect`,
    );
  }
  const r = config.runtime;
  const d = runtimeDefaults(config.backends.length);
  // The tuned defaults pair a short interval with a longer timeout on purpose
  // (a round waits for its slowest check, so checks never overlap); only a
  // pair the operator chose is worth a second look.
  const tunedPair = r.health_check_timeout_ms === d.health_check_timeout_ms &&
    r.health_check_interval_ms === d.health_check_interval_ms;
  if (r.health_check_timeout_ms >= r.health_check_interval_ms && !tunedPair) {
    warnings.push(
      `runtime.health_check_timeout_ms: ${r.health_check_timeout_ms} is not below health_check_interval_ms (${r.health_check_interval_ms}); a check that times out delays the next round, so a dead backend is found later than the interval suggests`,
    );
  }
  if (host.somaxconn !== undefined && r.tcp_backlog > host.somaxconn) {
    warnings.push(
      `runtime.tcp_backlog: ${r.tcp_backlog} is above net.core.somaxconn (${host.somaxconn}) on this machine; the kernel listens with ${host.somaxconn}`,
    );
  }
  const bind = config.bind_address;
  const isLocalhost = (h: string) => h.startsWith("localhost");
  config.backends.forEach((b, i) => {
    // The backend reaches bal's listener: the same address, or loopback when bal listens on it.
    const reachesBal = b.host === bind ||
      (LOOPBACK.test(b.host) &&
        (ANY.test(bind) || isLocalhost(bind) || (isLocalhost(b.host) && LOOPBACK.test(bind))));
    if (reachesBal && b.port === config.port) {
      warnings.push(
        `backends[${i}]: ${b.address} is bal's own listen address; connections to it would loop back into bal`,
      );
    }
  });
  return warnings;
}

/** What each runtime key does, in a few words, for the default config's comments. */
const RUNTIME_NOTES: { readonly [K in keyof RuntimeSettings]: string } = {
  health_check_interval_ms: "time between TCP health checks",
  health_check_timeout_ms: "a check not connected by then failed",
  health_check_fail_threshold: "consecutive failures that mark a backend down",
  health_check_success_threshold: "consecutive successes that mark it up",
  backend_connect_timeout_ms: "per connect on the data path; then the next backend",
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
  overload_policy: "reject: closed at once, counted, logged once a second",
};

/** The commented `runtime:` lines of the default config. */
function runtimeDefaultsText(): string {
  const lines = Object.entries(RUNTIME_RULES).map(([key, rule]) => {
    const [small, mid, large] = rule.tuned;
    const tuned = small === mid && mid === large ? "" : ` (3-5 backends: ${mid}, 6+: ${large})`;
    return [`#   ${key}: ${small}`, `${RUNTIME_NOTES[key as keyof IntSettings]}${tuned}`];
  });
  lines.push(["#   overload_policy: reject", RUNTIME_NOTES.overload_policy]);
  const width = Math.max(...lines.map(([code]) => code.length)) + 2;
  return lines.map(([code, note]) => `${code.padEnd(width)}# ${note}`).join("\n");
}

/** The commented config `bal start` writes when there is none. */
export const DEFAULT_CONFIG_TEXT =
  `# bal configuration. Check it with \`bal check\`, apply it with \`bal graceful\`.

# Port and address bal listens on. 0.0.0.0 accepts connections from any
# interface; use 127.0.0.1 to accept only local clients.
port: ${DEFAULTS.port}
bind_address: ${DEFAULTS.bind_address}

# How a backend is chosen for each new connection. round_robin takes the
# next healthy backend in turn.
method: ${DEFAULTS.method}

# debug | info | warn | error
log_level: ${DEFAULTS.log_level}

# Data-plane threads accepting on the port: a number, or auto for one per
# CPU. Takes effect at start (a reload keeps the running count).
workers: ${DEFAULTS.workers}

# The servers bal forwards to. host is an IP address or a hostname.
backends:
  - host: 127.0.0.1
    port: 9000
  - host: 127.0.0.1
    port: 9100

# Optional failure-handling and limit knobs. The values shown are the
# defaults with 1-2 backends; some grow with more backends (in brackets).
# A key you set overrides only itself; all apply on reload (tcp_backlog when
# bal next opens its listener).
# runtime:
${runtimeDefaultsText()}
`;
