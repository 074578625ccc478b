/**
 * A backend that turns out to be bal itself, caught as it happens. `check`
 * refuses the certain cases (`reachesListener`); a name, a discovered
 * address or another of this machine's addresses can still lead back to a
 * listener, and then every client is accepted, dialed and accepted again
 * without end (one client became 27,000 connections in two seconds).
 *
 * A connect bal makes to a backend on one of its own listening ports is
 * remembered by its local end; a client arriving from such an end is bal's
 * own connect and is refused (`loop`), which ends the chain at its first
 * turn. Configs whose backends share no port with a listener pay nothing.
 *
 * @module
 */
import type { Backend } from "../config/schema.ts";

/** A socket's end, as the engines name it (plane.ts's `Peer`). */
interface End {
  hostname: string;
  port: number;
}

/** What a session carries for the guard. */
export interface Guarded {
  /** The local end of its backend connect, when the guard remembers it. */
  ownDial?: string;
  /** Its socket's peer, when the guard tracks clients (the deno engine). */
  socketPeer?: string;
}

/** A data plane's record of its own connects (and, where needed, its clients). */
export interface LoopGuard<S extends Guarded> {
  /** Local ends of connects to backends on a listening port, to the session that made each. */
  readonly dials: Map<string, S>;
  /**
   * Clients by their socket's peer, for an engine whose connect may be
   * seen to complete after the accept it caused (Deno's promises); null
   * where the local end is known before the listener can accept (native).
   */
  readonly clients: Map<string, S> | null;
}

/** A guard; `trackClients` for an engine that learns a connect's local end late. */
export function loopGuard<S extends Guarded>(trackClients: boolean): LoopGuard<S> {
  return { dials: new Map(), clients: trackClients ? new Map() : null };
}

/**
 * A socket end as text. An IPv6 socket connected to an IPv4 address sees
 * itself as `::ffff:a.b.c.d`, while the IPv4 listener that accepts it sees
 * `a.b.c.d`: both are written the IPv4 way.
 */
const endKey = (p: End) =>
  `${p.hostname.startsWith("::ffff:") ? p.hostname.slice(7) : p.hostname} ${p.port}`;

/** Listening ports per snapshot's service map (a new map each reload). */
const portsOf = new WeakMap<object, Set<number>>();

/**
 * Whether a connect to `backend` could land on one of bal's listeners:
 * its port is one of theirs (the address may be any of this machine's).
 */
export function mayLoop(
  services: ReadonlyMap<string, { port: number }>,
  backend: Pick<Backend, "port">,
): boolean {
  let ports = portsOf.get(services);
  if (!ports) portsOf.set(services, ports = new Set([...services.values()].map((s) => s.port)));
  return ports.has(backend.port);
}

/** Services whose backends could reach a listener (see {@link mayLoop}), per service object. */
const loopingServices = new WeakMap<object, boolean>();

/** Whether any backend of `service` {@link mayLoop}. */
export function serviceMayLoop(
  services: ReadonlyMap<string, { port: number }>,
  service: { backends: readonly Pick<Backend, "port">[] },
): boolean {
  let may = loopingServices.get(service);
  if (may === undefined) {
    may = service.backends.some((b) => mayLoop(services, b));
    loopingServices.set(service, may);
  }
  return may;
}

/**
 * `s` connected from `local` to a backend that {@link mayLoop}. Returns the
 * client this very connect was already accepted as, if any (the caller
 * cuts it); later arrivals are caught by {@link isOwnDial}.
 */
export function dialedFrom<S extends Guarded>(guard: LoopGuard<S>, s: S, local: End): S | null {
  const key = endKey(local);
  guard.dials.set(key, s);
  s.ownDial = key;
  return guard.clients?.get(key) ?? null;
}

/** Whether a new client's socket is one of bal's own connects. */
export function isOwnDial<S extends Guarded>(guard: LoopGuard<S>, peer: End): boolean {
  return guard.dials.size > 0 && guard.dials.has(endKey(peer));
}

/** A new client, tracked where the engine needs it. */
export function clientArrived<S extends Guarded>(guard: LoopGuard<S>, s: S, peer: End): void {
  if (!guard.clients) return;
  s.socketPeer = endKey(peer);
  guard.clients.set(s.socketPeer, s);
}

/** A session is over: the guard lets go of it. */
export function forgetSession<S extends Guarded>(guard: LoopGuard<S>, s: S): void {
  if (s.ownDial !== undefined) guard.dials.delete(s.ownDial);
  if (s.socketPeer !== undefined) guard.clients?.delete(s.socketPeer);
}
