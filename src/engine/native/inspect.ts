/**
 * The native engine's inspect step: with `accept_proxy`, the PROXY
 * protocol header is read from a new client before any backend is picked,
 * on the loop, within `proxy_header_timeout_ms`. What arrives after the
 * header is kept for the backend.
 *
 * @module
 */
import { type Endpoint, parseProxyHeader, V2_MAX } from "../../route/proxy_protocol.ts";
import * as sys from "./ffi.ts";
import { cancel, type Loop } from "./loop.ts";
import { RELAY_EVENTS } from "./relay.ts";

/** A header read: who the client is (null: keep the socket's peer) and what followed the header. */
export interface ProxyHeaderRead {
  source: Endpoint | null;
  destination: Endpoint | null;
  rest: Uint8Array;
}

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
const scratch = new Uint8Array(V2_MAX + 512);

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
  let got = new Uint8Array(0);
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
      const joined = new Uint8Array(got.length + n);
      joined.set(got);
      joined.set(scratch.subarray(0, n), got.length);
      got = joined;
      const r = parseProxyHeader(got);
      if (r.kind === "invalid") return finish(r.reason);
      if (r.kind === "header") {
        return finish({ source: r.source, destination: r.destination, rest: got.slice(r.length) });
      }
      if (got.length > V2_MAX) return finish(`PROXY header longer than ${V2_MAX} bytes`);
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
