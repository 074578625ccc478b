/**
 * The native engine's inspect step: what a new client must send before a
 * backend is picked (a PROXY header with `accept_proxy`, a TLS ClientHello
 * for a service with routes), read on the loop within its deadline. What
 * decides is `../inspect.ts`; this only moves the bytes into the reader.
 *
 * @module
 */
import type { Preface, PrefaceReader } from "../../route/preface.ts";
import { HELLO_MAX } from "../../route/client_hello.ts";
import { HEADER_READ_MAX } from "../../route/proxy_protocol.ts";
import * as sys from "./ffi.ts";
import { cancel, type Loop, type Timer } from "./loop.ts";
import { RELAY_EVENTS } from "./relay.ts";

/** A header being read. */
export interface Inspection {
  /** The client's registration on the loop; the relay takes it over. */
  token: number;
  /**
   * Every event the socket reported while inspected: the relay starts from
   * them, since an edge (a FIN that came with the header, say) comes once.
   */
  events(): number;
  /** Stops reading without a verdict (the caller closes the socket). */
  stop(): void;
}

/** Room for the longest preface bal reads: a PROXY header and a ClientHello, and some. */
const scratch = new Uint8Array(HEADER_READ_MAX + HELLO_MAX);

/**
 * Feeds what `fd` sends to `reader`; `done` hears once: the preface, or
 * why the client is refused (see PrefaceReader). Returns null when the
 * loop would not watch the socket.
 */
export function inspectClient(
  loop: Loop,
  fd: number,
  reader: PrefaceReader,
  done: (result: Preface | string) => void,
): Inspection | null {
  let over = false;
  let seen = 0;
  const finish = (result: Preface | string) => {
    if (over) return;
    over = true;
    cancel(timer);
    done(result);
  };
  const arm = () => loop.timer(reader.deadline, () => finish(reader.end("timeout")));
  let timer: Timer = arm();
  let armedAt = reader.deadline;
  const token = loop.add(fd, RELAY_EVENTS, (ev) => {
    seen |= ev;
    while (!over) {
      const n = sys.recv(fd, scratch, scratch.length);
      if (n === -sys.E.EAGAIN) return;
      if (n === -sys.E.EINTR) continue;
      // A reset too: the relay that may follow sees it again.
      if (n <= 0) return finish(reader.end("closed"));
      const result = reader.feed(scratch.subarray(0, n), Date.now());
      if (result !== null) return finish(result);
      if (reader.deadline !== armedAt) {
        cancel(timer);
        timer = arm();
        armedAt = reader.deadline;
      }
    }
  });
  if (token < 0) {
    cancel(timer);
    return null;
  }
  return {
    token,
    events: () => seen,
    stop() {
      over = true;
      cancel(timer);
    },
  };
}
