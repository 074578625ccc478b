/**
 * Admission: whether a new client may go on, before any backend is tried.
 * Its address against the allow/deny lists and the per-client limits
 * (`src/route/`), a PROXY header's source against `proxy_trusted`, and the
 * service's own `max_concurrent_connections`; every refusal counted by
 * cause, given its access line and said at most once a second. Then the
 * session's place among the plane's live ones, from {@link started} to
 * {@link ended}.
 *
 * @module
 */
import type { Service } from "../config/mod.ts";
import { aclAllows } from "../route/acl.ts";
import {
  checkClient,
  clientLeft,
  type ClientLimits,
  type ClientRefusal,
  type ClientTable,
  clientTable,
  countClient,
} from "../route/client_limits.ts";
import { logger } from "../log.ts";
import { clientArrived, forgetSession, isOwnDial } from "./self_loop.ts";
import type { ServiceCounters } from "../stats/counters.ts";
import {
  logAccess,
  type Peer,
  type Plane,
  type Refusal,
  serviceCounters,
  type SessionBase,
} from "./plane.ts";

const log = logger("proxy");

/**
 * A new client of `service`: counted, and refused when its address may not
 * connect (allow/deny, per-client limits; with `accept_proxy`, a source
 * outside `proxy_trusted`, the client's own address being checked once its
 * header is read, by {@link admitPeer}) or the service is at its
 * `max_concurrent_connections` (this plane's share). Returns the service's
 * counters when the client may go on, null when it was refused (the
 * caller closes it).
 */
export function admit<S extends SessionBase>(
  plane: Plane<S>,
  service: string,
  peer: Peer,
): ServiceCounters | null {
  const counters = serviceCounters(plane, service);
  counters.accepted++;
  const svc = plane.runtime.snapshot.services.get(service);
  if (svc && isOwnDial(plane.loops, peer)) return refuse(plane, svc, peer, "loop");
  if (svc?.accept_proxy && !trusted(svc, peer.hostname)) {
    return refuse(plane, svc, peer, "proxy_refused", "not in proxy_trusted");
  }
  if (svc && !svc.accept_proxy && !aclAllows(svc.acl, peer.hostname)) {
    return refuse(plane, svc, peer, "denied");
  }
  const max = svc?.runtime.max_concurrent_connections ?? 0;
  if (counters.active < Math.ceil(max / plane.options.planes)) {
    const refusal = svc && !svc.accept_proxy && clientRefusal(plane, svc, peer.hostname);
    return refusal ? refuse(plane, svc, peer, refusal) : counters;
  }
  // overload_policy reject: closed at once, counted, and said at most once a second.
  counters.rejected++;
  logAccess(plane, service, peer, { ended: "limit", started: Date.now() });
  const suppressed = plane.gates.overloaded();
  if (suppressed !== null) {
    log.warn("{service} is at max_concurrent_connections ({max}): new clients are closed", {
      event: "overload",
      service,
      max,
      active: counters.active,
      rejected: counters.rejected,
      suppressed,
    });
  }
  return null;
}

/** Why a client was refused before any backend was tried, beyond the service's own limit. */

const REFUSALS: Record<
  Refusal,
  { counter: keyof ServiceCounters; event: string; message: string }
> = {
  denied: {
    counter: "denied",
    event: "client_denied",
    message: "not allowed by the allow/deny lists",
  },
  client_limit: {
    counter: "client_limited",
    event: "client_limit",
    message: "at max_connections_per_client",
  },
  client_rate: {
    counter: "rate_limited",
    event: "client_rate",
    message: "over connection_rate_per_client",
  },
  proxy_refused: {
    counter: "proxy_refused",
    event: "proxy_refused",
    message: "PROXY protocol header refused",
  },
  no_route: {
    counter: "no_route",
    event: "no_route",
    message: "no route for its server name, and no default_route",
  },
  tls_handshake: {
    counter: "tls_handshake",
    event: "tls_handshake_failed",
    message: "TLS handshake failed",
  },
  loop: {
    counter: "looped",
    event: "self_loop",
    message:
      "it is bal's own connect to a backend, so that backend is bal itself; point it at the server behind bal",
  },
};

/**
 * A client refused for `why`: counted, and said at most once a second;
 * with `logLine` (the default) its access line too, else its session's
 * end writes it.
 */
export function refuse<S extends SessionBase>(
  plane: Plane<S>,
  service: Service,
  peer: Peer,
  why: Refusal,
  detail?: string,
  logLine = true,
): null {
  const { counter, event, message } = REFUSALS[why];
  serviceCounters(plane, service.name)[counter]++;
  if (logLine) logAccess(plane, service.name, peer, { ended: why, started: Date.now() });
  const suppressed = plane.gates.refused[why]();
  if (suppressed !== null) {
    log.warn(`{client} refused by {service}: ${message}${detail ? ` (${detail})` : ""}`, {
      event,
      service: service.name,
      client: peer.hostname,
      ...(detail ? { reason: detail } : {}),
      suppressed,
    });
  }
  return null;
}

/** Whether a PROXY header may be taken from `source`. */
function trusted(service: Service, source: string): boolean {
  return aclAllows({ allow: service.proxy_trusted, deny: [] }, source);
}

/**
 * A client whose PROXY header was refused (malformed, too long, not in
 * time): counted and said; the caller closes it as `proxy_refused`.
 */
export function proxyRefused<S extends SessionBase>(plane: Plane<S>, s: S, reason: string): void {
  const service = plane.runtime.snapshot.services.get(s.service);
  if (service) refuse(plane, service, s.peer, "proxy_refused", reason, false);
}

/**
 * Once a PROXY header gave the client's address (`s.peer`): the allow/deny
 * lists and per-client limits, as {@link admit} applies them to clients
 * without one. False when refused (counted and said; the caller closes the
 * session with `s.closing` set).
 */
export function admitPeer<S extends SessionBase>(plane: Plane<S>, s: S): boolean {
  const service = plane.runtime.snapshot.services.get(s.service);
  if (!service) return true;
  const refusal = aclAllows(service.acl, s.peer.hostname)
    ? clientRefusal(plane, service, s.peer.hostname)
    : "denied";
  if (refusal) {
    refuse(plane, service, s.peer, refusal, undefined, false);
    s.closing = refusal;
    return false;
  }
  countIfLimited(plane, service, s);
  return true;
}

/** Counts a session against its client's `max_connections_per_client`, when that is on. */
function countIfLimited<S extends SessionBase>(plane: Plane<S>, service: Service, s: S): void {
  if (service.runtime.max_connections_per_client <= 0) return;
  countClient(clientTableOf(plane, s.service), s.peer.hostname);
  s.clientCounted = true;
}

/** The client's limits in force for `service`. */
function limitsOf(service: Service): ClientLimits {
  return {
    maxConnections: service.runtime.max_connections_per_client,
    ratePerSecond: service.runtime.connection_rate_per_client,
  };
}

function clientTableOf<S extends SessionBase>(plane: Plane<S>, service: string): ClientTable {
  let table = plane.clients.get(service);
  if (!table) plane.clients.set(service, table = clientTable());
  return table;
}

/** Whether a client is over a per-client limit (a rate token is taken when it is not). */
function clientRefusal<S extends SessionBase>(
  plane: Plane<S>,
  service: Service,
  client: string,
): ClientRefusal | null {
  const { max_connections_per_client: max, connection_rate_per_client: rate } = service.runtime;
  if (max <= 0 && rate <= 0) return null;
  return checkClient(clientTableOf(plane, service.name), client, limitsOf(service), Date.now());
}

/** Takes a session in: it counts as active from now until {@link ended}. */
export function started<S extends SessionBase>(
  plane: Plane<S>,
  s: S,
  counters: ServiceCounters,
): void {
  plane.sessions.add(s);
  counters.active++;
  clientArrived(plane.loops, s, s.peer);
  const service = plane.runtime.snapshot.services.get(s.service);
  // With accept_proxy, the client's address is known once its header is read (admitPeer).
  if (service && !service.accept_proxy) countIfLimited(plane, service, s);
}

/** A session is over: forgotten, and a drain waiting for the last one is woken. */
export function ended<S extends SessionBase>(
  plane: Plane<S>,
  s: S,
  counters: ServiceCounters,
): void {
  if (!plane.sessions.delete(s)) return;
  counters.active--;
  forgetSession(plane.loops, s);
  if (s.clientCounted) clientLeft(clientTableOf(plane, s.service), s.peer.hostname);
  if (plane.sessions.size === 0) { for (const wake of plane.idleWaiters) wake(); }
}

/**
 * A client that was gone (reset, aborted) before the listener could hand
 * it over: counted as accepted, as it was by the kernel, with an access
 * line that says `reset`; nothing else is owed to it.
 */
export function acceptAborted<S extends SessionBase>(
  plane: Plane<S>,
  service: string,
  error: string,
): void {
  serviceCounters(plane, service).accepted++;
  logAccess(plane, service, { hostname: "unknown", port: 0 }, {
    ended: "reset",
    started: Date.now(),
  });
  log.debug("a client of {service} was gone before it was accepted: {error}", {
    event: "accept_aborted",
    service,
    error,
  });
}
