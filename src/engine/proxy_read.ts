/**
 * The Deno.Conn engine's inspect step: with `accept_proxy`, the PROXY
 * protocol header is read from a new client before any backend is picked,
 * within `proxy_header_timeout_ms`. What arrives after the header is kept
 * for the backend.
 *
 * @module
 */
import {
  HEADER_READ_MAX,
  type ProxyHeaderRead,
  proxyHeaderReader,
} from "../route/proxy_protocol.ts";
import { closeQuietly } from "./relay.ts";

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
  const chunk = new Uint8Array(HEADER_READ_MAX);
  const read = proxyHeaderReader();
  try {
    for (;;) {
      const n = await conn.read(chunk).catch(() => null);
      if (n === null) {
        return timedOut
          ? `no complete PROXY header within ${timeoutMs} ms`
          : "closed before a complete PROXY header";
      }
      const result = read(chunk.subarray(0, n));
      if (result !== null) return result;
    }
  } finally {
    clearTimeout(timer);
  }
}
