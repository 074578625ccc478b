/**
 * Opening a TCP connection to a backend, with a timeout and a failure kind
 * that health accounting and logs can use.
 *
 * @module
 */

import type { FailureKind } from "../health/state.ts";

/**
 * Why a connect failed: the backend's side ({@link FailureKind}), or
 * `local` when this machine ran out of something (file descriptors,
 * buffers, ephemeral ports), which says nothing about the backend.
 */
export type DialFailure = FailureKind | "local";

/** Linux errno of this machine running out of something: EMFILE, ENFILE, ENOBUFS, ENOMEM. */
export const EXHAUSTION_ERRNOS: readonly number[] = [24, 23, 105, 12];
/** Linux errno of failures on bal's side: exhaustion, and EADDRNOTAVAIL (no ephemeral port). */
export const LOCAL_ERRNOS: readonly number[] = [...EXHAUSTION_ERRNOS, 99];
const LOCAL_ERRNO = new RegExp(`\\(os error (${LOCAL_ERRNOS.join("|")})\\)`);
const EXHAUSTION_ERRNO = new RegExp(`\\(os error (${EXHAUSTION_ERRNOS.join("|")})\\)`);

/**
 * Whether an error Deno threw says this machine ran out of descriptors or
 * memory: the one kind of failed accept worth backing off for. Any other
 * (a client that reset or was aborted before it was taken) is that
 * client's alone, and accepting goes on at once.
 */
export function isExhaustion(err: unknown): boolean {
  return EXHAUSTION_ERRNO.test(err instanceof Error ? err.message : String(err));
}

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
    const message = err instanceof Error ? err.message : String(err);
    throw new DialError(LOCAL_ERRNO.test(message) ? "local" : "other", message);
  } finally {
    clearTimeout(timer);
  }
}
