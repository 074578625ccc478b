/**
 * The io_uring engine's inspect step: what a new client must send before a
 * backend is picked (a PROXY header with `accept_proxy`, a TLS ClientHello
 * for a service with routes), received into a buffer of the loop's own and
 * fed to the reader within its deadline. What decides is `../inspect.ts`.
 *
 * The kernel writes into that buffer until the receive completes, so a
 * buffer goes back to the loop's spares only then, even when the client
 * is gone before.
 *
 * @module
 */
import type { Preface, PrefaceReader } from "../../route/preface.ts";
import { HELLO_MAX } from "../../route/client_hello.ts";
import { HEADER_READ_MAX } from "../../route/proxy_protocol.ts";
import * as sys from "../linux/ffi.ts";
import { cancel, type Timer, type UringLoop, userData } from "./loop.ts";
import { prepCancel, prepRecvInto } from "./ring.ts";
import { KIND } from "./relay.ts";
import { IGNORED } from "./loop.ts";

/** A client being inspected. */
export interface Inspection {
  readonly loop: UringLoop;
  readonly fd: number;
  readonly token: number;
  readonly buf: Uint8Array;
  reader: PrefaceReader | null;
  receiving: boolean;
  timer: Timer | null;
  /** Its deadline passed while a receive was in flight: it ends when that receive does. */
  late: boolean;
  /** Over (a verdict, or bal closed the client); the token is the relay's or forgotten. */
  over: boolean;
  /** bal closed the client: the token is forgotten once no receive is in flight. */
  stopped: boolean;
  done: (result: Preface | string) => void;
}

/** Room for the longest preface bal reads: a PROXY header and a ClientHello. */
const BUFFER = HEADER_READ_MAX + HELLO_MAX;
/**
 * Buffers of finished inspections, for the next (one list per thread).
 * Kept, never dropped: a buffer the kernel was given must not be freed and
 * reused while a ring that may still write to it is torn down.
 */
const spares: Uint8Array[] = [];

function takeBuffer(): Uint8Array {
  return spares.pop() ?? new Uint8Array(BUFFER);
}

function giveBuffer(buf: Uint8Array): void {
  spares.push(buf);
}

/**
 * Feeds what the client on `fd` (its operations under `token`) sends to
 * `reader`; `done` hears once: the preface, or why the client is refused.
 */
export function inspectClient(
  loop: UringLoop,
  fd: number,
  token: number,
  reader: PrefaceReader,
  done: (result: Preface | string) => void,
): Inspection {
  const i: Inspection = {
    loop,
    fd,
    token,
    buf: takeBuffer(),
    reader,
    receiving: false,
    timer: null,
    late: false,
    over: false,
    stopped: false,
    done,
  };
  loop.rebind(token, (kind, res) => {
    if (kind === KIND.RECV) onReceived(i, res);
  });
  receive(i);
  arm(i);
  return i;
}

function receive(i: Inspection): void {
  i.receiving = true;
  prepRecvInto(i.loop.ring, i.fd, userData(i.token, KIND.RECV), i.buf, 0);
}

/** A timer at the reader's deadline (it moves on from the PROXY header to the ClientHello). */
function arm(i: Inspection): void {
  cancel(i.timer);
  const reader = i.reader;
  if (!reader) return;
  i.timer = i.loop.timer(reader.deadline, () => {
    i.late = true;
    if (i.receiving) prepCancel(i.loop.ring, userData(i.token, KIND.RECV), IGNORED);
    else verdict(i, reader.end("timeout"));
  });
}

function onReceived(i: Inspection, res: number): void {
  i.receiving = false;
  const reader = i.reader;
  if (i.over || !reader) return release(i);
  if (res > 0) {
    const result = reader.feed(i.buf.subarray(0, res), Date.now());
    if (result !== null) return verdict(i, result);
    if (i.late) return verdict(i, reader.end("timeout"));
    receive(i);
    return arm(i);
  }
  // Cancelled at the deadline; an end of stream or a reset is seen again by the relay, if any.
  verdict(i, reader.end(res === -sys.E.ECANCELED && i.late ? "timeout" : "closed"));
}

function verdict(i: Inspection, result: Preface | string): void {
  const done = i.done;
  end(i);
  done(result);
}

function end(i: Inspection): void {
  cancel(i.timer);
  i.over = true;
  i.reader = null;
  i.done = () => {};
  if (!i.receiving) release(i);
}

/** The buffer goes back to the spares, and a stopped client's token is forgotten. */
function release(i: Inspection): void {
  if (i.receiving) return;
  giveBuffer(i.buf);
  if (i.stopped) i.loop.forget(i.token);
}

/**
 * Ends an inspection without a verdict (bal closes the client): a receive
 * in flight is cancelled, and its token forgotten once it completes.
 */
export function stopInspection(i: Inspection): void {
  i.stopped = true;
  if (i.receiving) prepCancel(i.loop.ring, userData(i.token, KIND.RECV), IGNORED);
  if (i.over) {
    if (!i.receiving) i.loop.forget(i.token);
    return;
  }
  end(i);
}
