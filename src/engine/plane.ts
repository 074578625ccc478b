/**
 * What every engine shares about one data plane, whatever moves its bytes:
 * the sessions it holds, its counters, and the steps of a session that are
 * bookkeeping rather than sockets: asking the policy for a backend,
 * reporting a connect's result to health, what a backend is sent first,
 * logging how a connection ended, sweeping idle connections, draining and
 * summing up (whether a client may go on at all is `admission.ts`). An
 * engine supplies only `close` (how to shut a session's sockets) and calls
 * these at the right moments.
 *
 * @module
 */
import { type Backend, type Config, type Pool, poolKey, type Service } from "../config/schema.ts";
import { formatAddress } from "../net/address.ts";
import type { ListenerSet } from "./listeners.ts";
import { writeProxyHeader } from "../route/proxy_protocol.ts";
import { type ClientRefusal, type ClientTable, pruneBuckets } from "../route/client_limits.ts";
import { episode, logAccessLine, logger, rateLimited } from "../log.ts";
import { plural } from "../text.ts";
import { type BackendView, nextBackend } from "../balance/select.ts";
import { isClean } from "../health/state.ts";
import { protectionOf, type Runtime } from "../snapshot.ts";
import type { DialFailure } from "../net/dial.ts";
import type { EngineOptions } from "./engine.ts";
import { type Guarded, type LoopGuard, loopGuard } from "./self_loop.ts";
import {
  type BackendCounters,
  observeConnect,
  type PlaneStats,
  type ServiceCounters,
  zeroCounters,
  zeroServiceCounters,
} from "../stats/counters.ts";

const log = logger("proxy");

/** How a connection ended, as the access log says it (HAProxy's termination state, in words). */
export type Ending =
  | "client_closed"
  | "backend_closed"
  | "reset"
  | "idle_timeout"
  | "drain_timeout"
  | "killed"
  | "limit"
  | "no_backend"
  | "denied"
  | "client_limit"
  | "client_rate"
  | "proxy_refused"
  | "no_route"
  | "loop"
  | "error";

/** A client's address, as sockets report it. */
export interface Peer {
  hostname: string;
  port: number;
}

/** Why a client was closed before any backend was tried (admission.ts decides and says it). */
export type Refusal = "denied" | ClientRefusal | "proxy_refused" | "no_route" | "loop";

/** What every engine's session has. */
export interface SessionBase extends Guarded {
  service: string;
  /** The client's address. */
  peer: Peer;
  /** Id of the backend it was given, once one connected. */
  backend: string | null;
  /** Epoch ms bytes last moved either way (or the accept); Infinity once swept. */
  activity: { at: number };
  /** Why bal closed it (idle, drain, kill), or null: how it ended then says nothing of the backend. */
  closing: Ending | null;
  /** Epoch ms it was accepted. */
  started: number;
  /** How long the backend connect took, once one connected. */
  connectMs: number | null;
  /** Counted against `max_connections_per_client` (set by {@link started}). */
  clientCounted?: boolean;
  /** Where the client reached the proxy in front, from its PROXY header. */
  destination: Peer | null;
  /** What the client sent before a backend was picked (after a PROXY header), for the backend. */
  early: Uint8Array | null;
  /** The route its server name chose (a service with routes), else null. */
  route: string | null;
}

/** Everything one data plane holds, whatever its engine. */
export interface Plane<S extends SessionBase> {
  readonly runtime: Runtime;
  readonly options: EngineOptions;
  readonly sessions: Set<S>;
  /** Called when the last session ends (drain waits on it). */
  readonly idleWaiters: Set<() => void>;
  readonly perBackend: Map<string, BackendCounters>;
  readonly perService: Map<string, ServiceCounters>;
  /** Per-client limits' state, by service. */
  readonly clients: Map<string, ClientTable>;
  readonly gates: {
    noBackend: () => number | null;
    overloaded: () => number | null;
    outOfResources: ReturnType<typeof episode>;
    refused: Record<Refusal, () => number | null>;
  };
  /** bal's own connects, to refuse a backend that is bal itself. */
  readonly loops: LoopGuard<S>;
  /** Drain timers of services a reload removed. */
  readonly removedDrains: Set<ReturnType<typeof setTimeout>>;
  /** Closes a session's sockets; the engine then ends it as usual. */
  close(s: S, why: Ending): void;
}

/** A data plane with nothing in it yet. */
export function createPlane<S extends SessionBase>(
  runtime: Runtime,
  options: EngineOptions,
  close: (s: S, why: Ending) => void,
  /** The engine learns a connect's local end only after the listener may have accepted it. */
  trackClients = false,
): Plane<S> {
  return {
    runtime,
    options,
    sessions: new Set(),
    idleWaiters: new Set(),
    perBackend: new Map(),
    perService: new Map(),
    clients: new Map(),
    gates: {
      noBackend: rateLimited(1000),
      overloaded: rateLimited(1000),
      outOfResources: episode(),
      refused: {
        denied: rateLimited(1000),
        client_limit: rateLimited(1000),
        client_rate: rateLimited(1000),
        proxy_refused: rateLimited(1000),
        no_route: rateLimited(1000),
        loop: rateLimited(1000),
      },
    },
    loops: loopGuard(trackClients),
    removedDrains: new Set(),
    close(s, why) {
      s.closing ??= why;
      close(s, why);
    },
  };
}

/** A backend's counters on this plane, created on first use. */
export function countersOf<S extends SessionBase>(plane: Plane<S>, id: string): BackendCounters {
  let c = plane.perBackend.get(id);
  if (!c) plane.perBackend.set(id, c = zeroCounters());
  return c;
}

/** A service's counters on this plane, created on first use. */
export function serviceCounters<S extends SessionBase>(
  plane: Plane<S>,
  name: string,
): ServiceCounters {
  let c = plane.perService.get(name);
  if (!c) plane.perService.set(name, c = zeroServiceCounters());
  return c;
}

/** What an access line says of a finished connection, beyond its service and client. */
export interface Done {
  ended: Ending;
  started: number;
  backend?: string;
  bytes_in?: number;
  bytes_out?: number;
  connect_ms?: number | null;
}

/** One access-log line for a finished connection, when its service asks for them. */
export function logAccess<S extends SessionBase>(
  plane: Plane<S>,
  service: string,
  peer: Peer,
  done: Done,
): void {
  if (!plane.runtime.snapshot.services.get(service)?.access_log) return;
  logAccessLine({
    service,
    client: formatAddress(peer.hostname, peer.port),
    backend: done.backend ?? null,
    bytes_in: done.bytes_in ?? 0,
    bytes_out: done.bytes_out ?? 0,
    connect_ms: done.connect_ms ?? null,
    duration_ms: Date.now() - done.started,
    ended: done.ended,
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
 * What a backend is sent before the client's own bytes: its PROXY header
 * (`send_proxy`: the client and where it reached bal, or the proxy in
 * front), then what the client sent after its own PROXY header. Null when
 * neither applies.
 */
export function preface(
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

/**
 * Closes connections idle longer than their service's
 * connection_idle_timeout_ms, timing read afresh from the snapshot so a
 * reload applies. Returns when to sweep next (ms): four times per shortest
 * timeout, at most once a second.
 */
export function sweepIdle<S extends SessionBase>(plane: Plane<S>, now: number): number {
  const { services, config } = plane.runtime.snapshot;
  let shortest = Infinity;
  for (const s of services.values()) {
    const ms = s.runtime.connection_idle_timeout_ms;
    if (ms > 0) shortest = Math.min(shortest, ms);
    const table = plane.clients.get(s.name);
    if (table) pruneBuckets(table, s.runtime.connection_rate_per_client, now);
  }
  for (const s of plane.sessions) {
    const idleMs = services.get(s.service)?.runtime.connection_idle_timeout_ms ??
      config.runtime.connection_idle_timeout_ms;
    if (idleMs > 0 && s.activity.at < now - idleMs) {
      serviceCounters(plane, s.service).idle_closed++;
      // Counted once: it may stay in the set until its relay has unwound.
      s.activity.at = Infinity;
      plane.close(s, "idle_timeout");
    }
  }
  return Math.min(1000, Math.max(25, shortest / 4));
}

/** Closes the sessions `which` selects; returns how many. */
export function closeWhere<S extends SessionBase>(
  plane: Plane<S>,
  which: (s: S) => boolean,
  why: Ending,
): number {
  let closed = 0;
  for (const s of [...plane.sessions]) {
    if (!which(s)) continue;
    plane.close(s, why);
    closed++;
  }
  return closed;
}

/**
 * Makes a plane's listeners match `config`'s services (all or nothing, see
 * listeners.ts); the connections of services it stops listening for drain.
 */
export function applyListeners<S extends SessionBase>(
  plane: Plane<S>,
  listeners: ListenerSet,
  config: Config,
): void {
  const before = plane.runtime.snapshot.services;
  const wanted = new Map(config.services.map((s) => [s.name, {
    bind_address: s.bind_address,
    port: s.port,
    backlog: s.runtime.tcp_backlog,
  }]));
  for (const name of listeners.apply(wanted)) {
    const drainMs = before.get(name)?.runtime.shutdown_drain_timeout_ms ??
      config.runtime.shutdown_drain_timeout_ms;
    drainRemoved(plane, name, drainMs);
  }
}

/** A removed service's live connections finish, or are closed at its drain timeout. */
function drainRemoved<S extends SessionBase>(
  plane: Plane<S>,
  service: string,
  timeoutMs: number,
): void {
  const timer = setTimeout(() => {
    plane.removedDrains.delete(timer);
    const forced = closeWhere(plane, (s) => s.service === service, "drain_timeout");
    if (forced > 0) {
      log.warn(
        `removed service {service}: closed ${
          plural(forced, "connection")
        } left after {drain_ms} ms`,
        { event: "drain_timeout", service, forced, drain_ms: timeoutMs },
      );
    }
  }, timeoutMs);
  Deno.unrefTimer(timer);
  plane.removedDrains.add(timer);
}

/** Waits until no session is left or `timeoutMs` passed; closes the rest and returns how many. */
export async function drain<S extends SessionBase>(
  plane: Plane<S>,
  timeoutMs: number,
): Promise<number> {
  if (plane.sessions.size > 0) {
    let wake = () => {};
    const timer = setTimeout(() => wake(), timeoutMs);
    await new Promise<void>((resolve) => plane.idleWaiters.add(wake = resolve));
    plane.idleWaiters.delete(wake);
    clearTimeout(timer);
  }
  for (const timer of plane.removedDrains) clearTimeout(timer);
  return closeWhere(plane, () => true, "drain_timeout");
}

/** The plane's counters now, copied. */
export function stats<S extends SessionBase>(plane: Plane<S>): PlaneStats {
  const counters = [...plane.perService.values()];
  const sum = (key: keyof ServiceCounters) => counters.reduce((n, c) => n + c[key], 0);
  const copy = <T>(m: Map<string, T>) => Object.fromEntries([...m].map(([k, v]) => [k, { ...v }]));
  return {
    id: plane.options.id,
    accepted: sum("accepted"),
    active: plane.sessions.size,
    served: sum("served"),
    rejected: sum("rejected"),
    no_backend: sum("no_backend"),
    idle_closed: sum("idle_closed"),
    denied: sum("denied"),
    client_limited: sum("client_limited"),
    rate_limited: sum("rate_limited"),
    proxy_refused: sum("proxy_refused"),
    no_route: sum("no_route"),
    looped: sum("looped"),
    services: copy(plane.perService),
    backends: copy(plane.perBackend),
  };
}
