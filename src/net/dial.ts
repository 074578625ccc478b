/**
 * Opening a TCP connection to a backend, with a timeout and a failure kind
 * that health accounting and logs can use.
 *
 * @module
 */

import { describeErrno, E, errnoOf, LOCAL_ERRNOS } from "./errno.ts";

/** Why a connect failed, as health accounting counts it (`tls`: its TLS handshake, `backend_tls:`). */
export type FailureKind = "timeout" | "refused" | "tls" | "other";

/**
 * Why a connect failed: the backend's side ({@link FailureKind}), or
 * `local` when this machine ran out of something (file descriptors,
 * buffers, ephemeral ports), which says nothing about the backend.
 */
export type DialFailure = FailureKind | "local";

/** The failure kind of a connect that failed with `errno`, and its message in bal's words. */
export function dialFailure(errno: number): { kind: DialFailure; message: string } {
  if (errno === E.ECONNREFUSED) return { kind: "refused", message: "connection refused" };
  return { kind: failureKind(errno), message: describeErrno(errno) };
}

function failureKind(errno: number): DialFailure {
  if (errno === E.ECONNREFUSED) return "refused";
  if (errno === E.ETIMEDOUT) return "timeout";
  return LOCAL_ERRNOS.includes(errno) ? "local" : "other";
}

/** A connect that failed, with its kind. */
export class DialError extends Error {
  readonly kind: DialFailure;

  constructor(kind: DialFailure, message: string, options?: ErrorOptions) {
    super(message, options);
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
      throw new DialError("timeout", `connect timed out after ${timeoutMs} ms`, { cause: err });
    }
    if (err instanceof Deno.errors.ConnectionRefused) {
      throw new DialError("refused", "connection refused", { cause: err });
    }
    const message = err instanceof Error ? err.message : String(err);
    throw new DialError(failureKind(errnoOf(err) ?? 0), message, { cause: err });
  } finally {
    clearTimeout(timer);
  }
}
