/**
 * What every engine shares about one data plane, whatever moves its bytes:
 * the sessions it holds (their type, the container), its counters, the
 * access line, sweeping idle connections, draining, applying listeners and
 * summing up, and the {@link Engine} answered over it. A session's own
 * steps are in session.ts; whether a client may go on at all is
 * admission.ts. An engine supplies only `close` (how to shut a session's
 * sockets) and calls these at the right moments.
 *
 * @module
 */
import type { Backend, Config, Service } from "../config/schema.ts";
import type { Relayed } from "./relayed.ts";
import type { Shape, SharedBuckets } from "./throttle.ts";
import type { MirrorLink } from "./mirror.ts";
import type { TlsFacts } from "../route/proxy_protocol.ts";

export { type ByteCounters, moved, type Relayed } from "./relayed.ts";
import { formatAddress } from "../net/address.ts";
import type { ListenerSet } from "./listeners.ts";
import { type ClientRefusal, type ClientTable, pruneBuckets } from "../route/client_limits.ts";
import { episode, logAccessLine, logger, rateLimited } from "../log.ts";
import { plural } from "../text.ts";
import type { Runtime } from "../snapshot.ts";
import { type Engine, type EngineName, type EngineOptions, usesTls } from "./engine.ts";
import { type Guarded, type LoopGuard, loopGuard } from "./self_loop.ts";
import {
  type BackendCounters,
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
  | "tls_handshake"
  | "loop"
  | "error";

/** A client's address, as sockets report it. */
export interface Peer {
  hostname: string;
  port: number;
}

/** Why a client was closed before any backend was tried (admission.ts decides and says it). */
export type Refusal =
  | "denied"
  | ClientRefusal
  | "proxy_refused"
  | "no_route"
  | "tls_handshake"
  | "loop";

/** What every engine's session has. */
export interface SessionBase extends Guarded {
  service: string;
  /** The client's address. */
  peer: Peer;
  /** Its service's counters (admission found them). */
  counters: ServiceCounters;
  /** Backends offered so far (none more once one connected). */
  tried: Set<string>;
  /** The backend being connected to; it counts the client as active meanwhile. */
  connecting: Backend | null;
  /** The backend it is relayed to, once one connected, and the relay's progress. */
  to: Backend | null;
  relayed: Relayed | null;
  /** Over: its sockets closed, its access line written (session.ts `finish`). */
  finished: boolean;
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
  /** What its TLS handshake with bal said (a service with `tls:`), else null. */
  tls: TlsFacts | null;
  /** Its bandwidth limits, taken when a backend took it (null: none). */
  shape: Shape | null;
  /** Its copy to the service's mirror, when it was chosen for one. */
  mirror: MirrorLink | null;
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
  /** Bandwidth buckets shared by a client's connections (`per: client`). */
  readonly buckets: SharedBuckets;
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
    buckets: new Map(),
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
        tls_handshake: rateLimited(1000),
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
  mirrored?: boolean;
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
    mirrored: done.mirrored ?? false,
  });
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
  serves: (service: Service) => boolean,
): void {
  const before = plane.runtime.snapshot.services;
  // UDP services are the UDP plane's (src/udp/); engines listen for TCP.
  const tcp = config.services.filter((s) => s.protocol === "tcp" && serves(s));
  const wanted = new Map(tcp.map((s) => [s.name, {
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
  const totals = zeroServiceCounters();
  const keys = Object.keys(totals) as (keyof ServiceCounters)[];
  for (const c of plane.perService.values()) for (const k of keys) totals[k] += c[k];
  const copy = <T>(m: Map<string, T>) => Object.fromEntries([...m].map(([k, v]) => [k, { ...v }]));
  return {
    id: plane.options.id,
    ...totals,
    active: plane.sessions.size,
    services: copy(plane.perService),
    backends: copy(plane.perBackend),
  };
}

/** An engine's own steps around the shared ones. */
export interface EngineSteps {
  /** After its listeners follow a new config. */
  applied?(config: Config): void;
  /** After the drain that follows a stop (the last sessions closed). */
  stopped?(): Promise<void>;
}

/**
 * The {@link Engine} over a plane and its listeners: what both engines
 * answer alike, with an engine's own steps in `steps`.
 */
export function planeEngine<S extends SessionBase>(
  name: EngineName,
  plane: Plane<S>,
  listeners: ListenerSet,
  steps: EngineSteps = {},
): Engine {
  let stopping = false;
  // Native engines leave TLS to the engines beside them (src/engine/tls/beside.ts).
  const serves = plane.options.serves ??
    (name !== "deno" ? (s: Service) => !usesTls(s) : () => true);
  return {
    name,
    apply(config) {
      applyListeners(plane, listeners, config, serves);
      steps.applied?.(config);
    },
    listening: () => listeners.addresses(),
    backlog: (service) => listeners.backlog(service),
    stopAccepting: () => {
      stopping = true;
      return listeners.closeAll();
    },
    async drain(timeoutMs) {
      const forced = await drain(plane, timeoutMs);
      if (stopping) await steps.stopped?.();
      return forced;
    },
    kill: (backendId) => closeWhere(plane, (s) => s.to?.id === backendId, "killed"),
    stats: () => stats(plane),
    listenerFds: () => listeners.fds(),
  };
}
