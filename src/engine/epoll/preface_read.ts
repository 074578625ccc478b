/**
 * The native engine's inspect step: what a new client must send before a
 * backend is picked (a PROXY header with `accept_proxy`, a TLS ClientHello
 * for a service with routes), read on the loop within its deadline. What
 * decides is `../inspect.ts`; this only moves the bytes into the reader.
 *
 * Every routed client passes through here, so an inspection is one plain
 * object and one handler: the closures and map entries an earlier version
 * made per client cost measurably more CPU and garbage per connection.
 *
 * @module
 */
import type { Preface, PrefaceReader } from "../../route/preface.ts";
import { HELLO_MAX, type HelloRead, parseClientHello } from "../../route/client_hello.ts";
import { HEADER_READ_MAX } from "../../route/proxy_protocol.ts";
import * as sys from "../linux/ffi.ts";
import type { Loop } from "./loop.ts";
import { RELAY_EVENTS } from "./relay.ts";

/** A client being inspected: what its socket showed so far, kept for the relay that follows. */
export interface Inspection {
  /** The client's registration on the loop; the relay takes it over. */
  readonly token: number;
  /** Every event the socket reported: the relay starts from them (edges come once). */
  events: number;
  /**
   * The last read emptied the socket (a short read, no end of stream
   * seen): the relay need not read it before its next edge.
   */
  drained: boolean;
}

/** What an inspection reads with, and whom it tells. */
interface Reading extends Inspection {
  token: number;
  /** Epoch ms it gives up; 0 once it is over (a verdict, or stopped). */
  until: number;
  readonly fd: number;
  /** Fed what the client sends, taken off the socket (accept_proxy); null: a ClientHello is peeked. */
  reader: PrefaceReader | null;
  /** How long a peeked ClientHello may take, for the reason a timeout gives. */
  readonly helloMs: number;
  /** Hears once: the preface, or why the client is refused (see PrefaceReader). */
  done: (result: Preface | string) => void;
}

/** Room for the longest preface bal reads: a PROXY header and a ClientHello, and some. */
const scratch = new Uint8Array(HEADER_READ_MAX + HELLO_MAX);

/** How often a loop looks for inspections past their deadline, while it has any. */
const SWEEP_MS = 50;

/**
 * Inspections under way per loop, swept every SWEEP_MS rather than given a
 * timer each: nearly every client sends its preface at once, and a timer per
 * connection cost two heap operations, the heap holding every recent client.
 */
const underWay = new WeakMap<Loop, Waiting>();

/** A loop's inspections under way, and whether a sweep is due. */
interface Waiting {
  list: Reading[];
  sweeping: boolean;
}

/**
 * Feeds what `fd` sends to `reader`, taking it off the socket (a PROXY
 * header is not passed on); `done` hears once. Returns null when the loop
 * would not watch the socket.
 */
export function inspectClient(
  loop: Loop,
  fd: number,
  reader: PrefaceReader,
  done: (result: Preface | string) => void,
): Inspection | null {
  return watch(loop, fd, reader, 0, done);
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
  return watch(loop, fd, null, timeoutMs, done);
}

/** Ends an inspection without a verdict (the caller closes the socket). */
export function stopInspection(inspection: Inspection): void {
  // Every Inspection is a Reading: this module makes them.
  end(inspection as Reading);
}

/**
 * Marks `r` over and lets go of its reader and its listener (which holds
 * the whole session): the sweep keeps `r` up to SWEEP_MS longer, and a
 * session kept that long outlives a young-generation collection or two.
 * Returns the listener, to tell.
 */
function end(r: Reading): (result: Preface | string) => void {
  const done = r.done;
  r.until = 0;
  r.reader = null;
  r.done = ignore;
  return done;
}

function ignore(): void {}

/** Registers the client with a reading of it as the handler, and its deadline with the sweep. */
function watch(
  loop: Loop,
  fd: number,
  reader: PrefaceReader | null,
  helloMs: number,
  done: (result: Preface | string) => void,
): Inspection | null {
  const until = reader ? reader.deadline : Date.now() + helloMs;
  const r: Reading = { token: 0, events: 0, drained: false, until, fd, reader, helloMs, done };
  r.token = loop.add(fd, RELAY_EVENTS, (ev) => onEvent(r, ev));
  if (r.token < 0) return null;
  let waiting = underWay.get(loop);
  if (!waiting) underWay.set(loop, waiting = { list: [], sweeping: false });
  waiting.list.push(r);
  if (!waiting.sweeping) {
    waiting.sweeping = true;
    const w = waiting;
    loop.timer(Date.now() + SWEEP_MS, () => sweep(loop, w));
  }
  return r;
}

function onEvent(r: Reading, ev: number): void {
  r.events |= ev;
  if (r.until === 0) {
    // Bytes that came after the verdict, while the backend is dialed: the
    // socket is not empty any more, and this edge will not come again.
    if (ev & sys.C.EPOLLIN) r.drained = false;
    return;
  }
  const result = r.reader ? readStep(r, r.reader) : peekStep(r);
  if (result !== null) end(r)(result);
}

/** Drops what is over and times out what is late; sweeps again while any are left. */
function sweep(loop: Loop, waiting: Waiting): void {
  const now = Date.now();
  const { list } = waiting;
  const last = list.length;
  let kept = 0;
  for (let i = 0; i < last; i++) {
    const r = list[i];
    if (r.until > now) list[kept++] = r;
    else if (r.until !== 0) {
      const result = timedOut(r);
      end(r)(result);
    }
  }
  // Inspections a verdict above started were pushed past the old end: they stay.
  for (let i = last; i < list.length; i++) list[kept++] = list[i];
  list.length = kept;
  waiting.sweeping = list.length > 0;
  if (waiting.sweeping) loop.timer(now + SWEEP_MS, () => sweep(loop, waiting));
}

function timedOut(r: Reading): Preface | string {
  return r.reader
    ? r.reader.end("timeout")
    : peeked({ kind: "none", reason: `no complete ClientHello within ${r.helloMs} ms` });
}

function peeked(hello: HelloRead): Preface {
  return { source: null, destination: null, hello, early: null };
}

/** Reads what the client sent into its reader, to the reader's verdict or an empty socket. */
function readStep(r: Reading, reader: PrefaceReader): Preface | string | null {
  for (;;) {
    const n = sys.recv(r.fd, scratch, scratch.length);
    if (n === -sys.E.EAGAIN) {
      r.drained = !(r.events & sys.C.EPOLLRDHUP);
      return null;
    }
    if (n === -sys.E.EINTR) continue;
    // A reset too: the relay that may follow sees it again.
    if (n <= 0) return reader.end("closed");
    r.drained = n < scratch.length && !(r.events & sys.C.EPOLLRDHUP);
    const result = reader.feed(scratch.subarray(0, n), Date.now());
    if (result !== null) return result;
    // The reader's deadline moves on from the PROXY header to the ClientHello.
    r.until = reader.deadline;
  }
}

/** Looks at what the client sent so far without taking it: a verdict, or null to wait for more. */
function peekStep(r: Reading): Preface | null {
  const n = sys.peek(r.fd, scratch, HELLO_MAX);
  if (n === -sys.E.EAGAIN || n === -sys.E.EINTR) return null;
  if (n <= 0) return peeked({ kind: "none", reason: "closed before a complete ClientHello" });
  const hello = parseClientHello(scratch.subarray(0, n));
  if (hello) return peeked(hello);
  // The rest will never come: the client's stream ended.
  return r.events & sys.C.EPOLLRDHUP
    ? peeked({ kind: "none", reason: "closed before a complete ClientHello" })
    : null;
}
