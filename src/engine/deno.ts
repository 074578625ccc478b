/**
 * The Deno.Conn engine: every service's clients on this data plane, each
 * relayed to a backend with Deno's own sockets. The policy decides which
 * backend (`src/balance/select.ts`); this module dials, relays, times out,
 * drains and counts.
 *
 * The session's steps: {@link accept} (the service's limit), then
 * {@link connectBackend} (pick, dial, fail over), then the relay, then
 * close. Idle connections are swept by {@link sweep}.
 *
 * @module
 */
import { type Backend, type Config, formatAddress, type Service } from "../config/mod.ts";
import { episode, logAccessLine, logger, rateLimited } from "../log.ts";
import { plural } from "../text.ts";
import { type BackendView, nextBackend } from "../balance/select.ts";
import { isClean } from "../health/state.ts";
import { protectionOf, type Runtime } from "../snapshot.ts";
import { dial, DialError } from "./dial.ts";
import type { Engine, EngineOptions } from "./engine.ts";
import {
  type BackendCounters,
  observeConnect,
  type PlaneStats,
  type ServiceCounters,
  zeroCounters,
  zeroServiceCounters,
} from "./counters.ts";
import { listenerSet } from "./listeners.ts";
import { type Activity, closeQuietly, relay } from "./relay.ts";

const log = logger("proxy");

/** One client and, once dialed, its backend connection. */
interface Session {
  service: string;
  client: Deno.TcpConn;
  upstream: Deno.TcpConn | null;
  /** Id of the backend it was given, once one connected. */
  backend: string | null;
  /** Last time bytes moved either way (or the accept). */
  activity: Activity;
  /** Why bal closed it (idle, drain, kill), or null: how it ended then says nothing of the backend. */
  closing: Ending | null;
  /** Epoch ms it was accepted. */
  started: number;
  /** How long the backend connect took, once one connected. */
  connectMs: number | null;
}

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
  | "error";

/** Everything one data plane holds. */
interface Plane {
  readonly runtime: Runtime;
  readonly options: EngineOptions;
  readonly sessions: Set<Session>;
  /** Called when the last session ends (drain waits on it). */
  readonly idleWaiters: Set<() => void>;
  readonly perBackend: Map<string, BackendCounters>;
  readonly perService: Map<string, ServiceCounters>;
  readonly gates: {
    noBackend: () => number | null;
    overloaded: () => number | null;
    outOfResources: ReturnType<typeof episode>;
  };
  /** Drain timers of services a reload removed. */
  readonly removedDrains: Set<ReturnType<typeof setTimeout>>;
}

function countersOf(plane: Plane, id: string): BackendCounters {
  let c = plane.perBackend.get(id);
  if (!c) plane.perBackend.set(id, c = zeroCounters());
  return c;
}

function serviceCounters(plane: Plane, name: string): ServiceCounters {
  let c = plane.perService.get(name);
  if (!c) plane.perService.set(name, c = zeroServiceCounters());
  return c;
}

function closeSession(s: Session, why: Ending): void {
  s.closing ??= why;
  closeQuietly(s.client);
  if (s.upstream) closeQuietly(s.upstream);
}

/** Creates the Deno.Conn engine for a runtime; it reads `runtime.snapshot` per connection. */
export function createDenoEngine(runtime: Runtime, options: EngineOptions): Engine {
  const plane: Plane = {
    runtime,
    options,
    sessions: new Set(),
    idleWaiters: new Set(),
    perBackend: new Map(),
    perService: new Map(),
    gates: {
      noBackend: rateLimited(1000),
      overloaded: rateLimited(1000),
      outOfResources: episode(),
    },
    removedDrains: new Set(),
  };
  sweep(plane);
  const listeners = listenerSet({
    reusePort: options.reusePort,
    claimPort: options.claimPort,
    accept: (service, client) => accept(plane, service, client),
  });
  return {
    apply(config: Config) {
      const before = runtime.snapshot.services;
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
    },
    listening: () => listeners.addresses(),
    backlog: (service) => listeners.backlog(service),
    stopAccepting: () => listeners.closeAll(),
    drain: (timeoutMs) => drain(plane, timeoutMs),
    kill: (backendId) => closeWhere(plane, (s) => s.backend === backendId, "killed"),
    stats: () => stats(plane),
  };
}

/** A new client of `service`: refused at the service's limit, else served. */
function accept(plane: Plane, service: string, client: Deno.TcpConn): void {
  const counters = serviceCounters(plane, service);
  counters.accepted++;
  const max = plane.runtime.snapshot.services.get(service)?.runtime.max_concurrent_connections ?? 0;
  if (counters.active >= Math.ceil(max / plane.options.planes)) {
    // overload_policy reject: closed at once, counted, and said at most once a second.
    counters.rejected++;
    closeQuietly(client);
    logAccess(plane, service, client, { ended: "limit", started: Date.now() });
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
    return;
  }
  const session: Session = {
    service,
    client,
    upstream: null,
    backend: null,
    activity: { at: Date.now() },
    closing: null,
    started: Date.now(),
    connectMs: null,
  };
  plane.sessions.add(session);
  counters.active++;
  serve(plane, session, counters)
    .catch((err) =>
      log.debug("connection ended with {error}", {
        event: "connection_error",
        service,
        error: String(err),
      })
    )
    .finally(() => {
      closeSession(session, "error");
      counters.active--;
      plane.sessions.delete(session);
      if (plane.sessions.size === 0) { for (const wake of plane.idleWaiters) wake(); }
    });
}

async function serve(plane: Plane, session: Session, outcome: ServiceCounters): Promise<void> {
  const { client } = session;
  client.setNoDelay(true);
  client.setKeepAlive(true);
  const picked = await connectBackend(plane, session);
  if (!picked) {
    outcome.no_backend++;
    logAccess(plane, session.service, client, { ended: "no_backend", started: session.started });
    return;
  }
  outcome.served++;
  session.upstream = picked.upstream;
  session.backend = picked.backend.id;
  const counters = countersOf(plane, picked.backend.id);
  try {
    const moved = await relay(client, picked.upstream, session.activity, (fromClient, n) => {
      if (fromClient) counters.bytes_in += n;
      else counters.bytes_out += n;
    });
    if (moved.bToA === 0 && moved.firstEnd === "b" && !session.closing) {
      hungUp(plane, picked.backend, moved.failed);
    }
    const ended = session.closing ??
      (moved.failed ? "reset" : moved.firstEnd === "b" ? "backend_closed" : "client_closed");
    logAccess(plane, session.service, client, {
      ended,
      started: session.started,
      backend: picked.backend.address,
      bytes_in: moved.aToB,
      bytes_out: moved.bToA,
      connect_ms: session.connectMs,
    });
  } finally {
    counters.active--;
  }
}

/** One access-log line for a finished connection, when its service asks for them. */
function logAccess(
  plane: Plane,
  service: string,
  client: Deno.TcpConn,
  done: {
    ended: Ending;
    started: number;
    backend?: string;
    bytes_in?: number;
    bytes_out?: number;
    connect_ms?: number | null;
  },
): void {
  if (!plane.runtime.snapshot.services.get(service)?.access_log) return;
  const peer = client.remoteAddr as Deno.NetAddr;
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

/**
 * A backend that reset or closed a client's connection before sending a
 * byte, while the client still waited: a passive failure, like a refused
 * connect (an accept-and-reset backend must not keep its share).
 */
function hungUp(plane: Plane, backend: Backend, reset: boolean): void {
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

/** Views of a service's backends for selection: health, admin state, live count. */
function views(plane: Plane, service: Service): BackendView[] {
  const { health, admin } = plane.runtime;
  return service.backends.map((backend) => ({
    backend,
    health: health.get(backend.id),
    admin: admin.get(backend.id),
    active: countersOf(plane, backend.id).active,
  }));
}

/**
 * Dials backends in the policy's order until one connects; each is tried
 * at most once. The chosen backend counts the client as active from the
 * moment it is picked, so concurrent picks see it. On success the backend
 * stays counted active; the caller uncounts it when the relay ends.
 */
async function connectBackend(
  plane: Plane,
  session: Session,
): Promise<{ upstream: Deno.TcpConn; backend: Backend } | null> {
  const name = session.service;
  const clientIp = (session.client.remoteAddr as Deno.NetAddr).hostname;
  const service = plane.runtime.snapshot.services.get(name);
  const balancer = plane.runtime.balancers.get(name)?.balancer;
  if (!service || !balancer) return null;
  const tried = new Set<string>();
  const ctx = { client: clientIp, random: Math.random };
  const attempts = service.runtime.max_failover_attempts;
  while (tried.size < attempts) {
    const backend = nextBackend(
      views(plane, service),
      tried,
      balancer,
      ctx,
      Date.now(),
      service.runtime.slow_start_ms,
    );
    if (!backend) break;
    tried.add(backend.id);
    const counters = countersOf(plane, backend.id);
    counters.active++;
    try {
      const timeout = service.runtime.backend_connect_timeout_ms;
      const started = performance.now();
      const upstream = await dial(backend.host, backend.port, timeout);
      const ms = performance.now() - started;
      observeConnect(counters, ms / 1000);
      session.connectMs = Math.round(ms * 100) / 100;
      connected(plane, backend);
      counters.served++;
      return { upstream, backend };
    } catch (err) {
      counters.active--;
      if (!(err instanceof DialError)) throw err;
      if (connectFailed(plane, backend, err)) return null;
    }
  }
  plane.options.onNoBackend(service.name, Date.now());
  const suppressed = plane.gates.noBackend();
  if (suppressed !== null) {
    log.warn("no backend of {service} accepted the connection ({tried} tried); client closed", {
      event: "no_backend",
      service: service.name,
      backends: service.backends.length,
      tried: tried.size,
      suppressed,
    });
  }
  return null;
}

function connected(plane: Plane, backend: Backend): void {
  const failures = plane.gates.outOfResources.recover();
  if (failures !== null) {
    log.info(
      `backend connections open again after ${plural(failures, "failure")} for lack of resources`,
      {
        event: "out_of_resources_ended",
        failures,
      },
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

/** A failed connect; true when it was this machine's fault and no backend should be tried. */
function connectFailed(plane: Plane, backend: Backend, err: DialError): boolean {
  const names = { service: backend.service, backend: backend.address };
  if (err.kind === "local") {
    // Not the backend's fault, and every other backend would fail the same way.
    if (plane.gates.outOfResources.fail()) {
      log.error("cannot open backend connections: {error}; clients are closed until it passes", {
        event: "out_of_resources",
        ...names,
        error: err.message,
      });
    }
    return true;
  }
  countersOf(plane, backend.id)[err.kind]++;
  plane.options.onResult(backend, {
    ok: false,
    at: Date.now(),
    source: "connect",
    kind: err.kind,
    error: err.message,
  });
  log.debug("connect to {backend} failed: {error}", {
    event: "connect_failed",
    ...names,
    kind: err.kind,
    error: err.message,
  });
  return false;
}

/**
 * Closes connections idle longer than their service's
 * connection_idle_timeout_ms, checking four times per shortest timeout (at
 * most once a second), timing read afresh from the snapshot so a reload
 * applies.
 */
function sweep(plane: Plane): void {
  const { services, config } = plane.runtime.snapshot;
  const now = Date.now();
  let shortest = Infinity;
  for (const s of services.values()) {
    const ms = s.runtime.connection_idle_timeout_ms;
    if (ms > 0) shortest = Math.min(shortest, ms);
  }
  for (const s of plane.sessions) {
    const idleMs = services.get(s.service)?.runtime.connection_idle_timeout_ms ??
      config.runtime.connection_idle_timeout_ms;
    if (idleMs > 0 && s.activity.at < now - idleMs) {
      serviceCounters(plane, s.service).idle_closed++;
      // Counted once: it stays in the set until its relay has unwound.
      s.activity.at = Infinity;
      closeSession(s, "idle_timeout");
    }
  }
  const next = setTimeout(() => sweep(plane), Math.min(1000, Math.max(25, shortest / 4)));
  Deno.unrefTimer(next);
}

/** Closes the sessions `which` selects; returns how many. */
function closeWhere(plane: Plane, which: (s: Session) => boolean, why: Ending): number {
  let closed = 0;
  for (const s of plane.sessions) {
    if (!which(s)) continue;
    closeSession(s, why);
    closed++;
  }
  return closed;
}

/** A removed service's live connections finish, or are closed at its drain timeout. */
function drainRemoved(plane: Plane, service: string, timeoutMs: number): void {
  const timer = setTimeout(() => {
    plane.removedDrains.delete(timer);
    const forced = closeWhere(plane, (s) => s.service === service, "drain_timeout");
    if (forced > 0) {
      log.warn(
        `removed service {service}: closed ${
          plural(forced, "connection")
        } left after {drain_ms} ms`,
        {
          event: "drain_timeout",
          service,
          forced,
          drain_ms: timeoutMs,
        },
      );
    }
  }, timeoutMs);
  Deno.unrefTimer(timer);
  plane.removedDrains.add(timer);
}

async function drain(plane: Plane, timeoutMs: number): Promise<number> {
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

function stats(plane: Plane): PlaneStats {
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
    services: copy(plane.perService),
    backends: copy(plane.perBackend),
  };
}
