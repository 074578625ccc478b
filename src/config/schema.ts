/**
 * The shape of a validated config: services, their backends and settings.
 * Field names are the YAML keys, so one name means one setting in the file,
 * the code, the logs and the docs.
 *
 * @module
 */
import type { Acl, Cidr } from "../route/acl.ts";
import type { ProxyVersion } from "../route/proxy_protocol.ts";
import { LOG_LEVELS, type LogLevel } from "../log.ts";

export { LOG_LEVELS, type LogLevel };

/** Balancing methods bal implements (one module each under `src/balance/`). */
export const METHODS = ["round_robin", "least_connections", "source_hash", "random_two"] as const;
/** A balancing method. */
export type Method = typeof METHODS[number];

/** One backend server of one service. */
export interface Backend {
  /** IP literal (IPv6 without brackets) or hostname, as Deno.connect takes it. */
  readonly host: string;
  readonly port: number;
  /** `host:port` (`[v6]:port`): how logs and commands name it within its service. */
  readonly address: string;
  /** The service it belongs to. */
  readonly service: string;
  /**
   * `service/address`: the key of its health, admin state and counters, so
   * the same server in two services keeps two states.
   */
  readonly id: string;
  /** Share of new connections relative to its service's other backends; 0 takes none. */
  readonly weight: number;
  /** Used only while no other backend of its service can take a client. */
  readonly backup: boolean;
  /** New clients skip it at this many live connections (per data plane); null: no limit. */
  readonly max_connections: number | null;
  /** How its health is checked (its own `health_check:`, else its service's, else TCP). */
  readonly check: HealthCheck;
  /** The PROXY protocol header it is sent first (its own `send_proxy`, else its service's), or null. */
  readonly send_proxy: ProxyVersion | null;
  /** The PROXY header its health checks send first (`health_check_send_proxy`), or null. */
  readonly check_send_proxy: ProxyVersion | null;
  /** Its own bandwidth limit for what flows to and from it, or null. */
  readonly bandwidth: Bandwidth | null;
  /** TLS bal speaks to it (its own `backend_tls:`, else its service's), or null: plain TCP. */
  readonly tls: BackendTls | null;
  /** The route of its service it serves, or null when the service has no routes. */
  readonly route: string | null;
  /** Where it came from: the file, or discovery (a DNS name, SRV records, etcd). */
  readonly source: BackendSource;
  /** The DNS name, SRV name or etcd prefix it was discovered by; null when static. */
  readonly origin: string | null;
}

/** Where backends come from. */
export type BackendSource = "static" | "dns" | "srv" | "etcd";

/**
 * A backend entry whose addresses are found at run time: `dns: NAME:PORT`
 * (every A/AAAA address) or `srv: NAME` (SRV targets and ports). Its
 * settings are a {@link Backend} whose `host` is the name, the template of
 * every backend found.
 */
export interface Discovered {
  readonly kind: "dns" | "srv" | "etcd";
  /** The name asked for, lowercase, without a trailing dot; for etcd, the prefix. */
  readonly name: string;
  /** The port of every address (`dns`), or null (`srv`: each record has its own). */
  readonly port: number | null;
  /** Settings of the backends it yields. */
  readonly template: Backend;
  /** etcd: where and under which prefix the backends are keys. */
  readonly etcd?: EtcdSource;
  /** An answer with no backends empties the pool (`discovery.allow_empty`); else the last set stays. */
  readonly allow_empty: boolean;
}

/** A service's `discovery: {etcd: ...}`. */
export interface EtcdSource {
  /** Base URLs of etcd members (`http://127.0.0.1:2379`), tried in turn. */
  readonly endpoints: readonly string[];
  /** Every key under it is a backend. */
  readonly prefix: string;
}

/** A pool of a service chosen by the TLS server name (SNI) a client asks for. */
export interface Route {
  /** Unique within its service; defaults to its first `sni` pattern. */
  readonly name: string;
  /** Exact names and `*.suffix` wildcards, lowercase; empty for a route only reached as the default. */
  readonly sni: readonly string[];
  readonly method: Method;
  /** Its own backends (also in its service's `backends`, each with `route` set). */
  readonly backends: readonly Backend[];
}

/** Kinds of active health check: TCP ones, then UDP ones (`none`: the default for UDP, no probe). */
export const CHECK_TYPES = [
  "tcp",
  "send_expect",
  "http",
  "tls",
  "agent",
  "dns",
  "udp",
  "none",
] as const;
/** The check types a UDP service may use. */
export const UDP_CHECK_TYPES: readonly CheckType[] = ["dns", "udp", "none"];
/** A kind of active health check. */
export type CheckType = typeof CHECK_TYPES[number];

/** One step of a send/expect check; bytes are kept as hex so a config stays plain data. */
export type CheckStep =
  | { readonly kind: "send"; readonly hex: string; readonly label: string }
  | {
    readonly kind: "expect";
    /** How `value` is matched against the bytes received so far. */
    readonly match: "string" | "regex" | "hex";
    /** The bytes as hex for `string` and `hex`; the pattern for `regex`. */
    readonly value: string;
    readonly label: string;
  };

/** What an `http` check asks and accepts. */
export interface HttpCheck {
  readonly method: string;
  readonly path: string;
  /** The Host header; null: the backend's host. */
  readonly host: string | null;
  readonly headers: Readonly<Record<string, string>>;
  /** Accepted status codes as inclusive ranges. */
  readonly expect_status: readonly (readonly [number, number])[];
  /** A regex the body must match, or null. */
  readonly expect_body: string | null;
}

/** How a check speaks TLS. */
export interface TlsCheck {
  /** SNI and the name verified; null: the backend's host. */
  readonly server_name: string | null;
  /** Verify the certificate (off by default: backends often use private CAs). */
  readonly verify: boolean;
  /** CA bundle to verify against when `verify`; null: the system's. */
  readonly ca_file: string | null;
}

/** A backend's active health check, with its timing resolved. */
export interface HealthCheck {
  readonly type: CheckType;
  readonly interval_ms: number;
  readonly timeout_ms: number;
  readonly fail_threshold: number;
  readonly success_threshold: number;
  /** Port to check instead of the traffic port, or null. */
  readonly port: number | null;
  /** `send_expect`: the steps, in order. */
  readonly steps: readonly CheckStep[];
  /** `http`: the request and what to accept. */
  readonly http: HttpCheck | null;
  /** `tls`, or `http` with `tls: true`. */
  readonly tls: TlsCheck | null;
  /** `tls`: warn when the certificate expires within this many days. */
  readonly expiry_warning_days: number;
  /** `agent`: the port the agent answers on. */
  readonly agent_port: number | null;
  /** `dns`: the query and the answer code that means up. */
  readonly dns: DnsCheck | null;
  /** `udp`: one datagram out, and what the reply must match. */
  readonly udp: UdpCheck | null;
}

/** What a `dns` check asks. */
export interface DnsCheck {
  readonly name: string;
  readonly qtype: "A" | "AAAA" | "SRV";
  /** The response code that means up (0 NOERROR, 3 NXDOMAIN, ...). */
  readonly expect_rcode: number;
}

/** What a `udp` check sends, as hex, and what the reply must match. */
export interface UdpCheck {
  readonly send_hex: string;
  /** How the reply is matched: `value` is hex for `string` and `hex`, a pattern for `regex`; null: any reply. */
  readonly expect: { readonly match: "string" | "regex" | "hex"; readonly value: string } | null;
}

/** What a UDP service does with its datagrams (`udp:`). */
export interface UdpSettings {
  /** `session`: one flow per client address and port; `request`: one per datagram. */
  readonly mode: "session" | "request";
  /** `request` mode: replies that end a flow (0: none expected). */
  readonly responses: number;
  /** A flow with no datagram either way for this long ends. */
  readonly idle_timeout_ms: number;
  /** Larger datagrams are dropped and counted, never truncated. */
  readonly max_datagram_bytes: number;
}

/** The integer knobs under `runtime:`. */
export interface IntSettings {
  readonly health_check_interval_ms: number;
  readonly health_check_timeout_ms: number;
  readonly health_check_fail_threshold: number;
  readonly health_check_success_threshold: number;
  readonly backend_connect_timeout_ms: number;
  readonly max_failover_attempts: number;
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
  readonly slow_start_ms: number;
  readonly proxy_header_timeout_ms: number;
  readonly tls_hello_timeout_ms: number;
  readonly dns_min_ttl_ms: number;
  readonly dns_max_ttl_ms: number;
  readonly max_connections_per_client: number;
  readonly connection_rate_per_client: number;
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

/**
 * Which engine moves the bytes: `auto` is the first of uring, epoll and
 * deno that works here; `native` is epoll's old name.
 */
export const ENGINES = ["auto", "uring", "epoll", "native", "deno"] as const;
/** A value of `engine:`. */
export type EngineChoice = typeof ENGINES[number];

/** One listener and the backends it balances over. */
export interface Service {
  /** Unique, `[a-z0-9_-]{1,32}`; `default` for the single-service form. */
  readonly name: string;
  readonly bind_address: string;
  readonly port: number;
  readonly method: Method;
  readonly backends: readonly Backend[];
  /** The global `runtime:` with this service's own `runtime:` keys laid over it. */
  readonly runtime: RuntimeSettings;
  /** Write one access-log line per finished connection. */
  readonly access_log: boolean;
  /** Who may connect (`allow:`, `deny:`). */
  readonly acl: Acl;
  /** The PROXY protocol header its backends are sent, unless a backend says otherwise. */
  readonly send_proxy: ProxyVersion | null;
  /** Clients come through proxies that send a PROXY protocol header first. */
  readonly accept_proxy: boolean;
  /** The only sources a PROXY header is taken from (required with `accept_proxy`). */
  readonly proxy_trusted: readonly Cidr[];
  /**
   * SNI routes: each client's ClientHello is read and its server name picks
   * one. Empty: every client goes to `backends` by `method`.
   */
  readonly routes: readonly Route[];
  /** The route a client without a matching name goes to; null: such a client is closed. */
  readonly default_route: string | null;
  /** Backend entries resolved at run time (`dns:`, `srv:`), in file order. */
  readonly discovered: readonly Discovered[];
  /** What it carries: TCP streams, or UDP datagrams (`protocol: udp`). */
  readonly protocol: "tcp" | "udp";
  /** How UDP datagrams become flows; null for TCP. */
  readonly udp: UdpSettings | null;
  /** Bytes per second each way for its connections (`bandwidth:`), or null: no limit. */
  readonly bandwidth: Bandwidth | null;
  /** The shadow backend chosen clients' bytes are copied to (`mirror:`), or null. */
  readonly mirror: Mirror | null;
  /** TLS bal terminates for its clients (`tls:`), or null: bytes pass through untouched. */
  readonly tls: TlsTerminate | null;
}

/** A certificate and its key, as read from their files when the config was. */
export interface TlsCertificate {
  /** Absolute paths (relative ones are taken from the config file's directory). */
  readonly cert_file: string;
  readonly key_file: string;
  /** The files' PEM text. */
  readonly cert_pem: string;
  readonly key_pem: string;
}

/** TLS terminated at bal (`tls:` on a service): its backends receive plain bytes. */
export interface TlsTerminate {
  /** Chosen by the client's server name; the first when none matches. */
  readonly certificates: readonly TlsCertificate[];
  readonly min_version: "1.2" | "1.3";
  /** Protocols offered by ALPN, in order of preference; empty: no ALPN. */
  readonly alpn: readonly string[];
  /** CAs client certificates must be signed by (`client_ca_file`), or null: none asked for. */
  readonly client_ca: { readonly file: string; readonly pem: string } | null;
  /** With a client CA: must every client show a valid certificate, or may it show none. */
  readonly client_auth: "required" | "optional";
  readonly handshake_timeout_ms: number;
  /** Certificates per route name, for routes that have their own. */
  readonly route_certificates: Readonly<Record<string, readonly TlsCertificate[]>>;
}

/** TLS bal speaks to a backend (`backend_tls:`). */
export interface BackendTls {
  /** The name sent as SNI and verified; null: the backend's host when it is a name. */
  readonly server_name: string | null;
  /** CAs the backend's certificate is verified against, or null: the system's. */
  readonly ca: { readonly file: string; readonly pem: string } | null;
  readonly verify: boolean;
  /** A client certificate shown to the backend, or null. */
  readonly certificate: TlsCertificate | null;
}

/**
 * A bandwidth limit (`bandwidth:`): reads pause once a connection (or a
 * client's connections together) spent its budget; bursts up to one
 * second's budget pass.
 */
export interface Bandwidth {
  /** From clients to backends, bytes per second; 0: no limit. */
  readonly upload_bytes_per_s: number;
  /** From backends to clients, bytes per second; 0: no limit. */
  readonly download_bytes_per_s: number;
  /** `connection`: each has the budget; `client`: a client IP's live connections share one. */
  readonly per: "connection" | "client";
}

/** A shadow backend (`mirror:`) and how much of the traffic it gets. */
export interface Mirror {
  readonly host: string;
  readonly port: number;
  /** `host:port`, as messages name it. */
  readonly address: string;
  /** Share of client connections copied to it, 0-100. */
  readonly percent: number;
  /** The PROXY header it is sent before the client's bytes, or null. */
  readonly send_proxy: ProxyVersion | null;
  /** Bytes a mirrored connection may have waiting for the mirror before the copy is dropped. */
  readonly buffer_bytes: number;
}

/** The admin HTTP endpoint (metrics, status.json), off unless `admin.listen` is set. */
export interface AdminSettings {
  /** Where it listens, or null when off. */
  readonly listen: { readonly host: string; readonly port: number } | null;
  /** Bearer token every request must carry, or null (loopback only); it may read and write. */
  readonly token: string | null;
  /** Further tokens, each named (the name is logged with what it changed) and with its role. */
  readonly tokens: readonly AdminToken[];
  /** A request's line and headers must arrive within this, from its first byte (or the connect). */
  readonly header_timeout_ms: number;
  /** A keep-alive connection with no request (or a client not reading an answer) is closed after this. */
  readonly idle_timeout_ms: number;
  /** Clients connected at once; more are closed at once. */
  readonly max_connections: number;
}

/** What an admin token may do: `read` sees status, metrics and `GET /api/...`; `write` may change. */
export type TokenRole = "read" | "write";

/** One of `admin.tokens`. */
export interface AdminToken {
  readonly name: string;
  readonly token: string;
  readonly role: TokenRole;
}

/** A validated, frozen config. */
export interface Config {
  readonly admin: AdminSettings;
  /** Where access-log lines go (absolute); null: with the other log lines. */
  readonly access_log_path: string | null;
  readonly log_level: LogLevel;
  readonly workers: Workers;
  readonly engine: EngineChoice;
  /** The DNS server discovery asks (`resolver: HOST:PORT`); null: the system's. */
  readonly resolver: { readonly hostname: string; readonly port: number } | null;
  /** The global `runtime:` (tuned for all backends together): what no service overrides. */
  readonly runtime: RuntimeSettings;
  /** At least one; listeners never overlap. */
  readonly services: readonly Service[];
  /** Written in the single-service form (top-level `port` and `backends`). */
  readonly single: boolean;
}

/** Top-level defaults. */
export const DEFAULTS = {
  port: 9295,
  bind_address: "0.0.0.0",
  method: "round_robin",
  log_level: "info",
  workers: 1,
  engine: "auto",
  service: "default",
  weight: 1,
} as const;

/** Most data-plane threads a config may ask for. */
export const MAX_WORKERS = 64;
/** Largest backend weight (HAProxy's limit too). */
export const MAX_WEIGHT = 256;

/** The number of data-plane threads `workers` asks for on this machine. */
export function workerCount(workers: Workers): number {
  return workers === "auto"
    ? Math.min(MAX_WORKERS, Math.max(1, navigator.hardwareConcurrency))
    : workers;
}

/** What one balancer picks from: a service without routes, or one route of a service. */
export type Pool = Pick<Service | Route, "method" | "backends">;

/** The key of a pool's balancer: the service's name, or `service/route`. */
export function poolKey(service: Service, route: Route | null): string {
  return route ? `${service.name}/${route.name}` : service.name;
}

/** A service's pools with their keys: itself, or each of its routes. */
export function poolsOf(service: Service): [string, Pool][] {
  if (service.routes.length === 0) return [[service.name, service]];
  return service.routes.map((r) => [poolKey(service, r), r]);
}

/** Every backend of every service, in config order. */
export function allBackends(config: Config): Backend[] {
  return config.services.flatMap((s) => s.backends);
}

/** The longest `shutdown_drain_timeout_ms` of any service: how long a stop may wait. */
export function drainTimeout(config: Config): number {
  return Math.max(
    config.runtime.shutdown_drain_timeout_ms,
    ...config.services.map((s) => s.runtime.shutdown_drain_timeout_ms),
  );
}

/**
 * Health checks under way at most, over all services: each holds a
 * descriptor, and 16,000 backends checked at once ran the process out of
 * them. A round larger than this is spread out.
 */
export const MAX_CHECKS_IN_FLIGHT = 512;

/** Freezes an object graph, so a snapshot cannot change under a reader. */
export function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object") {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
