/**
 * The native engine: the sessions of `../session.ts` on nonblocking
 * sockets driven by one epoll loop per data plane through libc (`ffi.ts`),
 * for a fraction of the CPU and memory per connection of the Deno.Conn
 * engine.
 *
 * Its part of a session ({@link mechanism}): reading the first bytes
 * (`inspect.ts`), connecting with a timeout ({@link dial}), the relay
 * (`relay.ts`) and closing; accepting is {@link nativeSockets}.
 *
 * @module
 */
import type { Backend } from "../../config/schema.ts";
import { episode, logger, rateLimited } from "../../log.ts";
import { describeError } from "../../errors.ts";
import type { Runtime } from "../../snapshot.ts";
import type { Engine, EngineOptions } from "../engine.ts";
import type { BackendCounters } from "../../stats/counters.ts";
import { acceptFailed, acceptRecovered, listenerSet, type ListenSockets } from "../listeners.ts";
import {
  createPlane,
  type Peer,
  type Plane,
  planeEngine,
  type SessionBase,
  sweepIdle,
} from "../plane.ts";
import { begun, type DialOutcome, finish, type Mechanism, serve } from "../session.ts";
import { acceptAborted, admit } from "../admission.ts";
import { dialFailure } from "../../net/dial.ts";
import { describeErrno, EXHAUSTION_ERRNOS } from "../../net/errno.ts";
import { dialedFrom, mayLoop } from "../self_loop.ts";
import * as sys from "../linux/ffi.ts";
import { cancel, createLoop, type Loop, type Timer } from "./loop.ts";
import { type Relay, RELAY_EVENTS, side, startRelay } from "./relay.ts";
import { inspectClient, type Inspection, peekHello, stopInspection } from "./preface_read.ts";
import { inspector } from "../inspect.ts";
import { decodeAddress } from "../linux/sockaddr.ts";
import { listenAddress, localEnd, openListener, startConnect } from "../linux/sockets.ts";
import { type AddressBook, addressBook } from "../linux/resolve.ts";

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
  begun: number;
}

/** One client and the sockets bal holds for it now. */
interface Session extends SessionBase {
  readonly clientFd: number;
  dial: Dialing | null;
  relay: Relay | null;
  /** Its first bytes being read (PROXY header, ClientHello), or the read that took them. */
  inspection: Inspection | null;
}

/** A native data plane: the shared bookkeeping, its loop and its backends' addresses. */
interface NativePlane extends Plane<Session> {
  readonly loop: Loop;
  readonly addresses: AddressBook;
}

/** A connected backend: its connect's socket, and the events that said it connected. */
interface Connected {
  dial: Dialing;
  events: number;
}

/** Creates the native engine; libc must be loaded (`nativeSelfCheck` in self_check.ts, run by choose.ts). */
export function createNativeEngine(runtime: Runtime, options: EngineOptions): Engine {
  sys.loadLibc();
  const loop = createLoop(loopError);
  const plane: NativePlane = Object.assign(
    createPlane<Session>(runtime, options, (s) => finish(plane, mech, s)),
    { loop, addresses: addressBook() },
  );
  const mech = mechanism(plane);
  const sweep = () => loop.timer(Date.now() + sweepIdle(plane, Date.now()), sweep);
  sweep();
  const listeners = listenerSet({
    reusePort: options.reusePort,
    claimPort: options.claimPort,
    sockets: nativeSockets(
      loop,
      (service, fd, peer) => onClient(plane, mech, service, fd, peer),
      (service, error) => acceptAborted(plane, service, error),
    ),
  });
  plane.addresses.refresh(runtime.snapshot.config);
  return planeEngine("epoll", plane, listeners, {
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

/** A new client: refused at its service's limit, else served (session.ts). */
function onClient(
  plane: NativePlane,
  mech: Mechanism<Session, Connected>,
  service: string,
  fd: number,
  peer: Peer,
): void {
  const counters = admit(plane, service, peer);
  if (!counters) return sys.close(fd);
  const s: Session = {
    ...begun(service, peer, counters, Date.now()),
    clientFd: fd,
    dial: null,
    relay: null,
    inspection: null,
  };
  serve(plane, mech, s);
}

/** The native engine's part of a session: sockets on the plane's epoll loop. */
function mechanism(plane: NativePlane): Mechanism<Session, Connected> {
  return {
    inspect(s, service, then) {
      s.inspection = service.accept_proxy
        ? inspectClient(plane.loop, s.clientFd, inspector(plane, s, service), then)
        : peekHello(plane.loop, s.clientFd, service.runtime.tls_hello_timeout_ms, then);
      return s.inspection !== null;
    },
    connect: (s, backend, timeoutMs, done) => dial(plane, s, backend, timeoutMs, done),
    relay: (s, conn, header, early, counters, done) =>
      relay(plane, s, conn, header, early, counters, done),
    localEnd: (s) => localEnd(s.clientFd),
    close: (s) => closeSession(plane, s),
  };
}

/** Hears once how a connect went. */
type Done = (outcome: DialOutcome<Connected>) => void;

/**
 * Connects to `backend`. A name not known yet is looked up first, and the
 * same pick dialed once it is (it still counts as active meanwhile).
 */
function dial(
  plane: NativePlane,
  s: Session,
  backend: Backend,
  timeoutMs: number,
  done: Done,
  lookedUp = false,
): void {
  if (s.finished) return;
  const address = plane.addresses.of(backend);
  if (address instanceof Uint8Array) return connectTo(plane, s, backend, address, timeoutMs, done);
  if (address instanceof Promise && !lookedUp) {
    address.then(() => dial(plane, s, backend, timeoutMs, done, true));
    return;
  }
  const message = typeof address === "string" ? address : `cannot resolve ${backend.host}`;
  done({ ok: false, kind: "other", message });
}

function connectTo(
  plane: NativePlane,
  s: Session,
  backend: Backend,
  address: Uint8Array,
  timeoutMs: number,
  done: Done,
): void {
  const begun = performance.now();
  const { fd, errno } = startConnect(address);
  if (fd < 0) return done({ ok: false, ...dialFailure(errno) });
  // The local end is bound by connect(): known before the listener can accept it.
  if (mayLoop(plane.runtime.snapshot.services, backend)) {
    const local = localEnd(fd);
    if (local) dialedFrom(plane.loops, s, local);
  }
  const d: Dialing = { fd, token: 0, timer: null!, begun };
  // Registered once for the connect and the relay after it: edge-triggered, see relay.ts.
  d.token = plane.loop.add(fd, RELAY_EVENTS, (ev) => onConnectEvent(plane, s, d, ev, done));
  if (d.token < 0) {
    sys.close(fd);
    return done({ ok: false, kind: "local", message: describeErrno(-d.token) });
  }
  d.timer = plane.loop.timer(Date.now() + timeoutMs, () => {
    abandonDial(plane, s, d);
    done({ ok: false, kind: "timeout", message: `connect timed out after ${timeoutMs} ms` });
  });
  s.dial = d;
}

function onConnectEvent(plane: NativePlane, s: Session, d: Dialing, ev: number, done: Done): void {
  // Writable without an error is connected; only a failure needs SO_ERROR to say why.
  if (ev & sys.C.EPOLLOUT && !(ev & (sys.C.EPOLLERR | sys.C.EPOLLHUP))) {
    cancel(d.timer);
    s.dial = null;
    return done({ ok: true, conn: { dial: d, events: ev }, ms: performance.now() - d.begun });
  }
  const err = sys.getIntOption(d.fd, sys.C.SOL_SOCKET, sys.C.SO_ERROR);
  abandonDial(plane, s, d);
  done({ ok: false, ...dialFailure(err > 0 ? err : sys.E.ECONNRESET) });
}

/** Stops a connect under way: its socket closed, its timer off. */
function abandonDial(plane: NativePlane, s: Session, d: Dialing): void {
  cancel(d.timer);
  plane.loop.forget(d.token);
  sys.close(d.fd);
  s.dial = null;
}

/** The backend took the connection: relay until both directions are done. */
function relay(
  plane: NativePlane,
  s: Session,
  { dial: d, events }: Connected,
  header: Uint8Array | null,
  early: number,
  counters: BackendCounters,
  done: () => void,
): Relay {
  const r: Relay = s.relay = {
    a: side(s.clientFd, s.inspection?.token ?? 0),
    b: side(d.fd, d.token),
    aToB: early,
    bToA: 0,
    failed: false,
    firstEnd: null,
    done: false,
    activity: s.activity,
    counters,
    onEnd: done,
  };
  startRelay(plane.loop, r, events, {
    events: s.inspection?.events ?? 0,
    drained: s.inspection?.drained ?? false,
  }, header);
  return r;
}

/** Closes and forgets a session's sockets, whatever step it was at. */
function closeSession(plane: NativePlane, s: Session): void {
  const { loop } = plane;
  if (s.inspection) {
    stopInspection(s.inspection);
    if (!s.relay) loop.forget(s.inspection.token);
  }
  if (s.dial) abandonDial(plane, s, s.dial);
  const r = s.relay;
  if (r) {
    loop.forget(r.a.token);
    loop.forget(r.b.token);
    sys.close(r.b.fd);
  }
  sys.close(s.clientFd);
}
