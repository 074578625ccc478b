/**
 * Opening the native engine's sockets: listeners and backend connects, and
 * what their errno values mean in bal's words (the same words and failure
 * kinds as the Deno.Conn engine's, so logs and health read alike).
 *
 * @module
 */
import * as sys from "./ffi.ts";
import { encodeAddress, familyOf, isIpLiteral, withPort } from "./sockaddr.ts";
import { type DialFailure, LOCAL_ERRNOS } from "../dial.ts";
import type { Wanted } from "../listeners.ts";

const REASONS: Record<number, string> = {
  [sys.E.EADDRINUSE]: "address already in use",
  [sys.E.EACCES]: "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
  [sys.E.EADDRNOTAVAIL]: "address not available on this machine",
  [sys.E.ECONNREFUSED]: "connection refused",
  [sys.E.ECONNRESET]: "connection reset by peer",
  [sys.E.EPIPE]: "broken pipe",
  [sys.E.ETIMEDOUT]: "connection timed out",
  [sys.E.EMFILE]: "too many open files",
  [sys.E.ENFILE]: "too many open files in the system",
  [sys.E.ENOBUFS]: "no buffer space available",
  [sys.E.ENOMEM]: "out of memory",
  101: "network is unreachable",
  113: "no route to host",
};

/** An errno in words, with its number as Deno writes it (`(os error N)`). */
export function describeErrno(errno: number): string {
  return `${REASONS[errno] ?? "system error"} (os error ${errno})`;
}

/** errno values that are this machine's fault, not the backend's (as the deno engine has them). */
const LOCAL = new Set<number>(LOCAL_ERRNOS);

/** The failure kind of a connect that failed with `errno`, and its message. */
export function dialFailure(errno: number): { kind: DialFailure; message: string } {
  if (errno === sys.E.ECONNREFUSED) return { kind: "refused", message: "connection refused" };
  if (errno === sys.E.ETIMEDOUT) return { kind: "timeout", message: describeErrno(errno) };
  return { kind: LOCAL.has(errno) ? "local" : "other", message: describeErrno(errno) };
}

/**
 * Sets TCP_NODELAY: bytes are relayed as they come, never held back to
 * coalesce. Accepted sockets inherit it from their listener, so only
 * listeners and backend sockets need the call. No SO_KEEPALIVE, as in
 * HAProxy's default: `connection_idle_timeout_ms` ends dead connections.
 */
function tune(fd: number): void {
  sys.setIntOption(fd, sys.C.IPPROTO_TCP, sys.C.TCP_NODELAY, 1);
}

/**
 * A nonblocking listening socket for `want`; throws an Error saying why in
 * a few words. The host must be an IP literal (names are resolved before).
 */
export function openListener(want: Wanted, address: Uint8Array, reusePort: boolean): number {
  const fd = sys.socket(familyOf(address));
  if (fd < 0) throw new Error(describeErrno(-fd));
  const fail = (r: number) => {
    sys.close(fd);
    throw new Error(REASONS[-r] ?? describeErrno(-r));
  };
  sys.setIntOption(fd, sys.C.SOL_SOCKET, sys.C.SO_REUSEADDR, 1);
  tune(fd);
  if (reusePort) sys.setIntOption(fd, sys.C.SOL_SOCKET, sys.C.SO_REUSEPORT, 1);
  let r = sys.bind(fd, address);
  if (r < 0) fail(r);
  r = sys.listen(fd, want.backlog);
  if (r < 0) fail(r);
  return fd;
}

/** The socket address a listener binds: an IP as it is, a name as the system resolves it first. */
export function listenAddress(want: Wanted): Uint8Array {
  if (isIpLiteral(want.bind_address)) return encodeAddress(want.bind_address, want.port);
  const found = sys.resolveSync(want.bind_address);
  if (found.length === 0) throw new Error(`${want.bind_address} has no address`);
  return withPort(found[0], want.port);
}

/**
 * Starts a nonblocking connect to an encoded address: the fd and 0 when
 * connected already, the fd and EINPROGRESS when under way, or -1 and the
 * errno when it failed at once (the fd is closed then).
 */
export function startConnect(address: Uint8Array): { fd: number; errno: number } {
  const fd = sys.socket(familyOf(address));
  if (fd < 0) return { fd: -1, errno: -fd };
  tune(fd);
  const r = sys.connect(fd, address);
  if (r === 0 || r === -sys.E.EINPROGRESS) return { fd, errno: -r };
  sys.close(fd);
  return { fd: -1, errno: -r };
}
