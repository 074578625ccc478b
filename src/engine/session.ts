/**
 * One client's session, its steps in the order they come, whatever engine
 * moves its bytes ({@link serve} drives them):
 *
 * 1. started: admitted by admission.ts, counted and tracked;
 * 2. inspected: what the client sends first (PROXY header, ClientHello)
 *    read and judged by inspect.ts, for a service that needs it;
 * 3. a backend picked (pick.ts), connected or failed over until none is
 *    left (each outcome reported by outcomes.ts);
 * 4. relaying: the backend header sent first ({@link backendHeader}), the
 *    early bytes counted;
 * 5. ended with a cause ({@link finish}): sockets closed, a backend that
 *    hung up on a waiting client reported, the access line written.
 *
 * An engine supplies only the {@link Mechanism}: read the first bytes,
 * connect, relay, close. Timers and accept are its own.
 *
 * @module
 */
import type { Backend, Service } from "../config/schema.ts";
import { type TlsFacts, tlsTlvs, withTlvs, writeProxyHeader } from "../route/proxy_protocol.ts";
import { ipv4Bytes, isWildcard } from "../net/address.ts";
import type { Preface } from "../route/preface.ts";
import type { DialFailure } from "../net/dial.ts";
import type { BackendCounters, ServiceCounters } from "../stats/counters.ts";
import {
  countersOf,
  type Ending,
  logAccess,
  type Peer,
  type Plane,
  type Relayed,
  type SessionBase,
} from "./plane.ts";
import { ended, started } from "./admission.ts";
import { inspected, inspects } from "./inspect.ts";
import { pick } from "./pick.ts";
import { dialed, dialFailed, hungUp, noBackend } from "./outcomes.ts";
import { serviceMayLoop } from "./self_loop.ts";
import { releaseShape, shapeOf } from "./throttle.ts";
import { openMirror } from "./mirror.ts";
import { mirrored } from "../balance/mirror_choice.ts";

/** How a connect went, as the engine tells it. */
export type DialOutcome<C> =
  | { ok: true; conn: C; ms: number }
  | { ok: false; kind: DialFailure; message: string };

/**
 * What an engine supplies for its sessions: mechanism only. Every choice
 * (go on or not, which backend, what it is sent first, how the session
 * ended) is made in this module, in order.
 */
export interface Mechanism<S extends SessionBase, C> {
  /**
   * Starts reading what the client sends first (a PROXY header, a
   * ClientHello); `then` hears what it said, once. False when the read
   * could not start.
   */
  inspect(s: S, service: Service, then: (read: Preface | string) => void): boolean;
  /**
   * Starts a connect to `backend` within `timeoutMs`; `done` hears how it
   * went, once, unless the session ended first (`close` stops the connect).
   */
  connect(s: S, backend: Backend, timeoutMs: number, done: (outcome: DialOutcome<C>) => void): void;
  /**
   * Relays the client and its connected backend both ways, `header` to the
   * backend before anything, moving `counters` as bytes go. Returns the
   * relay's progress, kept current (`early` bytes already counted from the
   * client), and calls `done` once both directions are over or one failed.
   */
  relay(
    s: S,
    conn: C,
    header: Uint8Array | null,
    early: number,
    counters: BackendCounters,
    done: () => void,
  ): Relayed;
  /** bal's own end of the client's connection, for a PROXY header that has no other. */
  localEnd(s: S): Peer | null;
  /** Closes what the session holds: the client, a connect under way, the backend. */
  close(s: S): void;
}

/**
 * Serves an admitted client (admission.ts `admit` let it in): counted as
 * started, inspected when its service reads first bytes, then connected
 * and relayed. When the engine learns a connect's local end only after
 * its listener may have accepted it, a client of a service whose backends
 * could be bal waits a few event-loop turns first: the connect that made
 * it, if bal's own, finds it in that time and cuts it (self_loop.ts).
 */
export function serve<S extends SessionBase, C>(
  plane: Plane<S>,
  mech: Mechanism<S, C>,
  s: S,
): void {
  started(plane, s, s.counters);
  const { services } = plane.runtime.snapshot;
  const service = services.get(s.service);
  if (plane.loops.clients && service && serviceMayLoop(services, service)) {
    return awaitOwnConnect(plane, mech, s, LOOP_TURNS);
  }
  inspectThenDial(plane, mech, s);
}

/** Event-loop turns a client of a service that may loop waits for the connect that caused it. */
const LOOP_TURNS = 3;

function awaitOwnConnect<S extends SessionBase, C>(
  plane: Plane<S>,
  mech: Mechanism<S, C>,
  s: S,
  turns: number,
): void {
  setTimeout(() => {
    if (s.finished) return;
    if (turns > 1) awaitOwnConnect(plane, mech, s, turns - 1);
    else inspectThenDial(plane, mech, s);
  }, 0);
}

function inspectThenDial<S extends SessionBase, C>(
  plane: Plane<S>,
  mech: Mechanism<S, C>,
  s: S,
): void {
  const service = plane.runtime.snapshot.services.get(s.service);
  if (!inspects(service)) return dialNext(plane, mech, s);
  const reading = mech.inspect(s, service, (read) => {
    if (s.finished) return;
    if (inspected(plane, s, read)) dialNext(plane, mech, s);
    else finish(plane, mech, s);
  });
  if (!reading) finish(plane, mech, s);
}

/** Connects the next backend the policy offers, or gives up on the client. */
function dialNext<S extends SessionBase, C>(
  plane: Plane<S>,
  mech: Mechanism<S, C>,
  s: S,
): void {
  if (s.finished) return;
  const service = plane.runtime.snapshot.services.get(s.service);
  const backend = service && pick(plane, service, s.route, s.tried, s.peer.hostname);
  if (!backend) {
    if (service) noBackend(plane, service, s.tried.size);
    return refused(plane, mech, s);
  }
  s.connecting = backend;
  const timeoutMs = service.runtime.backend_connect_timeout_ms;
  mech.connect(s, backend, timeoutMs, (outcome) => onDial(plane, mech, s, backend, outcome));
}

/** What `tried` becomes once connected: nothing more is tried, so one empty set serves all. */
const CONNECTED: Set<string> = new Set();

function onDial<S extends SessionBase, C>(
  plane: Plane<S>,
  mech: Mechanism<S, C>,
  s: S,
  backend: Backend,
  outcome: DialOutcome<C>,
): void {
  s.connecting = null;
  if (!outcome.ok) {
    if (dialFailed(plane, backend, outcome.kind, outcome.message)) return refused(plane, mech, s);
    return dialNext(plane, mech, s);
  }
  dialed(plane, s, backend, outcome.ms);
  s.counters.served++;
  s.tried = CONNECTED;
  const counters = countersOf(plane, backend.id);
  const early = countEarly(s, counters);
  const destination = () => s.destination ?? boundEnd(plane, s) ?? mech.localEnd(s);
  shapeAndMirror(plane, s, backend, counters, destination);
  const header = backendHeader(backend, s.peer, destination, s.early, s.tls);
  s.early = null;
  s.relayed = mech.relay(s, outcome.conn, header, early, counters, () => finish(plane, mech, s));
}

/**
 * A backend took the client: its bandwidth limits are fixed now (a reload
 * changes later connections' only), and when its service mirrors this
 * connection the copy opens, with what the client sent already.
 */
function shapeAndMirror<S extends SessionBase>(
  plane: Plane<S>,
  s: S,
  backend: Backend,
  counters: BackendCounters,
  destination: () => Peer | null,
): void {
  const service = plane.runtime.snapshot.services.get(s.service);
  if (!service) return;
  const ip = s.peer.hostname;
  const owners = { service: s.counters, backend: counters };
  s.shape = shapeOf(plane.buckets, service, backend, ip, owners, Date.now());
  const target = service.mirror;
  if (!target || !mirrored(target, service.method, ip, Math.random)) return;
  const header = target.send_proxy && writeProxyHeader(target.send_proxy, s.peer, destination());
  const connectMs = service.runtime.backend_connect_timeout_ms;
  s.mirror = openMirror(target, header, s.counters, connectMs);
  if (s.early) s.mirror.copy(s.early);
}

/** What {@link boundEnd} found per service (services are frozen, one object per snapshot). */
const boundEnds = new WeakMap<Service, Peer | null>();

/**
 * bal's own end of the client's connection when its listener says it (an
 * IP, not a wildcard): known without asking the socket.
 */
function boundEnd<S extends SessionBase>(plane: Plane<S>, s: S): Peer | null {
  const service = plane.runtime.snapshot.services.get(s.service);
  if (!service) return null;
  let end = boundEnds.get(service);
  if (end === undefined) {
    const address = service.bind_address;
    const ip = ipv4Bytes(address) !== null || address.includes(":");
    end = ip && !isWildcard(address) ? { hostname: address, port: service.port } : null;
    boundEnds.set(service, end);
  }
  return end;
}

/** No backend took the client: it is closed and counted. */
function refused<S extends SessionBase, C>(plane: Plane<S>, mech: Mechanism<S, C>, s: S): void {
  s.counters.no_backend++;
  s.closing ??= "no_backend";
  finish(plane, mech, s);
}

/**
 * Ends a session, once, whatever ended it (its relay, no backend, a
 * refusal, or bal closing it through `plane.close`): its sockets closed,
 * the backend's live count given back, the access line written.
 */
export function finish<S extends SessionBase, C>(
  plane: Plane<S>,
  mech: Mechanism<S, C>,
  s: S,
): void {
  if (s.finished) return;
  s.finished = true;
  mech.close(s);
  if (s.shape) releaseShape(plane.buckets, s.shape);
  s.mirror?.release();
  if (s.connecting) countersOf(plane, s.connecting.id).active--;
  s.connecting = null;
  const r = s.relayed;
  if (r && s.to) {
    relayEnded(plane, s, s.to, r);
    countersOf(plane, s.to.id).active--;
  } else {
    logAccess(plane, s.service, s.peer, { ended: s.closing ?? "error", started: s.started });
  }
  ended(plane, s, s.counters);
}

/**
 * What every engine's session starts with: accepted now, admitted with its
 * service's `counters`, nothing else known of it yet.
 */
export function begun(
  service: string,
  peer: Peer,
  counters: ServiceCounters,
  now: number,
): SessionBase {
  return {
    service,
    peer,
    counters,
    tried: new Set(),
    connecting: null,
    to: null,
    relayed: null,
    finished: false,
    activity: { at: now },
    closing: null,
    started: now,
    connectMs: null,
    destination: null,
    early: null,
    route: null,
    tls: null,
    shape: null,
    mirror: null,
  };
}

/**
 * A backend took the client: what the client sent while it was inspected
 * (after a PROXY header, a ClientHello) is its bytes too, added to the
 * backend's `counters`. Returns how many.
 */
function countEarly(s: SessionBase, counters: BackendCounters): number {
  const early = s.early?.length ?? 0;
  counters.bytes_in += early;
  return early;
}

/**
 * A relayed session ended: a backend that ended its stream without a byte
 * for a client still waiting is reported as failing, and the access line
 * says how it ended.
 */
function relayEnded<S extends SessionBase>(
  plane: Plane<S>,
  s: S,
  backend: Backend,
  r: Relayed,
): void {
  const firstEnd = r.firstEnd === "a" ? "client" : r.firstEnd === "b" ? "backend" : null;
  if (r.bToA === 0 && firstEnd === "backend" && !s.closing) hungUp(plane, backend, r.failed);
  logAccess(plane, s.service, s.peer, {
    ended: endingOf(s.closing, r.failed || !r.done, firstEnd),
    started: s.started,
    backend: backend.address,
    bytes_in: r.aToB,
    bytes_out: r.bToA,
    connect_ms: s.connectMs,
    mirrored: s.mirror !== null,
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
 * The backend header: what a backend is sent before the client's own
 * bytes, its PROXY header (`send_proxy`: the client and where it reached
 * bal, or the proxy in front; with v2 and `tls:`, the TLS facts), then what the client sent after its own
 * PROXY header. Null when neither applies. (The client's preface is the
 * other way: what a client sends first, read by inspect.ts.)
 */
function backendHeader(
  backend: Backend,
  client: Peer,
  destination: () => Peer | null,
  early: Uint8Array | null,
  tls: TlsFacts | null,
): Uint8Array | null {
  if (!backend.send_proxy) return early;
  const plain = writeProxyHeader(backend.send_proxy, client, destination());
  // A v2 header also says what bal's TLS termination learned (proxy_protocol.ts).
  const header = tls ? withTlvs(plain, tlsTlvs(tls)) : plain;
  if (!early) return header;
  const both = new Uint8Array(header.length + early.length);
  both.set(header);
  both.set(early, header.length);
  return both;
}
