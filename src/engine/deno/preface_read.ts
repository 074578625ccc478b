/**
 * The Deno.Conn engine's inspect step: what a new client must send before
 * a backend is picked (a PROXY header with `accept_proxy`, a TLS
 * ClientHello for a service with routes), read within the reader's
 * deadline. What decides is `inspect.ts`; this only moves the bytes.
 *
 * @module
 */
import type { Preface, PrefaceReader } from "../../route/preface.ts";
import { HELLO_MAX } from "../../route/client_hello.ts";
import { closeQuietly, type Stream } from "../../net/stream.ts";

/** What the client's first bytes gave, and where the relay reads the client from. */
export interface PrefaceResult {
  read: Preface | string;
  /**
   * The client: the socket, or (when the deadline passed with a read still
   * pending) a stream that first hands over what that read brings, since a
   * Deno read cannot be taken back.
   */
  from: Stream;
}

const TIMEOUT = Symbol("timeout");

/**
 * Feeds what `conn` sends to `reader` until it has an answer. A client
 * refused at the deadline (no complete PROXY header) is closed here.
 */
export async function readPreface(conn: Deno.Conn, reader: PrefaceReader): Promise<PrefaceResult> {
  const chunk = new Uint8Array(HELLO_MAX);
  for (;;) {
    const pending = conn.read(chunk);
    const n = await byDeadline(pending.catch(() => null), reader.deadline);
    if (n === TIMEOUT) {
      const read = reader.end("timeout");
      if (typeof read !== "string") return { read, from: resumed(conn, pending, chunk) };
      closeQuietly(conn);
      return { read, from: conn };
    }
    // A reset is an end too: the relay that may follow sees it again.
    if (n === null) return { read: reader.end("closed"), from: conn };
    const read = reader.feed(chunk.subarray(0, n), Date.now());
    if (read !== null) return { read, from: conn };
  }
}

/** What `read` brings, or TIMEOUT once `deadline` (epoch ms) passed. */
async function byDeadline<T>(read: Promise<T>, deadline: number): Promise<T | typeof TIMEOUT> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<typeof TIMEOUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMEOUT), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([read, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** `conn`, read first through the read still pending into `chunk`. */
function resumed(conn: Deno.Conn, pending: Promise<number | null>, chunk: Uint8Array): Stream {
  let first: Promise<number | null> | null = pending;
  let left: Uint8Array | null = null;
  return {
    async read(buf) {
      if (first) {
        const n = await first;
        first = null;
        if (n === null) return null;
        left = chunk.subarray(0, n);
      }
      if (!left) return conn.read(buf);
      const k = Math.min(left.length, buf.length);
      buf.set(left.subarray(0, k));
      left = k < left.length ? left.subarray(k) : null;
      return k;
    },
    write: (bytes) => conn.write(bytes),
    closeWrite: () => conn.closeWrite(),
    close: () => conn.close(),
  };
}
