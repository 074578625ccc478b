/**
 * The native engine: the same sessions as the Deno.Conn engine (accept,
 * pick, dial, relay, close, with the bookkeeping of `../plane.ts`), on
 * nonblocking sockets driven by one epoll loop per data plane through libc
 * (`ffi.ts`), for a fraction of the CPU and memory per connection.
 *
 * The session's steps: {@link onClient} (the service's limit), then
 * {@link dialNext} (pick, connect with a timeout, fail over), then the relay
 * (`relay.ts`), then {@link finish}.
 *
 * @module
 */
import type { Backend } from "../../config/schema.ts";
import { isWildcard } from "../../net/address.ts";
import { episode, logger, rateLimited } from "../../log.ts";
import { describeError } from "../../errors.ts";
import type { Runtime } from "../../snapshot.ts";
import type { Engine, EngineOptions } from "../engine.ts";
import type { ServiceCounters } from "../../stats/counters.ts";
import { acceptFailed, acceptRecovered, listenerSet, type ListenSockets } from "../listeners.ts";
import {
  countersOf,
  createPlane,
  logAccess,
  type Peer,
  type Plane,
  planeEngine,
  type SessionBase,
  sweepIdle,
} from "../plane.ts";
import {
  backendHeader,
  begun,
  countEarly,
  dialed,
  dialFailed,
  noBackend,
  pick,
  relayEnded,
} from "../session.ts";
import { acceptAborted, admit, ended, started } from "../admission.ts";
import { dialFailure } from "../../net/dial.ts";
import { describeErrno, EXHAUSTION_ERRNOS } from "../../net/errno.ts";
import { dialedFrom, mayLoop } from "../self_loop.ts";
import * as sys from "./ffi.ts";
import { cancel, createLoop, type Loop, type Timer } from "./loop.ts";
import { type Relay, RELAY_EVENTS, side, startRelay } from "./relay.ts";
import { inspectClient, type Inspection, peekHello, stopInspection } from "./inspect.ts";
import { inspected, inspector, inspects } from "../inspect.ts";
import type { Preface } from "../../route/preface.ts";
import { decodeAddress, isIpLiteral } from "./sockaddr.ts";
import { listenAddress, openListener, startConnect } from "./sockets.ts";
import { type AddressBook, addressBook } from "./resolve.ts";

/** What `tried` becomes once connected: nothing more is tried, so one empty set serves all. */
const CONNECTED: Set<string> = new Set();

/** errno of a failed accept worth backing off for: the machine is out of descriptors or memory. */
const EXHAUSTED = new Set(EXHAUSTION_ERRNOS);
const log = logger("proxy");
const internalErrors = rateLimited(1000);

/** A bug in a handler: said (at most once a second), and the loop serves on. */
function loopError(err: unknown): void {
  const suppressed = internalErrors();
  if (suppressed === null) return;
  log.error("native engine: unexpected error, still serving: {error}", {
    event: "internal_error",
    error: describeError(err),
    suppressed,
  });
}

/** A connect under way. */
interface Dialing {
  fd: number;
  token: number;
  timer: Timer;
  backend: Backend;
  begun: number;
}

/** One client and what bal does with it now. */
interface Session extends SessionBase {
  readonly clientFd: number;
  readonly counters: ServiceCounters;
  /** Backends offered so far (let go once one connects). */
  tried: Set<string>;
  dialing: Dialing | null;
  relay: Relay | null;
  /** The backend it is relayed to. */
  to: Backend | null;
  finished: boolean;
  /** Its first bytes being read (PROXY header, ClientHello), or the read that took them. */
  inspection: Inspection | null;
}

/** A native data plane: the shared bookkeeping, its loop and its backends' addresses. */
interface NativePlane extends Plane<Session> {
  readonly loop: Loop;
  readonly addresses: AddressBook;
}

/** Creates the native engine; libc must be loaded (`nativeSelfCheck` in self_check.ts, run by choose.ts). */
export function createNativeEngine(runtime: Runtime, options: EngineOptions): Engine {
  sys.loadLibc();
  const loop = createLoop(loopError);
  const plane: NativePlane = Object.assign(
    createPlane<Session>(runtime, options, (s) => finish(plane, s)),
    { loop, addresses: addressBook() },
  );
  const sweep = () => loop.timer(Date.now() + sweepIdle(plane, Date.now()), sweep);
  sweep();
  const listeners = listenerSet({
    reusePort: options.reusePort,
    claimPort: options.claimPort,
    sockets: nativeSockets(
      loop,
      (service, fd, peer) => onClient(plane, service, fd, peer),
      (service, error) => acceptAborted(plane, service, error),
    ),
  });
  plane.addresses.refresh(runtime.snapshot.config);
  return planeEngine("native", plane, listeners, {
    applied: (config) => plane.addresses.refresh(config),
    stopped: () => loop.stop(),
  });
}

/** A listening socket of the native engine. */
interface NativeListener {
  fd: number;
  token: number;
  closed: () => void;
}

/**
 * Listeners on the loop: each readiness accepts a batch of clients; while
 * accepts fail for want of descriptors or memory the listener rests 50 ms
 * at a time. A client gone before it was taken (ECONNABORTED, or a network
 * error accept4 passes on) goes to `aborted`, and the batch goes on.
 */
function nativeSockets(
  loop: Loop,
  onClient: (service: string, fd: number, peer: Peer) => void,
  aborted: (service: string, error: string) => void,
): ListenSockets<NativeListener> {
  const failing = episode();
  const peerBuf = new Uint8Array(sys.SOCKADDR_MAX);
  const acceptBatch = (service: string, l: NativeListener) => {
    for (let i = 0; i < 64 && l.fd >= 0; i++) {
      const fd = sys.accept(l.fd, peerBuf);
      if (fd >= 0) {
        acceptRecovered(failing);
        onClient(service, fd, decodeAddress(peerBuf) ?? { hostname: "unknown", port: 0 });
        continue;
      }
      if (fd === -sys.E.EAGAIN) return;
      if (fd === -sys.E.EINTR) continue;
      if (!EXHAUSTED.has(-fd)) {
        aborted(service, describeErrno(-fd));
        continue;
      }
      if (failing.fail()) acceptFailed(service, describeErrno(-fd));
      loop.modify(l.token, l.fd, 0);
      loop.timer(Date.now() + 50, () => {
        if (l.fd >= 0) loop.modify(l.token, l.fd, sys.C.EPOLLIN);
      });
      return;
    }
  };
  return {
    open: (want, reusePort) => ({
      fd: openListener(want, listenAddress(want), reusePort),
      token: 0,
      closed: () => {},
    }),
    serve(service, l) {
      l.token = loop.add(l.fd, sys.C.EPOLLIN, () => acceptBatch(service, l));
      if (l.token < 0) throw new Error(`cannot watch the listener: ${describeErrno(-l.token)}`);
      return new Promise<void>((resolve) => l.closed = resolve);
    },
    close(l) {
      if (l.fd < 0) return;
      loop.forget(l.token);
      sys.close(l.fd);
      l.fd = -1;
      l.closed();
    },
  };
}

/** A new client: refused at its service's limit, else on to a backend. */
function onClient(plane: NativePlane, service: string, fd: number, peer: Peer): void {
  const counters = admit(plane, service, peer);
  if (!counters) return sys.close(fd);
  const s: Session = {
    ...begun(service, peer, Date.now()),
    clientFd: fd,
    counters,
    tried: new Set(),
    dialing: null,
    relay: null,
    to: null,
    finished: false,
    inspection: null,
  };
  started(plane, s, counters);
  const svc = plane.runtime.snapshot.services.get(service);
  if (!inspects(svc)) return dialNext(plane, s);
  const then = (read: Preface | string) => {
    if (!inspected(plane, s, read)) return finish(plane, s);
    dialNext(plane, s);
  };
  // Reads what the client sends first (PROXY header, ClientHello): it decides who and where.
  s.inspection = svc.accept_proxy
    ? inspectClient(plane.loop, s.clientFd, inspector(plane, s, svc), then)
    : peekHello(plane.loop, s.clientFd, svc.runtime.tls_hello_timeout_ms, then);
  if (!s.inspection) finish(plane, s);
}

/** What {@link boundEnd} found per service (services are frozen, one object per snapshot). */
const boundEnds = new WeakMap<object, Peer | null>();

/** bal's own end of the client's connection when its listener says it (an IP, not a wildcard). */
function boundEnd(plane: NativePlane, s: Session): Peer | null {
  const service = plane.runtime.snapshot.services.get(s.service);
  if (!service) return null;
  let end = boundEnds.get(service);
  if (end === undefined) {
    const named = !isWildcard(service.bind_address) && isIpLiteral(service.bind_address);
    end = named ? { hostname: service.bind_address, port: service.port } : null;
    boundEnds.set(service, end);
  }
  return end;
}

/** bal's own end of the client's connection, for a PROXY header's destination. */
function localEnd(fd: number): Peer | null {
  const buf = new Uint8Array(sys.SOCKADDR_MAX);
  return sys.localAddress(fd, buf) === 0 ? decodeAddress(buf) : null;
}

/** Dials the next backend the policy offers, or gives up on the client. */
function dialNext(plane: NativePlane, s: Session): void {
  if (s.finished) return;
  const service = plane.runtime.snapshot.services.get(s.service);
  if (!service) return refuse(plane, s);
  const backend = pick(plane, service, s.route, s.tried, s.peer.hostname);
  if (!backend) {
    noBackend(plane, service, s.tried.size);
    return refuse(plane, s);
  }
  const address = plane.addresses.of(backend);
  if (address instanceof Promise) {
    address.then(() => retryAfterLookup(plane, s, backend));
    return;
  }
  if (typeof address === "string") return dialFailedThen(plane, s, backend, "other", address);
  connectTo(plane, s, backend, address, performance.now());
}

/** Once a backend's name is resolved, the same pick is dialed (it still counts as active). */
function retryAfterLookup(plane: NativePlane, s: Session, backend: Backend): void {
  if (s.finished) return void countersOf(plane, backend.id).active--;
  const address = plane.addresses.of(backend);
  if (address instanceof Uint8Array) {
    return connectTo(plane, s, backend, address, performance.now());
  }
  const reason = typeof address === "string" ? address : `cannot resolve ${backend.host}`;
  dialFailedThen(plane, s, backend, "other", reason);
}

function connectTo(
  plane: NativePlane,
  s: Session,
  backend: Backend,
  address: Uint8Array,
  begun: number,
): void {
  const { fd, errno } = startConnect(address);
  if (fd < 0) {
    const f = dialFailure(errno);
    return dialFailedThen(plane, s, backend, f.kind, f.message);
  }
  // The local end is bound by connect(): known before the listener can accept it.
  if (mayLoop(plane.runtime.snapshot.services, backend)) {
    const local = localEnd(fd);
    if (local) dialedFrom(plane.loops, s, local);
  }
  const timeoutMs = plane.runtime.snapshot.services.get(s.service)?.runtime
    .backend_connect_timeout_ms ?? 0;
  const d: Dialing = { fd, token: 0, timer: null!, backend, begun };
  // Registered once for the connect and the relay after it: edge-triggered, see relay.ts.
  d.token = plane.loop.add(fd, RELAY_EVENTS, (ev) => onConnectEvent(plane, s, d, ev));
  if (d.token < 0) {
    sys.close(fd);
    return dialFailedThen(plane, s, backend, "local", describeErrno(-d.token));
  }
  d.timer = plane.loop.timer(Date.now() + timeoutMs, () => {
    abandonDial(plane, d);
    s.dialing = null;
    dialFailedThen(plane, s, backend, "timeout", `connect timed out after ${timeoutMs} ms`);
  });
  s.dialing = d;
}

function onConnectEvent(plane: NativePlane, s: Session, d: Dialing, ev: number): void {
  // Writable without an error is connected; only a failure needs SO_ERROR to say why.
  if (ev & sys.C.EPOLLOUT && !(ev & (sys.C.EPOLLERR | sys.C.EPOLLHUP))) {
    return connected(plane, s, d, ev);
  }
  const err = sys.getIntOption(d.fd, sys.C.SOL_SOCKET, sys.C.SO_ERROR);
  abandonDial(plane, d);
  s.dialing = null;
  const f = dialFailure(err > 0 ? err : sys.E.ECONNRESET);
  dialFailedThen(plane, s, d.backend, f.kind, f.message);
}

/** Stops a connect under way: its socket closed, its timer off. */
function abandonDial(plane: NativePlane, d: Dialing): void {
  cancel(d.timer);
  plane.loop.forget(d.token);
  sys.close(d.fd);
}

function dialFailedThen(
  plane: NativePlane,
  s: Session,
  backend: Backend,
  kind: Parameters<typeof dialFailed>[2],
  message: string,
): void {
  if (dialFailed(plane, backend, kind, message)) return refuse(plane, s);
  dialNext(plane, s);
}

/** The backend took the connection: relay until both directions are done. */
function connected(plane: NativePlane, s: Session, d: Dialing, events: number): void {
  cancel(d.timer);
  s.dialing = null;
  s.tried = CONNECTED;
  s.to = d.backend;
  dialed(plane, s, d.backend, performance.now() - d.begun);
  s.counters.served++;
  const counters = countersOf(plane, d.backend.id);
  const early = countEarly(s, counters);
  s.relay = {
    a: side(s.clientFd, s.inspection?.token ?? 0),
    b: side(d.fd, d.token),
    aToB: early,
    bToA: 0,
    failed: false,
    firstEnd: null,
    done: false,
    activity: s.activity,
    counters,
    onEnd: () => finish(plane, s),
  };
  const first = backendHeader(
    d.backend,
    s.peer,
    () => s.destination ?? boundEnd(plane, s) ?? localEnd(s.clientFd),
    s.early,
  );
  s.early = null;
  startRelay(plane.loop, s.relay, events, {
    events: s.inspection?.events ?? 0,
    drained: s.inspection?.drained ?? false,
  }, first);
}

/** No backend took the client: it is closed and counted. */
function refuse(plane: NativePlane, s: Session): void {
  s.counters.no_backend++;
  s.closing ??= "no_backend";
  finish(plane, s);
}

/**
 * Ends a session for whatever reason (its relay ended, no backend, or bal
 * closed it): sockets closed and forgotten, counters, the access line.
 */
function finish(plane: NativePlane, s: Session): void {
  if (s.finished) return;
  s.finished = true;
  const { loop } = plane;
  if (s.inspection) {
    stopInspection(s.inspection);
    if (!s.relay) loop.forget(s.inspection.token);
  }
  if (s.dialing) {
    abandonDial(plane, s.dialing);
    countersOf(plane, s.dialing.backend.id).active--;
    s.dialing = null;
  }
  const r = s.relay;
  if (r) {
    loop.forget(r.a.token);
    loop.forget(r.b.token);
    sys.close(r.b.fd);
  }
  sys.close(s.clientFd);
  if (r && s.to) {
    relayEnded(plane, s, s.to, {
      bytesIn: r.aToB,
      bytesOut: r.bToA,
      failed: r.failed,
      cut: !r.done,
      firstEnd: r.firstEnd,
    });
    countersOf(plane, s.to.id).active--;
  } else {
    logAccess(plane, s.service, s.peer, { ended: s.closing ?? "error", started: s.started });
  }
  ended(plane, s, s.counters);
}
