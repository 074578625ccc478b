/**
 * The unsafe code UDP services need, beside ffi.ts (whose libc it uses):
 * datagram sockets, a batch of datagrams in one `recvmmsg`, and one out
 * with `send` or `sendto`. `struct mmsghdr` is laid out here for Linux on
 * 64-bit machines (x86_64 and aarch64 share it), and every length is
 * checked before the kernel sees it.
 *
 * @module
 */
import { addressOf, checkRange, libc, loadLibc, ret, SOCKADDR_MAX } from "./ffi.ts";

const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const MSG_TRUNC = 0x20;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;

/** sizeof(struct mmsghdr) and struct iovec on LP64 Linux; the offsets used in a mmsghdr. */
const MMSGHDR = 64;
const IOVEC = 16;
const NAME = 0, NAMELEN = 8, IOV = 16, IOVLEN = 24, FLAGS = 48, MSG_LEN = 56;

/** A nonblocking, close-on-exec UDP socket of `family`; fd or -errno. */
export function datagramSocket(family: number): number {
  loadLibc();
  return ret(libc().socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
}

/**
 * Room for `count` datagrams of up to `size` bytes each and their senders'
 * addresses, with the headers `recvmmsg` fills. The buffers stay referenced
 * here, so the addresses written into the headers stay valid.
 */
export interface DatagramBatch {
  readonly count: number;
  readonly size: number;
  readonly data: Uint8Array;
  readonly names: Uint8Array;
  readonly headers: Uint8Array;
  readonly iovecs: Uint8Array;
  readonly view: DataView;
}

/** A batch for `count` datagrams of `size` bytes. */
export function datagramBatch(count: number, size: number): DatagramBatch {
  if (!Number.isInteger(count) || count < 1 || count > 1024) {
    throw new RangeError(`batch of ${count}`);
  }
  if (!Number.isInteger(size) || size < 1 || size > 65536) {
    throw new RangeError(`datagrams of ${size}`);
  }
  const data = new Uint8Array(count * size);
  const names = new Uint8Array(count * SOCKADDR_MAX);
  const headers = new Uint8Array(count * MMSGHDR);
  const iovecs = new Uint8Array(count * IOVEC);
  const view = new DataView(headers.buffer);
  const iov = new DataView(iovecs.buffer);
  const base = { data: addressOf(data), names: addressOf(names), iovecs: addressOf(iovecs) };
  for (let i = 0; i < count; i++) {
    iov.setBigUint64(i * IOVEC, BigInt(base.data + i * size), true);
    iov.setBigUint64(i * IOVEC + 8, BigInt(size), true);
    const h = i * MMSGHDR;
    view.setBigUint64(h + NAME, BigInt(base.names + i * SOCKADDR_MAX), true);
    view.setBigUint64(h + IOV, BigInt(base.iovecs + i * IOVEC), true);
    view.setBigUint64(h + IOVLEN, 1n, true);
  }
  return { count, size, data, names, headers, iovecs, view };
}

/** Receives up to a batch of datagrams; how many, or -errno (-EAGAIN when none waits). */
export function receiveBatch(fd: number, batch: DatagramBatch): number {
  for (let i = 0; i < batch.count; i++) {
    batch.view.setUint32(i * MMSGHDR + NAMELEN, SOCKADDR_MAX, true);
    batch.view.setInt32(i * MMSGHDR + FLAGS, 0, true);
  }
  const n = ret(libc().recvmmsg(fd, batch.headers, batch.count, MSG_DONTWAIT, 0n));
  if (n > batch.count) throw new RangeError(`recvmmsg returned ${n} of ${batch.count}`);
  return n;
}

/** Datagram `i` of a received batch (a view: copy what is kept), and whether it was cut short. */
export function datagramAt(
  batch: DatagramBatch,
  i: number,
): { data: Uint8Array; truncated: boolean } {
  const h = i * MMSGHDR;
  const len = batch.view.getUint32(h + MSG_LEN, true);
  const truncated = (batch.view.getInt32(h + FLAGS, true) & MSG_TRUNC) !== 0 || len > batch.size;
  const at = i * batch.size;
  return { data: batch.data.subarray(at, at + Math.min(len, batch.size)), truncated };
}

/** The sender of datagram `i` of a received batch, as a socket address (a copy). */
export function senderAt(batch: DatagramBatch, i: number): Uint8Array {
  const len = Math.min(batch.view.getUint32(i * MMSGHDR + NAMELEN, true), SOCKADDR_MAX);
  return batch.names.slice(i * SOCKADDR_MAX, i * SOCKADDR_MAX + len);
}

/**
 * Datagrams waiting to go out in one `sendmmsg`: their bytes packed into
 * one arena, their destinations into fixed slots, the headers pointing
 * into both (set once: the arena and slots never move).
 */
export interface OutBatch {
  readonly count: number;
  readonly arena: Uint8Array;
  readonly names: Uint8Array;
  readonly headers: Uint8Array;
  readonly iovecs: Uint8Array;
  readonly view: DataView;
  readonly iov: DataView;
  readonly base: number;
  /** Datagrams queued, and arena bytes used. */
  queued: number;
  used: number;
}

/** Room for `count` datagrams of `arenaBytes` in all. */
export function outBatch(count: number, arenaBytes: number): OutBatch {
  if (!Number.isInteger(count) || count < 1 || count > 1024) {
    throw new RangeError(`batch of ${count}`);
  }
  if (!Number.isInteger(arenaBytes) || arenaBytes < 65536) throw new RangeError("arena too small");
  const arena = new Uint8Array(arenaBytes);
  const names = new Uint8Array(count * SOCKADDR_MAX);
  const headers = new Uint8Array(count * MMSGHDR);
  const iovecs = new Uint8Array(count * IOVEC);
  const view = new DataView(headers.buffer);
  const iov = new DataView(iovecs.buffer);
  const namesAt = addressOf(names), iovAt = addressOf(iovecs);
  for (let i = 0; i < count; i++) {
    view.setBigUint64(i * MMSGHDR + NAME, BigInt(namesAt + i * SOCKADDR_MAX), true);
    view.setBigUint64(i * MMSGHDR + IOV, BigInt(iovAt + i * IOVEC), true);
    view.setBigUint64(i * MMSGHDR + IOVLEN, 1n, true);
  }
  return {
    count,
    arena,
    names,
    headers,
    iovecs,
    view,
    iov,
    base: addressOf(arena),
    queued: 0,
    used: 0,
  };
}

/** Queues a datagram for `address`; false when the batch has no room (send it first). */
export function queueDatagram(b: OutBatch, data: Uint8Array, address: Uint8Array): boolean {
  if (address.byteLength > SOCKADDR_MAX) throw new RangeError("socket address too long");
  if (b.queued >= b.count || b.used + data.byteLength > b.arena.byteLength) return false;
  const i = b.queued++;
  b.arena.set(data, b.used);
  b.names.set(address, i * SOCKADDR_MAX);
  b.view.setUint32(i * MMSGHDR + NAMELEN, address.byteLength, true);
  b.iov.setBigUint64(i * IOVEC, BigInt(b.base + b.used), true);
  b.iov.setBigUint64(i * IOVEC + 8, BigInt(data.byteLength), true);
  b.used += data.byteLength;
  return true;
}

/**
 * Sends what is queued, in as few `sendmmsg` calls as the kernel takes;
 * returns how many were not sent (the socket's buffer was full, or an
 * error), and empties the batch either way.
 */
export function sendQueued(fd: number, b: OutBatch): number {
  let at = 0;
  let failed = 0;
  while (at < b.queued) {
    const left = b.queued - at;
    const n = ret(
      libc().sendmmsg(fd, b.headers.subarray(at * MMSGHDR), left, MSG_DONTWAIT | MSG_NOSIGNAL),
    );
    if (n > left) throw new RangeError(`sendmmsg returned ${n} of ${left}`);
    if (n > 0) at += n;
    else {
      // The first of those left failed (a full buffer, a refused destination): it is
      // dropped, and the others still go.
      failed++;
      at++;
    }
  }
  b.queued = 0;
  b.used = 0;
  return failed;
}

/** Sends one datagram to `address` (an encoded socket address); bytes sent or -errno. */
export function sendTo(fd: number, data: Uint8Array, address: Uint8Array): number {
  checkRange(address, address.byteLength);
  if (address.byteLength > SOCKADDR_MAX) throw new RangeError("socket address too long");
  // A zero-length datagram is legal; the call wants a buffer all the same.
  const buf = data.byteLength === 0 ? EMPTY : data;
  return ret(
    libc().sendto(
      fd,
      buf,
      BigInt(data.byteLength),
      MSG_DONTWAIT | MSG_NOSIGNAL,
      address,
      address.byteLength,
    ),
  );
}

/** Receives one datagram on a connected socket into `buf`; its length (cut at the buffer) or -errno. */
export function receiveOne(fd: number, buf: Uint8Array): number {
  checkRange(buf, buf.byteLength);
  return ret(libc().recv(fd, buf, BigInt(buf.byteLength), MSG_DONTWAIT | MSG_TRUNC));
}

/** Sends one datagram on a connected socket; bytes sent or -errno. */
export function sendOne(fd: number, data: Uint8Array): number {
  const buf = data.byteLength === 0 ? EMPTY : data;
  return ret(libc().send(fd, buf, BigInt(data.byteLength), MSG_DONTWAIT | MSG_NOSIGNAL));
}

const EMPTY = new Uint8Array(1);

const SOL_SOCKET = 1;
const SO_ATTACH_REUSEPORT_CBPF = 51;
/** A classic BPF program of one instruction, `ret #1`: BPF_RET | BPF_K, then k. */
const RETURN_ONE = new Uint8Array([0x06, 0, 0, 0, 1, 0, 0, 0]);

/**
 * Steers every datagram of `fd`'s SO_REUSEPORT group to its second socket,
 * the one that joined last during `bal upgrade` (the kernel numbers a
 * group's sockets in the order they joined, and falls back to its hash
 * when the program names a socket the group no longer has). The bal
 * before then gets nothing new, and can close its socket once its flows
 * are done, with no datagram queued in it. 0 or -errno.
 */
export function steerToNewest(fd: number): number {
  // struct sock_fprog: an unsigned short count, padding, then the program's address.
  const prog = new Uint8Array(16);
  const view = new DataView(prog.buffer);
  view.setUint16(0, 1, true);
  view.setBigUint64(8, BigInt(addressOf(RETURN_ONE)), true);
  return ret(libc().setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, prog, prog.byteLength));
}
