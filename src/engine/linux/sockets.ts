/**
 * Opening the native engine's sockets: listeners and backend connects, and
 * what their errno values mean in bal's words (the same words and failure
 * kinds as the Deno.Conn engine's, so logs and health read alike).
 *
 * @module
 */
import * as sys from "./ffi.ts";
import { resolveSync } from "./getaddrinfo.ts";
import { decodeAddress, encodeAddress, familyOf, isIpLiteral, withPort } from "./sockaddr.ts";
import type { Peer } from "../plane.ts";
import { describeErrno, errnoReason } from "../../net/errno.ts";
import type { Wanted } from "../listeners.ts";

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
    throw new Error(errnoReason(-r) ?? describeErrno(-r));
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
  const found = resolveSync(want.bind_address);
  if (found.length === 0) throw new Error(`${want.bind_address} has no address`);
  return withPort(found[0], want.port);
}

/**
 * Starts a nonblocking connect to an encoded address: the fd and 0 when
 * connected already, the fd and EINPROGRESS when under way, or -1 and the
 * errno when it failed at once (the fd is closed then).
 */
export function startConnect(address: Uint8Array): { fd: number; errno: number } {
  const fd = dialSocket(address);
  if (fd < 0) return { fd: -1, errno: -fd };
  const r = sys.connect(fd, address);
  if (r === 0 || r === -sys.E.EINPROGRESS) return { fd, errno: -r };
  sys.close(fd);
  return { fd: -1, errno: -r };
}

/** A nonblocking socket for dialing `address`, tuned as a backend's, not connected yet; or -errno. */
export function dialSocket(address: Uint8Array): number {
  const fd = sys.socket(familyOf(address));
  if (fd >= 0) tune(fd);
  return fd;
}

/** A socket's own end (bal's end of a client's connection), or null when the kernel will not say. */
export function localEnd(fd: number): Peer | null {
  const buf = new Uint8Array(sys.SOCKADDR_MAX);
  return sys.localAddress(fd, buf) === 0 ? decodeAddress(buf) : null;
}
