/**
 * The native engine's event loop: one epoll set, the handlers of its
 * descriptors by token, and one timer heap (connect and idle timeouts).
 *
 * It shares its thread with Deno's own event loop, which must stay free for
 * the control plane's messages, health checks and signals. So while events
 * keep coming it polls epoll without waiting (a synchronous call, the
 * cheapest there is), and every 2 ms, or when there is nothing to do,
 * it awaits an `epoll_wait` that runs on a helper thread: Deno's loop runs
 * meanwhile, and the answer comes back as one more of its events. An
 * eventfd in the set wakes that wait early (a stop, an earlier timer).
 *
 * Tokens, not descriptors, identify registrations: a descriptor closed
 * while its events were in flight, and its number reused by the kernel,
 * never reaches the new owner's handler.
 *
 * @module
 */
import * as sys from "../linux/ffi.ts";
import { addTimer, runDue, type Timer, timersTurn, untilNext } from "../timers.ts";

export { cancel, type Timer } from "../timers.ts";

/** Called with the epoll event mask of its descriptor. */
export type Handler = (events: number) => void;

/** The loop of one data plane. */
export interface Loop {
  /** Watches `fd` for `events`; returns its token, or -errno when epoll refuses (ENOMEM, ENOSPC). */
  add(fd: number, events: number, handler: Handler): number;
  /**
   * Changes what a registered `fd` is watched for, and optionally its
   * handler. With no events the fd leaves the epoll set (its token stays):
   * epoll reports a hang-up even to an fd watched for nothing, and
   * level-triggered, it would wake the loop until the fd is read.
   */
  modify(token: number, fd: number, events: number, handler?: Handler): void;
  /** Gives a token another handler, watching its fd as before. */
  rebind(token: number, handler: Handler): void;
  /**
   * Forgets a token whose fd the caller closes at once: closing an fd
   * takes it out of the epoll set, so no system call is spent on that.
   */
  forget(token: number): void;
  /** Calls `fn` once, at epoch ms `at` or soon after. */
  timer(at: number, fn: () => void): Timer;
  /** Ends the loop after the current round; resolves once it has ended. */
  stop(): Promise<void>;
}

/**
 * How long synchronous polling keeps the thread before Deno's loop gets a
 * turn: a count of rounds let a turn last 100 ms under load (measured with
 * `bal_event_loop_lag_seconds`), and the control plane's timers with it.
 */
const TURN_MS = 2;
/**
 * How long the loop, out of work, waits on its own thread before it hands
 * the wait to a helper thread: a TLS handshake's next flight usually comes
 * sooner, and each hand-off costs two thread switches and a wake of Deno's
 * loop (2 per handshake). Only while Deno's loop had a turn within
 * TURN_MS, so a trickle of events cannot keep it from ever running.
 */
const SETTLE_MS = 1;
/** How often a busy loop lets Deno's timers run (health checks, control plane, sweeps). */
const TIMERS_MS = 8;
/** The longest a wait lasts with no timer due (bounds how late a stop or a new timer is seen). */
const MAX_WAIT_MS = 1000;

interface State {
  readonly ep: number;
  readonly wakeFd: number;
  readonly handlers: Map<number, Handler>;
  readonly heap: Timer[];
  readonly onError: (err: unknown) => void;
  nextToken: number;
  stopped: boolean;
  /** Epoch ms the helper thread's wait ends, or 0 when none is running. */
  waitingUntil: number;
}

/**
 * Creates the loop and starts it running. Throws when epoll or eventfd
 * cannot be made. A handler or timer that throws is a bug: `onError` hears
 * of it, and the loop goes on with the others.
 */
export function createLoop(onError: (err: unknown) => void): Loop {
  const ep = sys.epollCreate();
  if (ep < 0) throw new Error(`epoll_create1 failed (errno ${-ep})`);
  const wakeFd = sys.eventFd();
  if (wakeFd < 0) {
    sys.close(ep);
    throw new Error(`eventfd failed (errno ${-wakeFd})`);
  }
  const st: State = {
    ep,
    wakeFd,
    handlers: new Map(),
    heap: [],
    onError,
    nextToken: 1,
    stopped: false,
    waitingUntil: 0,
  };
  const loop: Loop = {
    add(fd, events, handler) {
      const token = newToken(st);
      const r = sys.epollCtl(ep, sys.C.EPOLL_CTL_ADD, fd, events, token);
      if (r < 0) return r;
      st.handlers.set(token, handler);
      return token;
    },
    modify(token, fd, events, handler) {
      if (events === 0) {
        sys.epollCtl(ep, sys.C.EPOLL_CTL_DEL, fd, 0, 0);
      } else if (sys.epollCtl(ep, sys.C.EPOLL_CTL_MOD, fd, events, token) === -sys.E.ENOENT) {
        sys.epollCtl(ep, sys.C.EPOLL_CTL_ADD, fd, events, token);
      }
      if (handler) st.handlers.set(token, handler);
    },
    rebind(token, handler) {
      if (st.handlers.has(token)) st.handlers.set(token, handler);
    },
    forget(token) {
      st.handlers.delete(token);
    },
    timer(at, fn) {
      const t = addTimer(st.heap, at, fn);
      if (st.waitingUntil > 0 && at < st.waitingUntil) sys.signalEventFd(wakeFd);
      return t;
    },
    stop: () => {
      // Once: after the loop ends its eventfd is closed, and the number may belong to a socket.
      if (!st.stopped) {
        st.stopped = true;
        sys.signalEventFd(wakeFd);
      }
      return running;
    },
  };
  loop.add(wakeFd, sys.C.EPOLLIN, () => sys.clearEventFd(wakeFd));
  const running = run(st).finally(() => {
    sys.close(wakeFd);
    sys.close(ep);
  });
  return loop;
}

function newToken(st: State): number {
  // uint32 tokens, 0 never used; skip any still registered after a wrap.
  do st.nextToken = st.nextToken >= 0xffffffff ? 1 : st.nextToken + 1; while (
    st.handlers.has(st.nextToken)
  );
  return st.nextToken;
}

async function run(st: State): Promise<void> {
  const syncBuf = sys.eventBuffer(256);
  const asyncBuf = sys.eventBuffer(256);
  let timersAt = 0;
  /** When Deno's loop last had a turn (performance.now()). */
  let yieldedAt = performance.now();
  while (!st.stopped) {
    // Busy: polled without waiting, until nothing is ready or the turn is over.
    const until = performance.now() + TURN_MS;
    let busy = false;
    for (;;) {
      const n = sys.epollWait(st.ep, syncBuf, 0);
      if (n <= 0) break;
      dispatch(st, syncBuf, n);
      runDue(st.heap, st.onError);
      if (performance.now() >= until) {
        busy = true;
        break;
      }
    }
    runDue(st.heap, st.onError);
    if (st.stopped) break;
    // A helper thread's answer that is ready at once is taken before Deno's timers are looked
    // at: under load they ran 50-100 ms late. Every TIMERS_MS a busy turn lets due timers run.
    if (busy && performance.now() - timersAt >= TIMERS_MS) {
      timersAt = performance.now();
      await timersTurn();
      yieldedAt = performance.now();
      continue;
    }
    const timeout = busy ? 0 : untilNext(st.heap, MAX_WAIT_MS);
    if (!busy && timeout > 0 && performance.now() - yieldedAt < TURN_MS) {
      const n = sys.epollWait(st.ep, syncBuf, Math.min(SETTLE_MS, timeout));
      if (n > 0) {
        dispatch(st, syncBuf, n);
        continue;
      }
    }
    st.waitingUntil = Date.now() + timeout;
    const n = await sys.epollWaitAsync(st.ep, asyncBuf, timeout);
    yieldedAt = performance.now();
    st.waitingUntil = 0;
    if (n > 0) dispatch(st, asyncBuf, n);
    runDue(st.heap, st.onError);
  }
}

function dispatch(st: State, buf: sys.EventBuffer, n: number): void {
  for (let i = 0; i < n; i++) {
    // A handler earlier in this batch may have removed this one: then its token is gone.
    const handler = st.handlers.get(sys.tokenAt(buf, i));
    if (!handler) continue;
    try {
      handler(sys.eventsAt(buf, i));
    } catch (err) {
      st.onError(err);
    }
  }
}
