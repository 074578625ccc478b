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
import type { Service } from "../../config/schema.ts";
import type { Preface } from "../../route/preface.ts";
import { episode } from "../../log.ts";
import type { Runtime } from "../../snapshot.ts";
import type { Engine, EngineOptions } from "../engine.ts";
import type { BackendCounters } from "../../stats/counters.ts";
import { acceptFailed, acceptRecovered, type ListenSockets } from "../listeners.ts";
import type { DialOutcome } from "../session.ts";
import { dialFailure } from "../../net/dial.ts";
import { describeErrno, EXHAUSTION_ERRNOS } from "../../net/errno.ts";
import * as sys from "../linux/ffi.ts";
import { cancel, createLoop, type Loop, type Timer } from "./loop.ts";
import { type Relay, RELAY_EVENTS, side, startRelay } from "./relay.ts";
import { gateOf } from "../throttle.ts";
import { inspectClient, type Inspection, peekHello, stopInspection } from "./preface_read.ts";
import { inspector } from "../inspect.ts";
import { refuse } from "../admission.ts";
import { secure, type Securing, stopSecuring } from "./tls_accept.ts";
import { decodeAddress } from "../linux/sockaddr.ts";
import {
  adoptLinuxListener,
  closeLinuxListener,
  linuxEngine,
  type LinuxListener,
  type LinuxPlane,
  type LinuxSession,
  loopErrors,
  type OnAborted,
  type OnClient,
  openLinuxListener,
} from "../linux/linux_engine.ts";

/** errno of a failed accept worth backing off for: the machine is out of descriptors or memory. */
const EXHAUSTED = new Set(EXHAUSTION_ERRNOS);

/** A connect under way. */
interface Dialing {
  fd: number;
  token: number;
  timer: Timer;
  begun: number;
}

/** One client and the sockets bal holds for it now. */
interface Session extends LinuxSession {
  dial: Dialing | null;
  relay: Relay | null;
  /** Its first bytes being read (PROXY header, ClientHello), or the read that took them. */
  inspection: Inspection | null;
  /** Its TLS handshake (a service with `tls:`), under way or done. */
  secure: Securing | null;
}

type NativePlane = LinuxPlane<Session, Loop>;

/** A connected backend: its connect's socket, and the events that said it connected. */
interface Connected {
  dial: Dialing;
  events: number;
}

/** Creates the epoll engine; libc must be loaded (`nativeSelfCheck` in self_check.ts, run by choose.ts). */
export function createNativeEngine(runtime: Runtime, options: EngineOptions): Engine {
  sys.loadLibc();
  const loop = createLoop(loopErrors("epoll"));
  return linuxEngine("epoll", runtime, options, loop, {
    inspect,
    awaitConnect,
    connectsItself: false,
    relay,
    close: closeSession,
    session: (_plane, base, fd): Session => ({
      ...base,
      clientFd: fd,
      dial: null,
      relay: null,
      inspection: null,
      secure: null,
    }),
    sockets: (onClient, aborted) => nativeSockets(loop, onClient, aborted),
  });
}

/**
 * Listeners on the loop: each readiness accepts a batch of clients; while
 * accepts fail for want of descriptors or memory the listener rests 50 ms
 * at a time. A client gone before it was taken (ECONNABORTED, or a network
 * error accept4 passes on) goes to `aborted`, and the batch goes on.
 */
function nativeSockets(
  loop: Loop,
  onClient: OnClient,
  aborted: OnAborted,
): ListenSockets<LinuxListener> {
  const failing = episode();
  const peerBuf = new Uint8Array(sys.SOCKADDR_MAX);
  const acceptBatch = (service: string, l: LinuxListener) => {
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
    open: openLinuxListener,
    adopt: adoptLinuxListener,
    fd: (l) => l.fd,
    serve(service, l) {
      l.token = loop.add(l.fd, sys.C.EPOLLIN, () => acceptBatch(service, l));
      if (l.token < 0) throw new Error(`cannot watch the listener: ${describeErrno(-l.token)}`);
      return new Promise<void>((resolve) => l.closed = resolve);
    },
    // Out of the epoll set first: a handed-over socket stays open in the next bal, and
    // closing our descriptor alone would leave it in our set, waking this loop.
    close: (l) =>
      closeLinuxListener(l, () => {
        if (!l.token) return;
        loop.modify(l.token, l.fd, 0);
        loop.forget(l.token);
      }),
  };
}

/** Reads the client's first bytes: a PROXY header taken off the socket, or a ClientHello peeked. */
function inspect(
  plane: NativePlane,
  s: Session,
  service: Service,
  then: (read: Preface | string) => void,
): boolean {
  if (service.tls) return inspectTls(plane, s, service, then);
  s.inspection = service.accept_proxy
    ? inspectClient(plane.loop, s.clientFd, inspector(plane, s, service), then)
    : peekHello(plane.loop, s.clientFd, service.runtime.tls_hello_timeout_ms, then);
  return s.inspection !== null;
}

/**
 * The TLS handshake of a client of a service that terminates it, after
 * its PROXY header when the service takes one. A failed handshake is
 * refused here (`tls_handshake`): `then` hears "" for it.
 */
function inspectTls(
  plane: NativePlane,
  s: Session,
  service: Service,
  then: (read: Preface | string) => void,
): boolean {
  const handshake = (proxied: Preface | null, token: number) => {
    s.secure = secure(plane.loop, s.clientFd, token, service, proxied, (result) => {
      if (typeof result !== "string") {
        s.tls = result.facts;
        if (!result.left) return then(result.preface);
        s.closing = "client_closed";
        return then("");
      }
      refuse(plane, service, s.peer, "tls_handshake", result, false);
      s.closing = "tls_handshake";
      then("");
    });
    return s.secure !== null;
  };
  if (!service.accept_proxy) return handshake(null, 0);
  s.inspection = inspectClient(plane.loop, s.clientFd, inspector(plane, s, service), (read) => {
    if (typeof read === "string") return then(read);
    handshake(read, s.inspection!.token);
  });
  return s.inspection !== null;
}

/** Hears once how a connect went. */
type Done = (outcome: DialOutcome<Connected>) => void;

/** Waits on the loop for a connect started on `fd` to finish, within `timeoutMs`. */
function awaitConnect(
  plane: NativePlane,
  s: Session,
  fd: number,
  _address: null,
  begun: number,
  timeoutMs: number,
  done: Done,
): void {
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
  const first = s.secure ?? s.inspection;
  const r: Relay = s.relay = {
    a: side(s.clientFd, first?.token ?? 0, gateOf(s.shape, true), s.secure?.tls ?? null),
    b: side(d.fd, d.token, gateOf(s.shape, false)),
    aToB: early,
    bToA: 0,
    failed: false,
    firstEnd: null,
    done: false,
    activity: s.activity,
    counters,
    onEnd: done,
    mirror: s.mirror,
  };
  // OpenSSL may hold bytes it read past the handshake: a TLS client is read at once.
  startRelay(plane.loop, r, events, {
    events: first?.events ?? 0,
    drained: s.secure === null && (s.inspection?.drained ?? false),
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
  if (s.secure) {
    stopSecuring(s.secure);
    if (!s.relay) loop.forget(s.secure.token);
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
