/**
 * The native engine's inspect step: what a new client must send before a
 * backend is picked (a PROXY header with `accept_proxy`, a TLS ClientHello
 * for a service with routes), read on the loop within its deadline. What
 * decides is `../inspect.ts`; this only moves the bytes into the reader.
 *
 * @module
 */
import type { Preface, PrefaceReader } from "../../route/preface.ts";
import { HELLO_MAX, type HelloRead, parseClientHello } from "../../route/client_hello.ts";
import { HEADER_READ_MAX } from "../../route/proxy_protocol.ts";
import * as sys from "./ffi.ts";
import type { Loop } from "./loop.ts";
import { RELAY_EVENTS } from "./relay.ts";

/** A client being inspected. */
export interface Inspection {
  /** The client's registration on the loop; the relay takes it over. */
  token: number;
  /**
   * Every event the socket reported while inspected: the relay starts from
   * them, since an edge (a FIN that came with the header, say) comes once.
   */
  events(): number;
  /**
   * The last read emptied the socket (a short read, no end of stream
   * seen): the relay need not read it before its next edge.
   */
  drained(): boolean;
  /** Stops reading without a verdict (the caller closes the socket). */
  stop(): void;
}

/** Room for the longest preface bal reads: a PROXY header and a ClientHello, and some. */
const scratch = new Uint8Array(HEADER_READ_MAX + HELLO_MAX);

/** How often a loop looks for inspections past their deadline, while it has any. */
const SWEEP_MS = 50;

/**
 * Inspections under way per loop, each with its timeout: swept every
 * SWEEP_MS rather than given a timer each, since nearly every client
 * sends its preface at once and a timer per connection cost measurably
 * more (two heap operations each, the heap holding every recent client).
 */
const underWay = new WeakMap<Loop, Waiting>();

/** A loop's inspections: each one's timeout and its deadline (epoch ms), and whether a sweep is due. */
interface Waiting {
  deadlines: Map<() => void, () => number>;
  sweeping: boolean;
}

function watchDeadline(loop: Loop, timeout: () => void, deadline: () => number): void {
  let waiting = underWay.get(loop);
  if (!waiting) underWay.set(loop, waiting = { deadlines: new Map(), sweeping: false });
  waiting.deadlines.set(timeout, deadline);
  if (!waiting.sweeping) {
    waiting.sweeping = true;
    loop.timer(Date.now() + SWEEP_MS, () => sweep(loop, waiting));
  }
}

function unwatch(loop: Loop, timeout: () => void): void {
  underWay.get(loop)?.deadlines.delete(timeout);
}

function sweep(loop: Loop, waiting: Waiting): void {
  const now = Date.now();
  for (const [timeout, deadline] of waiting.deadlines) {
    if (deadline() > now) continue;
    waiting.deadlines.delete(timeout);
    timeout();
  }
  waiting.sweeping = waiting.deadlines.size > 0;
  if (waiting.sweeping) loop.timer(now + SWEEP_MS, () => sweep(loop, waiting));
}

/**
 * Feeds what `fd` sends to `reader`, taking it off the socket (a PROXY
 * header is not passed on); `done` hears once: the preface, or why the
 * client is refused (see PrefaceReader). Returns null when the loop would
 * not watch the socket.
 */
export function inspectClient(
  loop: Loop,
  fd: number,
  reader: PrefaceReader,
  done: (result: Preface | string) => void,
): Inspection | null {
  let seen = 0;
  let drained = false;
  const step = (): Preface | string | null => {
    for (;;) {
      const n = sys.recv(fd, scratch, scratch.length);
      if (n === -sys.E.EAGAIN) {
        drained = !(seen & sys.C.EPOLLRDHUP);
        return null;
      }
      if (n === -sys.E.EINTR) continue;
      // A reset too: the relay that may follow sees it again.
      if (n <= 0) return reader.end("closed");
      drained = n < scratch.length && !(seen & sys.C.EPOLLRDHUP);
      const result = reader.feed(scratch.subarray(0, n), Date.now());
      if (result !== null) return result;
    }
  };
  return inspecting(loop, fd, step, {
    deadline: () => reader.deadline,
    timeout: () => reader.end("timeout"),
    done,
    saw: (ev) => seen |= ev,
    events: () => seen,
    drained: () => drained,
  });
}

/**
 * Reads a ClientHello without taking it off the socket (MSG_PEEK), so the
 * relay passes it on from the socket as it would any first bytes; `done`
 * hears once: the ClientHello's server name, or why there is none (then
 * the client goes to the default route with everything it sent).
 */
export function peekHello(
  loop: Loop,
  fd: number,
  timeoutMs: number,
  done: (result: Preface | string) => void,
): Inspection | null {
  const deadline = Date.now() + timeoutMs;
  let seen = 0;
  const preface = (hello: HelloRead): Preface => ({
    source: null,
    destination: null,
    hello,
    early: null,
  });
  const step = (): Preface | null => {
    const n = sys.peek(fd, scratch, HELLO_MAX);
    if (n === -sys.E.EAGAIN || n === -sys.E.EINTR) return null;
    if (n <= 0) return preface({ kind: "none", reason: "closed before a complete ClientHello" });
    const hello = parseClientHello(scratch.subarray(0, n));
    if (hello) return preface(hello);
    // The rest will never come: the client's stream ended.
    return seen & sys.C.EPOLLRDHUP
      ? preface({ kind: "none", reason: "closed before a complete ClientHello" })
      : null;
  };
  const timeout = () =>
    preface({ kind: "none", reason: `no complete ClientHello within ${timeoutMs} ms` });
  return inspecting(loop, fd, step, {
    deadline: () => deadline,
    timeout,
    done,
    saw: (ev) => seen |= ev,
    events: () => seen,
    // What was peeked is still there: the relay reads it first.
    drained: () => false,
  });
}

/** What an inspection does besides reading: its deadline and what it says at the end. */
interface Watch {
  deadline(): number;
  timeout(): Preface | string;
  done(result: Preface | string): void;
  /** Notes an event: the relay that follows starts from every event seen (edges come once). */
  saw(ev: number): void;
  events(): number;
  drained(): boolean;
}

/** Registers `fd` with `step` as its reader until `step` or the deadline gives a verdict. */
function inspecting(
  loop: Loop,
  fd: number,
  step: () => Preface | string | null,
  watch: Watch,
): Inspection | null {
  let over = false;
  const finish = (result: Preface | string) => {
    if (over) return;
    over = true;
    unwatch(loop, timeout);
    watch.done(result);
  };
  const timeout = () => finish(watch.timeout());
  const token = loop.add(fd, RELAY_EVENTS, (ev) => {
    watch.saw(ev);
    if (over) return;
    const result = step();
    if (result !== null) finish(result);
  });
  if (token < 0) return null;
  watchDeadline(loop, timeout, watch.deadline);
  return {
    token,
    events: watch.events,
    drained: watch.drained,
    stop() {
      over = true;
      unwatch(loop, timeout);
    },
  };
}
