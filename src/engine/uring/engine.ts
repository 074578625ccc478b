/**
 * The io_uring engine: the sessions of `../session.ts` on one io_uring per
 * data plane (Linux 6.6 and later, where the kernel allows it). Accepts,
 * connects, receives, sends, half-closes and closes go through the ring,
 * so a connection costs no `epoll_ctl` and a busy round one system call;
 * making a socket and its options stay plain calls (`../linux/`).
 *
 * Its part of a session ({@link mechanism}): reading the first bytes
 * (`preface_read.ts`), connecting with a timeout ({@link dial}), the relay
 * (`relay.ts`) and closing; accepting is {@link uringSockets}.
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
import { inspector } from "../inspect.ts";
import { dialFailure } from "../../net/dial.ts";
import { describeErrno, EXHAUSTION_ERRNOS } from "../../net/errno.ts";
import * as sys from "../linux/ffi.ts";
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
import { cancel, createUringLoop, IGNORED, type Timer, type UringLoop, userData } from "./loop.ts";
import {
  CQE_F_MORE,
  createRing,
  enter,
  POLL,
  prepAccept,
  prepCancel,
  prepClose,
  prepConnect,
  prepPoll,
  type RingSize,
} from "./ring.ts";
import { KIND, type Relay, side, startRelay, stopRelay } from "./relay.ts";
import { gateOf } from "../throttle.ts";
import { inspectClient, type Inspection, stopInspection } from "./preface_read.ts";

/**
 * The ring of one data plane: 256 provided buffers of 64 KiB (16 MiB of
 * address space, touched only as data flows), shared by its connections;
 * 16 KiB buffers moved a bulk stream at two thirds of HAProxy's rate.
 */
export const RING_SIZE: RingSize = {
  entries: 1024,
  completions: 8192,
  buffers: 256,
  bufferSize: 64 * 1024,
};

/** errno of a failed accept worth backing off for: the machine is out of descriptors or memory. */
const EXHAUSTED = new Set(EXHAUSTION_ERRNOS);
/** The kind of a listener's accept (beside those of relay.ts). */
const ACCEPT = 4;

/** A client's token before its inspection or relay takes it: nothing of it completes yet. */
function ignore(): void {}

/** A connect under way: its socket, waited on for writability. */
interface Dialing {
  readonly fd: number;
  readonly token: number;
  timer: Timer | null;
  readonly begun: number;
  /** Connecting through the ring (completes with 0 or -errno), not polling a connect under way. */
  readonly connecting: boolean;
}

/** A connected backend socket and its token. */
interface Connected {
  fd: number;
  token: number;
}

/** One client and what bal holds for it now. */
interface Session extends LinuxSession {
  readonly clientToken: number;
  inspection: Inspection | null;
  dial: Dialing | null;
  relay: Relay | null;
}

type UringPlane = LinuxPlane<Session, UringLoop>;

/**
 * Creates the io_uring engine with a ring of `size` (tests starve its
 * buffer pool with a smaller one); throws when the kernel will not set it up.
 */
export function createUringEngine(
  runtime: Runtime,
  options: EngineOptions,
  size: RingSize = RING_SIZE,
): Engine {
  sys.loadLibc();
  const ring = createRing(size);
  if (typeof ring === "string") throw new Error(ring);
  const loop = createUringLoop(ring, loopErrors("uring"));
  return linuxEngine("uring", runtime, options, loop, {
    inspect,
    awaitConnect,
    connectsItself: true,
    relay,
    close: closeSession,
    session: (plane, base, fd): Session => ({
      ...base,
      clientFd: fd,
      clientToken: plane.loop.add(ignore),
      inspection: null,
      dial: null,
      relay: null,
    }),
    sockets: (onClient, aborted) => uringSockets(loop, onClient, aborted),
  });
}

/** How long a closed listener waits at most for its accept's last completion. */
const ACCEPT_END_MS = 1000;

/**
 * Listeners with one multishot accept each. While accepts fail for want
 * of descriptors or memory the listener rests 50 ms at a time; a client
 * gone before it was taken goes to `aborted`.
 */
function uringSockets(
  loop: UringLoop,
  onClient: OnClient,
  aborted: OnAborted,
): ListenSockets<LinuxListener> {
  const failing = episode();
  const peerBuf = new Uint8Array(sys.SOCKADDR_MAX);
  const arm = (l: LinuxListener) => prepAccept(loop.ring, l.fd, userData(l.token, ACCEPT));
  /** Resolves a closed listener's accept loop: once its last accept has completed. */
  const ended = new Map<LinuxListener, () => void>();
  const end = (l: LinuxListener) => {
    // Once: the safety timer must not forget a token the loop has handed out again.
    const resolve = ended.get(l);
    if (!resolve) return;
    ended.delete(l);
    loop.forget(l.token);
    resolve();
  };
  const take = (service: string, fd: number) => {
    const peer = sys.peerAddress(fd, peerBuf) === 0 ? decodeAddress(peerBuf) : null;
    onClient(service, fd, peer ?? { hostname: "unknown", port: 0 });
  };
  const accepted = (service: string, l: LinuxListener, res: number, flags: number) => {
    const more = (flags & CQE_F_MORE) !== 0;
    if (l.fd < 0) {
      // Closed meanwhile: a client the kernel took before the cancel is served all the same.
      // After an upgrade the socket lives on in the new bal, and letting it go was a reset.
      if (res >= 0) take(service, res);
      if (!more) end(l);
      return;
    }
    if (res >= 0) {
      acceptRecovered(failing);
      take(service, res);
    } else if (EXHAUSTED.has(-res)) {
      if (failing.fail()) acceptFailed(service, describeErrno(-res));
      if (!more) loop.timer(Date.now() + 50, () => l.fd >= 0 && arm(l));
      return;
    } else if (res !== -sys.E.ECANCELED) {
      aborted(service, describeErrno(-res));
    }
    if (!more && res !== -sys.E.ECANCELED) arm(l);
  };
  return {
    open: openLinuxListener,
    adopt: adoptLinuxListener,
    fd: (l) => l.fd,
    serve(service, l) {
      l.token = loop.add((_kind, res, flags) => accepted(service, l, res, flags));
      arm(l);
      // The loop ends at the accept's last completion, not at the close: clients the
      // kernel took until the cancel land first.
      return new Promise<void>((resolve) => ended.set(l, resolve));
    },
    close: (l) =>
      closeLinuxListener(l, () => {
        if (!l.token) return;
        // Cancelled now, not at the loop's next round: until its accept lets go of the
        // socket, closing the fd would not close the listener, and clients would still queue.
        prepCancel(loop.ring, userData(l.token, ACCEPT), IGNORED);
        enter(loop.ring, 0);
        // Should the last completion never come (the ring torn down), the loop ends anyway.
        Deno.unrefTimer(setTimeout(() => end(l), ACCEPT_END_MS));
      }),
  };
}

/** Reads the client's first bytes (a PROXY header, a ClientHello) through the ring. */
function inspect(
  plane: UringPlane,
  s: Session,
  service: Service,
  then: (read: Preface | string) => void,
): boolean {
  const reader = inspector(plane, s, service);
  s.inspection = inspectClient(plane.loop, s.clientFd, s.clientToken, reader, then);
  return true;
}

/** Hears once how a connect went. */
type Done = (outcome: DialOutcome<Connected>) => void;

/**
 * Connects `fd` to `address` through the ring, or (null: started already)
 * waits for it to be writable; either within `timeoutMs`.
 */
function awaitConnect(
  plane: UringPlane,
  s: Session,
  fd: number,
  address: Uint8Array | null,
  begun: number,
  timeoutMs: number,
  done: Done,
): void {
  const { loop } = plane;
  const d: Dialing = {
    fd,
    token: loop.add((_kind, res) => connected(plane, s, d, res, done)),
    timer: null,
    begun,
    connecting: address !== null,
  };
  // One kind for both, so a timeout cancels either: a connect completes with 0, a poll with its events.
  if (address) prepConnect(loop.ring, fd, userData(d.token, KIND.POLL), address);
  else prepPoll(loop.ring, fd, userData(d.token, KIND.POLL), POLL.OUT | POLL.ERR | POLL.HUP);
  d.timer = loop.timer(Date.now() + timeoutMs, () => {
    abandonDial(plane, s, d);
    done({ ok: false, kind: "timeout", message: `connect timed out after ${timeoutMs} ms` });
  });
  s.dial = d;
}

function connected(plane: UringPlane, s: Session, d: Dialing, res: number, done: Done): void {
  if (s.dial !== d) return;
  cancel(d.timer);
  s.dial = null;
  if (d.connecting ? res === 0 : res > 0 && !(res & (POLL.ERR | POLL.HUP))) {
    return done({ ok: true, conn: { fd: d.fd, token: d.token }, ms: performance.now() - d.begun });
  }
  const err = d.connecting ? -res : sys.getIntOption(d.fd, sys.C.SOL_SOCKET, sys.C.SO_ERROR);
  plane.loop.forget(d.token);
  sys.close(d.fd);
  done({ ok: false, ...dialFailure(err > 0 ? err : res < 0 ? -res : sys.E.ECONNRESET) });
}

/** Stops a connect under way: its wait cancelled, its socket closed, its timer off. */
function abandonDial(plane: UringPlane, s: Session, d: Dialing): void {
  cancel(d.timer);
  prepCancel(plane.loop.ring, userData(d.token, KIND.POLL), IGNORED);
  plane.loop.forget(d.token);
  sys.close(d.fd);
  s.dial = null;
}

/** The backend took the connection: relay until both directions are done. */
function relay(
  plane: UringPlane,
  s: Session,
  conn: Connected,
  header: Uint8Array | null,
  early: number,
  counters: BackendCounters,
  done: () => void,
): Relay {
  // The relay takes the client's token over from the inspection, whose receive is complete.
  s.inspection = null;
  const r: Relay = s.relay = {
    loop: plane.loop,
    a: side(s.clientFd, s.clientToken, gateOf(s.shape, true)),
    b: side(conn.fd, conn.token, gateOf(s.shape, false)),
    aToB: early,
    bToA: 0,
    failed: false,
    firstEnd: null,
    done: false,
    activity: s.activity,
    counters,
    onEnd: done,
    closed: false,
    mirror: s.mirror,
  };
  startRelay(r, header);
  return r;
}

/** Closes a session's sockets, whatever step it was at; its tokens go once nothing is in flight. */
function closeSession(plane: UringPlane, s: Session): void {
  if (s.dial) abandonDial(plane, s, s.dial);
  if (s.relay) {
    stopRelay(s.relay);
    prepClose(plane.loop.ring, s.relay.b.fd, IGNORED);
  } else if (s.inspection) {
    stopInspection(s.inspection);
  } else {
    plane.loop.forget(s.clientToken);
  }
  prepClose(plane.loop.ring, s.clientFd, IGNORED);
}
