/**
 * The one errno table: the Linux errno values bal meets, what each means in
 * bal's words (the same for both engines, so logs and health read alike,
 * and for file calls), and which ones are this machine's fault rather than
 * a backend's. Deno writes an errno into its messages as `(os error N)`;
 * the native engine gets it from libc.
 *
 * @module
 */

/** Linux errno values bal names. */
export const E = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EAGAIN: 11,
  EBUSY: 16,
  EEXIST: 17,
  ENOMEM: 12,
  EACCES: 13,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOSPC: 28,
  ENOSYS: 38,
  EROFS: 30,
  EPIPE: 32,
  ENAMETOOLONG: 36,
  ETIME: 62,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETUNREACH: 101,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOBUFS: 105,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EHOSTUNREACH: 113,
  EINPROGRESS: 115,
  ECANCELED: 125,
} as const;

const REASONS: Record<number, string> = {
  [E.EPERM]: "operation not permitted",
  [E.ENOSYS]: "function not implemented",
  [E.EADDRINUSE]: "address already in use",
  [E.EACCES]: "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
  [E.EADDRNOTAVAIL]: "address not available on this machine",
  [E.ECONNREFUSED]: "connection refused",
  [E.ECONNRESET]: "connection reset by peer",
  [E.EPIPE]: "broken pipe",
  [E.ETIMEDOUT]: "connection timed out",
  [E.EMFILE]: "too many open files",
  [E.ENFILE]: "too many open files in the system",
  [E.ENOBUFS]: "no buffer space available",
  [E.ENOMEM]: "out of memory",
  [E.ENETUNREACH]: "network is unreachable",
  [E.EHOSTUNREACH]: "no route to host",
  [E.ENOTDIR]: "a part of the path is a file, not a directory",
  [E.EISDIR]: "is a directory",
  [E.ENOSPC]: "no space left on the device",
  [E.EROFS]: "the file system is read-only",
  [E.ENAMETOOLONG]: "the path is too long",
};

/** This machine ran out of something: EMFILE, ENFILE, ENOBUFS, ENOMEM. */
export const EXHAUSTION_ERRNOS: readonly number[] = [E.EMFILE, E.ENFILE, E.ENOBUFS, E.ENOMEM];
/** Failures on bal's side: exhaustion, and EADDRNOTAVAIL (no ephemeral port left). */
export const LOCAL_ERRNOS: readonly number[] = [...EXHAUSTION_ERRNOS, E.EADDRNOTAVAIL];

/** `errno` in bal's words, or undefined for one it does not name. */
export function errnoReason(errno: number): string | undefined {
  return REASONS[errno];
}

/** An errno in words, with its number as Deno writes it (`(os error N)`). */
export function describeErrno(errno: number): string {
  return `${REASONS[errno] ?? "system error"} (os error ${errno})`;
}

/** The errno an error Deno threw carries (`(os error N)` in its message), or null. */
export function errnoOf(err: unknown): number | null {
  const m = /\(os error (\d+)\)/.exec(err instanceof Error ? err.message : String(err));
  return m ? Number(m[1]) : null;
}

/**
 * Whether an error says this machine ran out of descriptors or memory: the
 * one kind of failed accept worth backing off for. Any other (a client that
 * reset or was aborted before it was taken) is that client's alone.
 */
export function isExhaustion(err: unknown): boolean {
  const errno = errnoOf(err);
  return errno !== null && EXHAUSTION_ERRNOS.includes(errno);
}
