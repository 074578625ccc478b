/**
 * The unsafe code an upgrade needs, beside ffi.ts (whose libc it uses):
 * Unix sockets that carry file descriptors (`SCM_RIGHTS`), the state
 * directory's lock as a plain descriptor (so it can be handed over too),
 * and systemd's notification datagram. Every struct is laid out here, for
 * Linux on 64-bit machines (x86_64 and aarch64 share these layouts), and
 * every length is checked before the kernel sees it.
 *
 * @module
 */
import { addressOf, checkRange, libc, loadLibc, ret } from "./ffi.ts";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_SEQPACKET = 5;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const SO_RCVTIMEO = 20;
const SO_SNDTIMEO = 21;
const MSG_CTRUNC = 0x8;
const MSG_TRUNC = 0x20;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const O_RDWR = 2;
const O_CREAT = 0o100;
const O_CLOEXEC = 0o2000000;
const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

/** sizeof(struct msghdr), struct iovec and struct cmsghdr on LP64 Linux. */
const MSGHDR = 56;
const IOVEC = 16;
const CMSGHDR = 16;
/** The kernel refuses more descriptors than this in one message (SCM_MAX_FD). */
export const MAX_FDS_PER_MESSAGE = 253;
/** sun_path's size: a longer path cannot name a Unix socket. */
const SUN_PATH = 108;

const encoder = new TextEncoder();

/** A `struct sockaddr_un` for `path` (a leading `@` names Linux's abstract namespace). */
function unixAddress(path: string): Uint8Array {
  const bytes = encoder.encode(path);
  if (bytes.length === 0 || bytes.length >= SUN_PATH) {
    throw new Error(`${path} is too long for a Unix socket (${SUN_PATH - 1} bytes at most)`);
  }
  const addr = new Uint8Array(2 + bytes.length + 1);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(bytes, 2);
  // Abstract names start with a NUL and are exactly as long as given (no terminator).
  if (path.startsWith("@")) return (addr[2] = 0, addr.subarray(0, 2 + bytes.length));
  return addr;
}

function fail(what: string, r: number): never {
  throw new Error(`${what} failed (errno ${-r})`);
}

/** Sets SO_RCVTIMEO and SO_SNDTIMEO, so no call on `fd` blocks for longer than `ms`. */
function setTimeouts(fd: number, ms: number): void {
  const tv = new Uint8Array(16);
  const view = new DataView(tv.buffer);
  view.setBigInt64(0, BigInt(Math.floor(ms / 1000)), true);
  view.setBigInt64(8, BigInt((ms % 1000) * 1000), true);
  for (const opt of [SO_RCVTIMEO, SO_SNDTIMEO]) {
    const r = ret(libc().setsockopt(fd, SOL_SOCKET, opt, tv, tv.length));
    if (r < 0) fail("setsockopt", r);
  }
}

function seqpacketSocket(timeoutMs: number): number {
  loadLibc();
  const fd = ret(libc().socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (fd < 0) fail("socket", fd);
  setTimeouts(fd, timeoutMs);
  return fd;
}

/** A blocking, close-on-exec SOCK_SEQPACKET listener at `path`; calls on it time out after `timeoutMs`. */
export function listenPackets(path: string, timeoutMs: number): number {
  const fd = seqpacketSocket(timeoutMs);
  const addr = unixAddress(path);
  let r = ret(libc().bind(fd, addr, addr.byteLength));
  if (r >= 0) r = ret(libc().listen(fd, 1));
  if (r < 0) (libc().close(fd), fail(`listening on ${path}`, r));
  return fd;
}

/** Takes the one peer of a {@link listenPackets} socket, waiting up to its timeout. */
export function acceptPeer(fd: number): number {
  const r = ret(libc().accept4(fd, null, null, SOCK_CLOEXEC));
  if (r === -EWOULDBLOCK) throw new Error("nobody connected in time");
  if (r < 0) fail("accept", r);
  return r;
}

/** Connects a SOCK_SEQPACKET socket to `path`; sends on it time out after `timeoutMs`. */
export function connectPackets(path: string, timeoutMs: number): number {
  const fd = seqpacketSocket(timeoutMs);
  const addr = unixAddress(path);
  const r = ret(libc().connect(fd, addr, addr.byteLength));
  if (r < 0) (libc().close(fd), fail(`connecting to ${path}`, r));
  return fd;
}

/** A `struct msghdr` over one iovec of `data` and the control buffer `control` (may be empty). */
function messageHeader(data: Uint8Array, control: Uint8Array): Uint8Array[] {
  const iov = new Uint8Array(IOVEC);
  const iovView = new DataView(iov.buffer);
  iovView.setBigUint64(0, BigInt(addressOf(data)), true);
  iovView.setBigUint64(8, BigInt(data.byteLength), true);
  const msg = new Uint8Array(MSGHDR);
  const view = new DataView(msg.buffer);
  view.setBigUint64(16, BigInt(addressOf(iov)), true);
  view.setBigUint64(24, 1n, true);
  if (control.byteLength > 0) {
    view.setBigUint64(32, BigInt(addressOf(control)), true);
    view.setBigUint64(40, BigInt(control.byteLength), true);
  }
  // The iovec must outlive the call: returned with the header for the caller to hold.
  return [msg, iov];
}

const align8 = (n: number) => (n + 7) & ~7;

/** Sends `data` as one message carrying `fds` (at most {@link MAX_FDS_PER_MESSAGE}). */
export function sendWithFds(fd: number, data: Uint8Array, fds: readonly number[]): void {
  if (data.byteLength === 0) throw new RangeError("a message needs at least one byte");
  if (fds.length > MAX_FDS_PER_MESSAGE) throw new RangeError(`${fds.length} descriptors at once`);
  const control = new Uint8Array(fds.length ? CMSGHDR + align8(fds.length * 4) : 0);
  if (fds.length) {
    const view = new DataView(control.buffer);
    view.setBigUint64(0, BigInt(CMSGHDR + fds.length * 4), true);
    view.setInt32(8, SOL_SOCKET, true);
    view.setInt32(12, SCM_RIGHTS, true);
    fds.forEach((n, i) => view.setInt32(CMSGHDR + i * 4, n, true));
  }
  const [msg] = messageHeader(data, control);
  const r = ret(libc().sendmsg(fd, msg, MSG_NOSIGNAL));
  if (r < 0) fail("sendmsg", r);
  if (r !== data.byteLength) throw new Error(`sendmsg sent ${r} of ${data.byteLength} bytes`);
}

/** One received message: its bytes (0 at the end) and the descriptors it carried. */
export interface Received {
  bytes: number;
  fds: number[];
}

/**
 * Receives one message into `into`, with up to {@link MAX_FDS_PER_MESSAGE}
 * descriptors (close-on-exec). A message cut short, or descriptors the
 * kernel had to drop, is an error (any it did pass are closed first).
 */
export function receiveWithFds(fd: number, into: Uint8Array): Received {
  checkRange(into, into.byteLength);
  const control = new Uint8Array(CMSGHDR + align8(MAX_FDS_PER_MESSAGE * 4));
  const [msg] = messageHeader(into, control);
  const r = ret(libc().recvmsg(fd, msg, MSG_CMSG_CLOEXEC));
  if (r === -EWOULDBLOCK) throw new Error("no message in time");
  if (r < 0) fail("recvmsg", r);
  const view = new DataView(msg.buffer);
  const controlLen = Number(view.getBigUint64(40, true));
  const fds: number[] = [];
  const cview = new DataView(control.buffer);
  for (let at = 0; at + CMSGHDR <= Math.min(controlLen, control.byteLength);) {
    const len = Number(cview.getBigUint64(at, true));
    if (len < CMSGHDR || at + len > control.byteLength) break;
    if (
      cview.getInt32(at + 8, true) === SOL_SOCKET && cview.getInt32(at + 12, true) === SCM_RIGHTS
    ) {
      for (let i = at + CMSGHDR; i + 4 <= at + len; i += 4) fds.push(cview.getInt32(i, true));
    }
    at += align8(len);
  }
  const flags = view.getInt32(48, true);
  if (flags & (MSG_CTRUNC | MSG_TRUNC)) {
    for (const n of fds) libc().close(n);
    throw new Error("a hand-over message was cut short");
  }
  return { bytes: r, fds };
}

/** Closes a descriptor. */
export function closeFd(fd: number): void {
  loadLibc();
  libc().close(fd);
}

/**
 * Opens `path` (creating it, mode 0600) and takes its exclusive flock
 * without waiting: the descriptor, or null when another process holds it.
 * The same lock Deno's `FsFile.tryLock` takes, so either sees the other.
 */
export function lockPath(path: string): number | null {
  loadLibc();
  const name = encoder.encode(path + "\0");
  const fd = ret(libc().open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0o600));
  if (fd < 0) fail(`opening ${path}`, fd);
  const r = ret(libc().flock(fd, LOCK_EX | LOCK_NB));
  if (r === 0) return fd;
  libc().close(fd);
  if (r === -EWOULDBLOCK) return null;
  fail(`locking ${path}`, r);
}

/** Sends one datagram to the Unix socket at `path` (systemd's NOTIFY_SOCKET); 0 or -errno. */
export function sendDatagram(path: string, text: string): number {
  loadLibc();
  const fd = ret(libc().socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (fd < 0) return fd;
  try {
    const addr = unixAddress(path);
    const data = encoder.encode(text);
    checkRange(data, data.byteLength);
    return Math.min(
      0,
      ret(libc().sendto(fd, data, BigInt(data.byteLength), MSG_NOSIGNAL, addr, addr.byteLength)),
    );
  } finally {
    libc().close(fd);
  }
}
