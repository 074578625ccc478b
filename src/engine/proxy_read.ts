/**
 * The Deno.Conn engine's inspect step: with `accept_proxy`, the PROXY
 * protocol header is read from a new client before any backend is picked,
 * within `proxy_header_timeout_ms`. What arrives after the header is kept
 * for the backend.
 *
 * @module
 */
import { type Endpoint, parseProxyHeader, V2_MAX } from "../route/proxy_protocol.ts";
import { closeQuietly } from "./relay.ts";

/** A header read: who the client is (null: keep the socket's peer) and what followed it. */
export interface ProxyHeaderRead {
  source: Endpoint | null;
  destination: Endpoint | null;
  rest: Uint8Array;
}

/**
 * Reads a PROXY header from `conn`: the header, or why there is none
 * (malformed, too long, closed first, not in time; the connection is closed
 * then).
 */
export async function readProxyHeader(
  conn: Deno.Conn,
  timeoutMs: number,
): Promise<ProxyHeaderRead | string> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    closeQuietly(conn);
  }, timeoutMs);
  const chunk = new Uint8Array(V2_MAX + 512);
  let got = new Uint8Array(0);
  try {
    for (;;) {
      const n = await conn.read(chunk).catch(() => null);
      if (n === null) {
        return timedOut
          ? `no complete PROXY header within ${timeoutMs} ms`
          : "closed before a complete PROXY header";
      }
      const joined = new Uint8Array(got.length + n);
      joined.set(got);
      joined.set(chunk.subarray(0, n), got.length);
      got = joined;
      const r = parseProxyHeader(got);
      if (r.kind === "invalid") return r.reason;
      if (r.kind === "header") {
        return { source: r.source, destination: r.destination, rest: got.slice(r.length) };
      }
      if (got.length > V2_MAX) return `PROXY header longer than ${V2_MAX} bytes`;
    }
  } finally {
    clearTimeout(timer);
  }
}
