/**
 * Opening a TCP connection to a backend, with a timeout and a failure kind
 * that health accounting and logs can use.
 *
 * @module
 */

/** Why a connect failed. */
export type DialFailure = "timeout" | "refused" | "other";

/** A connect that failed, with its kind. */
export class DialError extends Error {
  readonly kind: DialFailure;

  constructor(kind: DialFailure, message: string) {
    super(message);
    this.name = "DialError";
    this.kind = kind;
  }
}

/**
 * Connects to `host:port`, failing with a {@link DialError} of kind
 * `timeout` after `timeoutMs`. The socket has TCP_NODELAY and keep-alive on.
 */
export async function dial(host: string, port: number, timeoutMs: number): Promise<Deno.TcpConn> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const conn = await Deno.connect({ hostname: host, port, signal: abort.signal });
    conn.setNoDelay(true);
    conn.setKeepAlive(true);
    return conn;
  } catch (err) {
    if (abort.signal.aborted) {
      throw new DialError("timeout", `connect timed out after ${timeoutMs} ms`);
    }
    if (err instanceof Deno.errors.ConnectionRefused) {
      throw new DialError("refused", "connection refused");
    }
    throw new DialError("other", err instanceof Error ? err.message : String(err));
  } finally {
    clearTimeout(timer);
  }
}
