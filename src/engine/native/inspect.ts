/**
 * The native engine's inspect step: with `accept_proxy`, the PROXY
 * protocol header is read from a new client before any backend is picked,
 * on the loop, within `proxy_header_timeout_ms`. What arrives after the
 * header is kept for the backend.
 *
 * @module
 */
import {
  HEADER_READ_MAX,
  type ProxyHeaderRead,
  proxyHeaderReader,
} from "../../route/proxy_protocol.ts";
import * as sys from "./ffi.ts";
import { cancel, type Loop } from "./loop.ts";
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

/** Room for the longest header bal reads and one read beyond it. */
const scratch = new Uint8Array(HEADER_READ_MAX);

/**
 * Reads a PROXY header from `fd`; `done` hears once: the header, or why
 * there is none (malformed, too long, closed first, not in time). Returns
 * null when the loop would not watch the socket.
 */
export function inspectProxy(
  loop: Loop,
  fd: number,
  timeoutMs: number,
  done: (result: ProxyHeaderRead | string) => void,
): Inspection | null {
  const read = proxyHeaderReader();
  let over = false;
  let seen = 0;
  const finish = (result: ProxyHeaderRead | string) => {
    if (over) return;
    over = true;
    cancel(timer);
    done(result);
  };
  const timer = loop.timer(
    Date.now() + timeoutMs,
    () => finish(`no complete PROXY header within ${timeoutMs} ms`),
  );
  const token = loop.add(fd, RELAY_EVENTS, (ev) => {
    seen |= ev;
    while (!over) {
      const n = sys.recv(fd, scratch, scratch.length);
      if (n === -sys.E.EAGAIN) return;
      if (n === -sys.E.EINTR) continue;
      if (n <= 0) return finish(n === 0 ? "closed before a complete PROXY header" : "reset");
      const result = read(scratch.subarray(0, n));
      if (result !== null) return finish(result);
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
