/**
 * The steps of one client's session that both engines take alike, in the
 * order they come: begun (a fresh session); a backend picked for it
 * ({@link pick}), dialed or failed ({@link dialed}, {@link dialFailed},
 * failover until {@link noBackend}); what the backend is sent first
 * ({@link backendHeader}) and the early bytes counted; the relay's end (a backend
 * that hung up on a waiting client reported, the access line). Each engine
 * supplies the mechanism around them (accept, connect, read and write,
 * close, timers) and keeps its own socket fields beside these; admission
 * (admission.ts) and inspection (inspect.ts) come before.
 *
 * @module
 */
import { type Backend, type Pool, poolKey, type Service } from "../config/schema.ts";
import { writeProxyHeader } from "../route/proxy_protocol.ts";
import { logger } from "../log.ts";
import { plural } from "../text.ts";
import { type BackendView, nextBackend } from "../balance/select.ts";
import { isClean } from "../health/state.ts";
import { protectionOf } from "../snapshot.ts";
import type { DialFailure } from "../net/dial.ts";
import { type BackendCounters, observeConnect } from "../stats/counters.ts";
import {
  countersOf,
  type Ending,
  logAccess,
  type Peer,
  type Plane,
  type SessionBase,
} from "./plane.ts";

const log = logger("proxy");

/** What every engine's session starts with: accepted now, nothing known of it yet. */
export function begun(service: string, peer: Peer, now: number): SessionBase {
  return {
    service,
    peer,
    backend: null,
    activity: { at: now },
    closing: null,
    started: now,
    connectMs: null,
    destination: null,
    early: null,
    route: null,
  };
}

/**
 * A backend took the client: what the client sent while it was inspected
 * (after a PROXY header, a ClientHello) is its bytes too, added to the
 * backend's `counters`. Returns how many.
 */
export function countEarly(s: SessionBase, counters: BackendCounters): number {
  const early = s.early?.length ?? 0;
  counters.bytes_in += early;
  return early;
}

/** How a relay ended, in both engines' words. */
export interface Relayed {
  /** Bytes from the client to the backend (early bytes included) and back. */
  bytesIn: number;
  bytesOut: number;
  /** A read or write failed (reset, broken pipe). */
  failed: boolean;
  /** The relay did not see both directions end (bal closed it, or it failed). */
  cut: boolean;
  /** Whose stream ended first: the client's (`a`) or the backend's (`b`). */
  firstEnd: "a" | "b" | null;
}

/**
 * A relayed session ended: a backend that ended its stream without a byte
 * for a client still waiting is reported as failing, and the access line
 * says how it ended.
 */
export function relayEnded<S extends SessionBase>(
  plane: Plane<S>,
  s: S,
  backend: Backend,
  r: Relayed,
): void {
  const firstEnd = r.firstEnd === "a" ? "client" : r.firstEnd === "b" ? "backend" : null;
  if (r.bytesOut === 0 && firstEnd === "backend" && !s.closing) hungUp(plane, backend, r.failed);
  logAccess(plane, s.service, s.peer, {
    ended: endingOf(s.closing, r.failed || r.cut, firstEnd),
    started: s.started,
    backend: backend.address,
    bytes_in: r.bytesIn,
    bytes_out: r.bytesOut,
    connect_ms: s.connectMs,
  });
}

/** How a relayed connection ended, from what the relay saw and why bal closed it (if it did). */
export function endingOf(
  closing: Ending | null,
  failed: boolean,
  firstEnd: "client" | "backend" | null,
): Ending {
  return closing ??
    (failed ? "reset" : firstEnd === "backend" ? "backend_closed" : "client_closed");
}

/**
 * A backend that reset or closed a client's connection before sending a
 * byte, while the client still waited: a passive failure, like a refused
 * connect (an accept-and-reset backend must not keep its share).
 */
export function hungUp<S extends SessionBase>(
  plane: Plane<S>,
  backend: Backend,
  reset: boolean,
): void {
  const error = `${reset ? "reset" : "closed"} the connection before sending anything`;
  countersOf(plane, backend.id).other++;
  plane.options.onResult(backend, {
    ok: false,
    at: Date.now(),
    source: "connect",
    kind: "other",
    error,
  });
  log.debug("{backend} {error}", {
    event: "backend_hung_up",
    service: backend.service,
    backend: backend.address,
    error,
  });
}

/** Views of a pool's backends for selection: health, admin state, live count. */
function views<S extends SessionBase>(
  plane: Plane<S>,
  backends: readonly Backend[],
): BackendView[] {
  const { health, admin } = plane.runtime;
  return backends.map((backend) => ({
    backend,
    health: health.get(backend.id),
    admin: admin.get(backend.id),
    active: countersOf(plane, backend.id).active,
  }));
}

/** Each service's routes by name with their balancers' keys (services are frozen, one object per snapshot): no search per client. */
const routePools = new WeakMap<Service, Map<string, { pool: Pool; key: string }>>();

function routesOf(service: Service): Map<string, { pool: Pool; key: string }> {
  let pools = routePools.get(service);
  if (!pools) {
    pools = new Map(service.routes.map((r) => [r.name, { pool: r, key: poolKey(service, r) }]));
    routePools.set(service, pools);
  }
  return pools;
}

/**
 * The next backend to dial for a client (of `route`, when its service has
 * routes), or null when the policy has none left or `tried` reached
 * `max_failover_attempts`. The backend counts the client as active from
 * now, so concurrent picks see it: the caller undoes that with
 * {@link dialFailed}, or when the relay ends.
 */
export function pick<S extends SessionBase>(
  plane: Plane<S>,
  service: Service,
  route: string | null,
  tried: Set<string>,
  client: string,
): Backend | null {
  const routed = route === null ? null : routesOf(service).get(route);
  // A reload may have removed the route the client was given.
  if (routed === undefined) return null;
  const balancer = plane.runtime.balancers.get(routed ? routed.key : service.name)?.balancer;
  if (!balancer || tried.size >= service.runtime.max_failover_attempts) return null;
  const backend = nextBackend(
    views(plane, (routed?.pool ?? service).backends),
    tried,
    balancer,
    { client, random: Math.random },
    Date.now(),
    service.runtime.slow_start_ms,
  );
  if (!backend) return null;
  tried.add(backend.id);
  countersOf(plane, backend.id).active++;
  return backend;
}

/**
 * The backend header: what a backend is sent before the client's own
 * bytes, its PROXY header (`send_proxy`: the client and where it reached
 * bal, or the proxy in front), then what the client sent after its own
 * PROXY header. Null when neither applies. (The client's preface is the
 * other way: what a client sends first, read by inspect.ts.)
 */
export function backendHeader(
  backend: Backend,
  client: Peer,
  destination: () => Peer | null,
  early: Uint8Array | null,
): Uint8Array | null {
  if (!backend.send_proxy) return early;
  const header = writeProxyHeader(backend.send_proxy, client, destination());
  if (!early) return header;
  const both = new Uint8Array(header.length + early.length);
  both.set(header);
  both.set(early, header.length);
  return both;
}

/** A dial that succeeded after `ms`: counted, timed, and told to health when it has use for it. */
export function dialed<S extends SessionBase>(
  plane: Plane<S>,
  s: S,
  backend: Backend,
  ms: number,
): void {
  const counters = countersOf(plane, backend.id);
  observeConnect(counters, ms / 1000);
  s.connectMs = Math.round(ms * 100) / 100;
  s.backend = backend.id;
  counters.served++;
  const failures = plane.gates.outOfResources.recover();
  if (failures !== null) {
    log.info(
      `backend connections open again after ${plural(failures, "failure")} for lack of resources`,
      { event: "out_of_resources_ended", failures },
    );
  }
  const { runtime } = plane;
  const state = runtime.health.get(backend.id);
  // A clean backend has nothing to learn from a success: skip the message,
  // unless protection mode is counting successes.
  if (state && (!isClean(state) || protectionOf(runtime, backend.service).enabled)) {
    plane.options.onResult(backend, { ok: true, at: Date.now(), source: "connect" });
  }
}

/**
 * A dial that failed: counted and told to health. Returns true when it was
 * this machine's fault (no backend should be tried, every other would fail
 * the same way).
 */
export function dialFailed<S extends SessionBase>(
  plane: Plane<S>,
  backend: Backend,
  kind: DialFailure,
  message: string,
): boolean {
  countersOf(plane, backend.id).active--;
  const names = { service: backend.service, backend: backend.address };
  if (kind === "local") {
    if (plane.gates.outOfResources.fail()) {
      log.error("cannot open backend connections: {error}; clients are closed until it passes", {
        event: "out_of_resources",
        ...names,
        error: message,
      });
    }
    return true;
  }
  countersOf(plane, backend.id)[kind]++;
  plane.options.onResult(backend, {
    ok: false,
    at: Date.now(),
    source: "connect",
    kind,
    error: message,
  });
  log.debug("connect to {backend} failed: {error}", {
    event: "connect_failed",
    ...names,
    kind,
    error: message,
  });
  return false;
}

/** Every backend a client was offered failed: told to health, and said at most once a second. */
export function noBackend<S extends SessionBase>(
  plane: Plane<S>,
  service: Service,
  tried: number,
): void {
  plane.options.onNoBackend(service.name, Date.now());
  const suppressed = plane.gates.noBackend();
  if (suppressed !== null) {
    log.warn("no backend of {service} accepted the connection ({tried} tried); client closed", {
      event: "no_backend",
      service: service.name,
      backends: service.backends.length,
      tried,
      suppressed,
    });
  }
}
