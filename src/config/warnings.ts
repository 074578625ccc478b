/**
 * Things a valid config allows but an operator likely did not mean: each
 * one line, naming the key. `bal check --strict` fails on them.
 *
 * @module
 */
import { isLoopback } from "../net/address.ts";
import { runtimeDefaults } from "./runtime.ts";
import { type Config, MAX_CHECKS_IN_FLIGHT, type Service, workerCount } from "./schema.ts";
import { unreachableRoutes } from "../route/sni.ts";

/** Limits of the machine bal runs on that a config can exceed; unknown ones are left out. */
export interface HostLimits {
  /** `net.core.somaxconn`: Linux caps every listen backlog at it. */
  somaxconn?: number;
  /** The hard `RLIMIT_NOFILE` (`ulimit -Hn`) a bal started from here inherits (Deno raises its soft limit to it). */
  nofile?: number;
}

/** Descriptors bal holds whatever its load: the runtime, logs, sockets of its own. */
const BASE_DESCRIPTORS = 64;

/**
 * The descriptors a config can need at once: two per connection up to
 * every service's `max_concurrent_connections`, a listener per service and
 * data plane, the health checks under way, the admin endpoint's clients.
 */
export function descriptorBudget(config: Config): {
  total: number;
  connections: number;
  checks: number;
} {
  const planes = workerCount(config.workers);
  const connections = config.services.reduce(
    (n, s) => n + 2 * s.runtime.max_concurrent_connections,
    0,
  );
  const backends = config.services.reduce((n, s) => n + s.backends.length + s.discovered.length, 0);
  const checks = Math.min(backends, MAX_CHECKS_IN_FLIGHT);
  const admin = config.admin.listen ? config.admin.max_connections + 1 : 0;
  const listeners = config.services.length * planes;
  return {
    total: BASE_DESCRIPTORS + connections + checks + admin + listeners,
    connections,
    checks,
  };
}

/**
 * Health checks a second past which one core is mostly checking: measured
 * on a 2-core VM, 20,000 refused connects a second took 62 % of a core and
 * 32,000 saturated it, so status answers and checks ran late.
 */
export const CHECK_RATE_MAX = 20_000;

/** A warning when the checks of every backend, each at its interval, need more than one core. */
function checkRateWarnings(config: Config): string[] {
  const perSecond = config.services.reduce(
    (n, s) => n + s.backends.reduce((m, b) => m + 1000 / b.check.interval_ms, 0),
    0,
  );
  if (perSecond <= CHECK_RATE_MAX) return [];
  return [
    `runtime.health_check_interval_ms: checking every backend at its interval takes ${
      Math.round(perSecond)
    } connects a second, beyond the ${CHECK_RATE_MAX} one core keeps up with; checks will run late and status will answer slowly: raise health_check_interval_ms`,
  ];
}

/** A warning when the config can need more descriptors than the process may open. */
function descriptorWarnings(config: Config, host: HostLimits): string[] {
  if (host.nofile === undefined) return [];
  const b = descriptorBudget(config);
  if (b.total <= host.nofile) return [];
  return [
    `runtime.max_concurrent_connections: at full load bal needs about ${b.total} file descriptors (${b.connections} for connections, ${b.checks} for health checks, the rest its own) but may open ${host.nofile} (ulimit -Hn); raise the limit (LimitNOFILE= under systemd) or lower max_concurrent_connections, else clients past it are refused for want of descriptors`,
  ];
}

/** Every warning of a config, services in order, then the admin endpoint's. */
export function configWarnings(config: Config, host: HostLimits = {}): string[] {
  const admin = config.admin.listen;
  const exposed = admin && !isLoopback(admin.host)
    ? [
      `admin.listen: ${admin.host} serves metrics and status to other machines; keep it on a private network (the token is sent in clear over HTTP)`,
    ]
    : [];
  return [
    ...servicesWarnings(config, host),
    ...exposed,
    ...descriptorWarnings(config, host),
    ...checkRateWarnings(config),
  ];
}

function servicesWarnings(config: Config, host: HostLimits): string[] {
  return config.services.flatMap((service, i) => {
    // The single-service form keeps the key paths it always had.
    const prefix = config.single ? "" : `services[${i}].`;
    return [
      ...serviceWarnings(service, prefix, host),
      ...clientWarnings(service, prefix),
      ...routeWarnings(service, prefix),
    ];
  });
}

/** SNI routes a client can never reach, and names a later route lists in vain. */
function routeWarnings(service: Service, prefix: string): string[] {
  const { routes, default_route } = service;
  const unreachable = new Map(unreachableRoutes(routes, default_route).map((u) => [u.route, u]));
  const owner = new Map<string, string>();
  return routes.flatMap((route, i) => {
    const where = `${prefix}routes[${i}]`;
    const never = unreachable.get(route.name);
    if (never) return [`${where}: route "${route.name}" can never be chosen: ${never.why}`];
    return route.sni.flatMap((pattern) => {
      const first = owner.get(pattern);
      if (first === undefined) owner.set(pattern, route.name);
      return first === undefined || first === route.name
        ? []
        : [`${where}.sni: "${pattern}" is also in route "${first}", which comes first and gets it`];
    });
  });
}

/** Who-may-connect settings that do nothing, or shut everyone out. */
function clientWarnings(service: Service, prefix: string): string[] {
  const warnings: string[] = [];
  if (service.acl.allow?.length === 0) {
    warnings.push(
      `${prefix}allow: an empty list refuses every client; remove it to let in everyone not denied`,
    );
  }
  if (service.proxy_trusted.length > 0 && !service.accept_proxy) {
    warnings.push(
      `${prefix}proxy_trusted: has no effect without accept_proxy: true (no PROXY header is read)`,
    );
  }
  return warnings;
}

function serviceWarnings(service: Service, prefix: string, host: HostLimits): string[] {
  const warnings: string[] = [...sameServer(service, prefix)];
  const r = service.runtime;
  // Tuned by every entry of the file, discovered ones counted once each (as check.ts does).
  const d = runtimeDefaults(service.backends.length + service.discovered.length);
  // The tuned defaults pair a short interval with a longer timeout on purpose
  // (a round waits for its slowest check, so checks never overlap); only a
  // pair the operator chose is worth a second look.
  const tunedPair = r.health_check_timeout_ms === d.health_check_timeout_ms &&
    r.health_check_interval_ms === d.health_check_interval_ms;
  if (r.health_check_timeout_ms >= r.health_check_interval_ms && !tunedPair) {
    warnings.push(
      `${prefix}runtime.health_check_timeout_ms: ${r.health_check_timeout_ms} is not below health_check_interval_ms (${r.health_check_interval_ms}); a check that times out delays the next round, so a dead backend is found later than the interval suggests`,
    );
  }
  if (host.somaxconn !== undefined && r.tcp_backlog > host.somaxconn) {
    warnings.push(
      `${prefix}runtime.tcp_backlog: ${r.tcp_backlog} is above net.core.somaxconn (${host.somaxconn}) on this machine; the kernel listens with ${host.somaxconn}`,
    );
  }
  return warnings;
}

/** Names of this machine that are the same server under another name. */
const LOCAL_NAMES: Record<string, string[]> = {
  localhost: ["127.0.0.1", "::1"],
  "localhost.": ["127.0.0.1", "::1"],
};

/** Backends written twice under two names of the same address (`localhost` and `127.0.0.1`). */
function sameServer(service: Service, prefix: string): string[] {
  const warnings: string[] = [];
  service.backends.forEach((b, i) => {
    const aliases = LOCAL_NAMES[b.host];
    if (!aliases) return;
    const j = service.backends.findIndex((o) => o.port === b.port && aliases.includes(o.host));
    if (j < 0) return;
    warnings.push(
      `${prefix}backends[${i}]: ${b.address} is the same server as backends[${j}] (${
        service.backends[j].address
      }): ${b.host} resolves to ${aliases.join(" and ")}; list it once`,
    );
  });
  return warnings;
}
