/**
 * The io_uring engine's event loop: one ring per data plane, the handlers
 * of its operations by token, and one timer heap.
 *
 * An operation's user data is its owner's token times 8 plus its kind, so
 * one handler serves every operation of a socket and no object is made per
 * operation. Tokens, not descriptors, identify owners: a completion for a
 * socket closed meanwhile never reaches whoever got its number next.
 *
 * Waiting: while completions keep coming the loop enters the ring without
 * blocking and hands Deno's own loop a turn every 2 ms; when nothing
 * is left it first waits up to 1 ms in the ring itself (right after work,
 * the next completion usually comes within it), then lets the kernel
 * signal an eventfd and awaits a read of it on a helper thread (a ring set
 * up for one issuer cannot be entered from another), so the thread stays
 * free for the control plane, health checks and signals.
 *
 * @module
 */
import * as sys from "../linux/ffi.ts";
import { addTimer, runDue, type Timer, timersTurn, untilNext } from "../timers.ts";
import {
  bufferTaken,
  CQE_F_BUFFER,
  enter,
  enterWaiting,
  eventFdSignals,
  giveBuffer,
  type Reap,
  registerEventFd,
  type Ring,
  widenRing,
  workPending,
} from "./ring.ts";

export { cancel, type Timer } from "../timers.ts";

/** Called with one completion of an owner's operation: its kind, result and flags. */
export type Handler = (kind: number, res: number, flags: number) => void;

/** User data of completions nobody waits for (a cancel that failed: the target was done). */
export const IGNORED = 0;

/** The loop of one data plane. */
export interface UringLoop {
  readonly ring: Ring;
  /** A token for an owner of operations, handled by `handler`. */
  add(handler: Handler): number;
  /** Gives a token another handler. */
  rebind(token: number, handler: Handler): void;
  /** Forgets a token: later completions for it only give back the buffers they hold. */
  forget(token: number): void;
  /** Calls `fn` once, at epoch ms `at` or soon after. */
  timer(at: number, fn: () => void): Timer;
  /**
   * A receive found no provided buffer: the kernel's window of them widens,
   * and `fn` is called once a buffer is there for it.
   */
  onBufferBack(fn: () => void): void;
  /** Gives a provided buffer back to the kernel. */
  giveBack(id: number): void;
  /** Ends the loop after the current round; resolves once it has ended. */
  stop(): Promise<void>;
}

/** The user data of `kind` for `token`. */
export function userData(token: number, kind: number): number {
  return token * 8 + kind;
}

/**
 * How long the loop keeps the thread while completions keep coming before
 * Deno's own loop gets a turn: a count of rounds let one turn last 100 ms
 * under load (a round can take thousands of completions), and the control
 * plane's timers with it.
 */
const TURN_MS = 2;
/** How often a busy loop lets Deno's timers run (health checks, control plane, sweeps). */
const TIMERS_MS = 8;
/** Completions taken per round, so one round cannot outlast a turn by much. */
const ROUND_MAX = 512;
/** The longest a wait lasts with no timer due (bounds how late a stop is seen). */
const MAX_WAIT_MS = 1000;
/**
 * How long an idle loop waits on its own thread before it hands the wait to
 * a helper thread (two thread switches and a wake of Deno's loop): the next
 * request of a keep-alive client usually comes within it.
 */
const SETTLE_MS = 1;

interface State {
  readonly ring: Ring;
  readonly wakeFd: number;
  readonly handlers: Map<number, Handler>;
  readonly heap: Timer[];
  readonly onError: (err: unknown) => void;
  readonly starved: (() => void)[];
  nextToken: number;
  stopped: boolean;
  waitingUntil: number;
  /** When the loop last let Deno's due timers run (performance.now()). */
  timersTurn: number;
  /** When Deno's loop last polled its own sockets (performance.now()). */
  yieldedAt: number;
  /** Completions were taken since the last wait: more are likely soon (a loop woken for nothing is not). */
  worked: boolean;
}

/** Creates the loop over `ring` and starts it. Throws when its eventfd cannot be made or registered. */
export function createUringLoop(ring: Ring, onError: (err: unknown) => void): UringLoop {
  const wakeFd = sys.eventFd(true);
  if (wakeFd < 0) throw new Error(`eventfd failed (errno ${-wakeFd})`);
  const r = registerEventFd(ring, wakeFd);
  if (r < 0) {
    sys.close(wakeFd);
    throw new Error(`io_uring eventfd registration failed (errno ${-r})`);
  }
  const st: State = {
    ring,
    wakeFd,
    handlers: new Map(),
    heap: [],
    onError,
    starved: [],
    nextToken: 1,
    stopped: false,
    waitingUntil: 0,
    timersTurn: 0,
    yieldedAt: 0,
    worked: false,
  };
  const running = run(st).finally(() => {
    // Closes and shutdowns queued by the last round (a drain's) still go out.
    enter(ring, 0);
    sys.close(ring.fd);
    sys.close(wakeFd);
  });
  return {
    ring,
    add(handler) {
      const token = newToken(st);
      st.handlers.set(token, handler);
      return token;
    },
    rebind(token, handler) {
      if (st.handlers.has(token)) st.handlers.set(token, handler);
    },
    forget: (token) => void st.handlers.delete(token),
    timer(at, fn) {
      const t = addTimer(st.heap, at, fn);
      if (st.waitingUntil > 0 && at < st.waitingUntil) sys.signalEventFd(wakeFd);
      return t;
    },
    onBufferBack(fn) {
      st.starved.push(fn);
      widenRing(st.ring.buffers);
      // Buffers posted since the kernel found its ring empty (given back earlier in this
      // round) serve it now: waiting for the next post could wait for good once every
      // other connection is idle (seen: a stream of the 16-buffer test stalled).
      rearmStarved(st, st.ring.buffers.window.posted);
    },
    giveBack: (id) => giveBack(st, id),
    stop() {
      if (!st.stopped) {
        st.stopped = true;
        sys.signalEventFd(wakeFd);
      }
      return running;
    },
  };
}

function giveBack(st: State, id: number): void {
  rearmStarved(st, giveBuffer(st.ring.buffers, id));
}

/** Receives that found no buffer are armed again, in the order they starved, once some are posted. */
function rearmStarved(st: State, posted: number): void {
  if (posted === 0 || st.starved.length === 0) return;
  const waiting = st.starved.splice(0);
  for (const fn of waiting) fn();
}

function newToken(st: State): number {
  // Tokens fit 29 bits (user data is token * 8 + kind, 32 bits); 0 is never one.
  do st.nextToken = st.nextToken >= 0x1fffffff ? 1 : st.nextToken + 1; while (
    st.handlers.has(st.nextToken)
  );
  return st.nextToken;
}

async function run(st: State): Promise<void> {
  const reap = (ud: number, res: number, flags: number) => dispatch(st, ud, res, flags);
  const counter = new Uint8Array(8);
  eventFdSignals(st.ring, false);
  while (!st.stopped) {
    if (busyTurn(st, reap)) {
      await yieldTurn(st, counter);
      continue;
    }
    await idle(st, reap, counter);
  }
}

/**
 * Busy: Deno's loop gets a turn. Through the helper thread's quick answer
 * to the eventfd, cheaply; but an answer that is ready at once is taken
 * before Deno's timers are looked at, and under load timers ran 50-100 ms
 * late that way. So every TIMERS_MS the turn lets due timers run instead.
 */
async function yieldTurn(st: State, counter: Uint8Array): Promise<void> {
  if (timersDue(st, TIMERS_MS)) {
    await timersTurn();
    return;
  }
  sys.signalEventFd(st.wakeFd);
  await sys.waitEventFd(st.wakeFd, counter);
  st.yieldedAt = performance.now();
}

/** Whether Deno's timers last had a turn `everyMs` ago or more; if so, the turn is theirs now. */
function timersDue(st: State, everyMs: number): boolean {
  const now = performance.now();
  if (now - st.timersTurn < everyMs) return false;
  st.timersTurn = now;
  return true;
}

/** Rounds of submitting and taking completions; true when the turn ran out with work left. */
function busyTurn(st: State, reap: Reap): boolean {
  const until = performance.now() + TURN_MS;
  while (!st.stopped) {
    const n = enter(st.ring, 0, reap, ROUND_MAX);
    if (n > 0) st.worked = true;
    runDue(st.heap, st.onError);
    if (n === 0 && st.ring.pending === 0 && !workPending(st.ring)) return false;
    if (performance.now() >= until) return true;
  }
  return false;
}

/** Nothing to do: the kernel may signal the eventfd; one more look, then the wait. */
async function idle(
  st: State,
  reap: Reap,
  counter: Uint8Array,
): Promise<void> {
  // Settling keeps the loop off the wait that would let timers run: they get their turn first
  // (every TIMERS_MS here left the lag sampler's timer 10-20 ms late now and then).
  if (timersDue(st, TURN_MS)) await timersTurn();
  if (settled(st, reap)) return;
  eventFdSignals(st.ring, true);
  if (enter(st.ring, 0, reap) > 0 || workPending(st.ring)) {
    eventFdSignals(st.ring, false);
    return;
  }
  const timeout = untilNext(st.heap, MAX_WAIT_MS);
  st.waitingUntil = Date.now() + timeout;
  const timer = setTimeout(() => sys.signalEventFd(st.wakeFd), timeout);
  st.ring.wake = () => sys.signalEventFd(st.wakeFd);
  await sys.waitEventFd(st.wakeFd, counter);
  st.yieldedAt = performance.now();
  st.worked = false;
  st.ring.wake = null;
  clearTimeout(timer);
  st.waitingUntil = 0;
  eventFdSignals(st.ring, false);
  runDue(st.heap, st.onError);
}

/**
 * Out of work: waits up to SETTLE_MS on this thread for a completion; true
 * when some came. Only while Deno's loop polled its sockets lately, so a
 * trickle of completions cannot shut it out, and never past a due timer of
 * the loop's own.
 */
function settled(st: State, reap: Reap): boolean {
  if (!st.worked || performance.now() - st.yieldedAt >= TURN_MS) return false;
  const timeout = untilNext(st.heap, SETTLE_MS);
  return timeout > 0 && enterWaiting(st.ring, timeout, reap, ROUND_MAX) > 0;
}

function dispatch(st: State, ud: number, res: number, flags: number): void {
  if (ud === IGNORED) return;
  // The kernel took a posted buffer: the window is refilled before anyone receives again.
  if (flags & CQE_F_BUFFER) rearmStarved(st, bufferTaken(st.ring.buffers));
  const handler = st.handlers.get(ud >>> 3);
  if (!handler) {
    // Its owner is gone; a buffer the kernel filled for it is still ours to give back.
    if (flags & CQE_F_BUFFER) giveBack(st, flags >>> 16);
    return;
  }
  try {
    handler(ud & 7, res, flags);
  } catch (err) {
    st.onError(err);
  }
}
