/**
 * The module that loads libc; with getaddrinfo.ts and ffi_unix.ts, the only
 * code that calls it. Symbol signatures, struct layouts, pointers and lengths live here.
 * Every buffer handed to the kernel is checked against the length passed
 * with it, so a bug elsewhere becomes an exception, never a write out of
 * bounds. Calls return the result or `-errno`, as the kernel does, so the
 * hot path neither throws nor allocates.
 *
 * Linux only (x86_64 and aarch64): the constants are Linux's, the same on
 * both; `struct epoll_event` is packed on x86_64 only.
 *
 * @module
 */

/** Linux constants the engine uses (net/linux.ts), and the errno values it tells apart (net/errno.ts). */
export { C } from "../../net/linux.ts";
export { E } from "../../net/errno.ts";
import {
  EFD_FLAGS,
  MSG_NOSIGNAL,
  MSG_PEEK,
  SHUT_WR,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
} from "../../net/linux.ts";

/** Largest socket address we read or write (sizeof struct sockaddr_storage). */
export const SOCKADDR_MAX = 128;

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  // ssize_t results are read as their low 32 bits: checkRange keeps every length below 2^31.
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "i32" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  epoll_wait_async: {
    name: "epoll_wait",
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  getaddrinfo: { parameters: ["buffer", "buffer", "buffer", "buffer"], result: "i32" },
  getaddrinfo_async: {
    name: "getaddrinfo",
    parameters: ["buffer", "buffer", "buffer", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  freeaddrinfo: { parameters: ["usize"], result: "void" },
  __errno_location: { parameters: [], result: "usize" },
  // Addresses travel as integers and memory is read by copying it into our
  // buffers: Deno's pointer objects and views need --allow-ffi for every
  // path, while calls into a library need it for that library only.
  memcpy: { parameters: ["buffer", "usize", "usize"], result: "void" },
  // memmove(b, b, 0) returns b: the address of a buffer, without a pointer object.
  memmove: { parameters: ["buffer", "buffer", "usize"], result: "usize" },
  // The length of a C string OpenSSL returns, before copying it (ffi_ssl.ts).
  strnlen: { parameters: ["usize", "usize"], result: "usize" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  // glibc's; musl has none, so it may be missing (instance/heap_trim.ts).
  malloc_trim: { parameters: ["usize"], result: "i32", optional: true },
  read_async: {
    name: "read",
    parameters: ["i32", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  // Unix sockets, descriptor passing and the instance lock (ffi_unix.ts).
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "i32" },
  // UDP services' batches (ffi_udp.ts); the timeout pointer is always null.
  recvmmsg: { parameters: ["i32", "buffer", "u32", "i32", "usize"], result: "i32" },
  sendmmsg: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  flock: { parameters: ["i32", "i32"], result: "i32" },
  // io_uring's calls (syscall(2); every argument but the number fits 32 bits or is a buffer).
  uring_setup: { name: "syscall", parameters: ["i64", "u32", "buffer"], result: "i32" },
  uring_enter: {
    name: "syscall",
    parameters: ["i64", "i32", "u32", "u32", "u32", "usize", "usize"],
    result: "i32",
  },
  uring_register: {
    name: "syscall",
    parameters: ["i64", "i32", "u32", "buffer", "u32"],
    result: "i32",
  },
} as const;

/** Where libc lives, by architecture (Debian's multiarch paths, then the loader's search). */
const LIBC_PATHS: Record<string, string[]> = {
  x86_64: ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib64/libc.so.6", "libc.so.6"],
  aarch64: ["/lib/aarch64-linux-gnu/libc.so.6", "/usr/lib64/libc.so.6", "libc.so.6"],
};

/**
 * `size_t` parameters take bigints: a number takes Deno's slow path, and
 * deoptimized its caller (measured: hundreds of deoptimizations a minute
 * under load, 0.4 µs more per call). `BigInt(len)` is cheap beside that.
 */
type Lib = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let lib: Lib | null = null;
/** Address of this thread's errno. */
let errnoAddress = 0n;
/** sizeof(struct epoll_event): packed on x86_64, padded elsewhere. */
let eventSize = 16;
let eventDataOffset = 8;

/**
 * Loads libc once per thread. Throws an Error saying why when this is not
 * Linux on x86_64 or aarch64, or libc cannot be opened (`--allow-ffi`).
 */
export function loadLibc(): void {
  if (lib) return;
  const paths = LIBC_PATHS[Deno.build.arch];
  if (Deno.build.os !== "linux" || !paths) {
    throw new Error(`the native engine needs Linux on x86_64 or aarch64, not ${Deno.build.target}`);
  }
  let lastError: unknown;
  for (const path of paths) {
    try {
      lib = Deno.dlopen(path, SYMBOLS).symbols as unknown as Lib;
      break;
    } catch (err) {
      lastError = err;
    }
  }
  if (!lib) {
    const why = lastError instanceof Error ? lastError.message : "";
    throw new Error(`cannot load libc: ${why}`, { cause: lastError });
  }
  if (Deno.build.arch === "x86_64") [eventSize, eventDataOffset] = [12, 4];
  errnoAddress = BigInt(lib.__errno_location());
  if (!errnoAddress) throw new Error("cannot find errno");
}

/** The loaded libc (for getaddrinfo.ts and ffi_unix.ts, the rest of this unsafe code). */
export function libc(): Lib {
  if (!lib) throw new Error("libc is not loaded: call loadLibc() first");
  return lib;
}

/** The calling thread's errno (sync calls only: a nonblocking call runs on another thread). */
function errno(): number {
  copyFrom(errnoAddress, errnoBuf, ERRNO_SIZE);
  return errnoView.getInt32(0, true);
}

const ERRNO_SIZE = 4;
const errnoBuf = new Uint8Array(ERRNO_SIZE);
const errnoView = new DataView(errnoBuf.buffer);

/** Copies `len` bytes at address `from` into the start of `into`. */
export function copyFrom(from: bigint, into: Uint8Array, len: number): void {
  checkRange(into, len);
  if (!from) throw new RangeError("null address");
  libc().memcpy(into, from, BigInt(len));
}

/** A result as the kernel gives it: the value, or `-errno` (sync calls only). */
export function ret(r: number): number {
  return r < 0 ? -errno() : r;
}

/** The most one call moves: its count comes back as a 32-bit int (see SYMBOLS). */
const CALL_MAX = 0x7fffffff;

/** Throws unless `len` bytes fit in `buf` and in one call. */
export function checkRange(buf: Uint8Array, len: number): void {
  if (!Number.isInteger(len) || len < 0 || len > buf.byteLength || len > CALL_MAX) {
    throw new RangeError(`length ${len} is outside a buffer of ${buf.byteLength} bytes`);
  }
}

const intBuf = new Uint8Array(4);
const intView = new DataView(intBuf.buffer);
const lenBuf = new Uint8Array(4);
const lenView = new DataView(lenBuf.buffer);

/** A nonblocking, close-on-exec TCP socket of `family`; fd or -errno. */
export function socket(family: number): number {
  return ret(libc().socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
}

/** Sets an int socket option; 0 or -errno. */
export function setIntOption(fd: number, level: number, name: number, value: number): number {
  intView.setInt32(0, value, true);
  return ret(libc().setsockopt(fd, level, name, intBuf, 4));
}

/** Reads an int socket option (SO_ERROR); the value, or -errno when the call itself failed. */
export function getIntOption(fd: number, level: number, name: number): number {
  lenView.setUint32(0, 4, true);
  const r = ret(libc().getsockopt(fd, level, name, intBuf, lenBuf));
  return r < 0 ? r : intView.getInt32(0, true);
}

/** Binds to an encoded socket address; 0 or -errno. */
export function bind(fd: number, addr: Uint8Array): number {
  checkRange(addr, addr.byteLength);
  return ret(libc().bind(fd, addr, addr.byteLength));
}

/** Starts listening; 0 or -errno. */
export function listen(fd: number, backlog: number): number {
  return ret(libc().listen(fd, backlog));
}

/**
 * Accepts one client as a nonblocking, close-on-exec socket, writing its
 * address into `peer` (at least {@link SOCKADDR_MAX} bytes); fd or -errno.
 */
export function accept(fd: number, peer: Uint8Array): number {
  if (peer.byteLength < SOCKADDR_MAX) throw new RangeError("peer buffer too small");
  lenView.setUint32(0, SOCKADDR_MAX, true);
  return ret(libc().accept4(fd, peer, lenBuf, SOCK_NONBLOCK | SOCK_CLOEXEC));
}

/** Starts connecting to an encoded address; 0, or -EINPROGRESS, or another -errno. */
export function connect(fd: number, addr: Uint8Array): number {
  checkRange(addr, addr.byteLength);
  return ret(libc().connect(fd, addr, addr.byteLength));
}

/** Writes a socket's own address into `out` (at least {@link SOCKADDR_MAX} bytes); 0 or -errno. */
export function localAddress(fd: number, out: Uint8Array): number {
  if (out.byteLength < SOCKADDR_MAX) throw new RangeError("address buffer too small");
  lenView.setUint32(0, SOCKADDR_MAX, true);
  return ret(libc().getsockname(fd, out, lenBuf));
}

/** Writes a socket's peer address into `out` (at least {@link SOCKADDR_MAX} bytes); 0 or -errno. */
export function peerAddress(fd: number, out: Uint8Array): number {
  if (out.byteLength < SOCKADDR_MAX) throw new RangeError("address buffer too small");
  lenView.setUint32(0, SOCKADDR_MAX, true);
  return ret(libc().getpeername(fd, out, lenBuf));
}

/** Reads up to `len` bytes into the start of `buf`; bytes (0 at end of stream) or -errno. */
export function recv(fd: number, buf: Uint8Array, len: number): number {
  checkRange(buf, len);
  return ret(libc().recv(fd, buf, BigInt(len), 0));
}

/** Copies up to `len` waiting bytes into `buf` without taking them; bytes copied, 0 at EOF, or -errno. */
export function peek(fd: number, buf: Uint8Array, len: number): number {
  checkRange(buf, len);
  return ret(libc().recv(fd, buf, BigInt(len), MSG_PEEK));
}

/** Sends the first `len` bytes of `buf`, never raising SIGPIPE; bytes sent or -errno. */
export function send(fd: number, buf: Uint8Array, len: number): number {
  checkRange(buf, len);
  return ret(libc().send(fd, buf, BigInt(len), MSG_NOSIGNAL));
}

/** Half-closes: no more writes; 0 or -errno. */
export function shutdownWrite(fd: number): number {
  return ret(libc().shutdown(fd, SHUT_WR));
}

/** Closes a descriptor. The caller forgets it at once: the kernel may reuse the number. */
export function close(fd: number): void {
  libc().close(fd);
}

/** A new close-on-exec epoll instance; fd or -errno. */
export function epollCreate(): number {
  return ret(libc().epoll_create1(SOCK_CLOEXEC));
}

const ctlBuf = new Uint8Array(16);
const ctlView = new DataView(ctlBuf.buffer);

/**
 * Adds, changes or removes `fd` in an epoll set. `token` (a uint32) comes
 * back with its events instead of the fd, so an event for a closed and
 * reused fd number cannot reach the wrong connection. 0 or -errno.
 */
export function epollCtl(
  ep: number,
  op: number,
  fd: number,
  events: number,
  token: number,
): number {
  ctlView.setUint32(0, events, true);
  ctlView.setUint32(eventDataOffset, token, true);
  ctlView.setUint32(eventDataOffset + 4, 0, true);
  return ret(libc().epoll_ctl(ep, op, fd, ctlBuf));
}

/** Room for `max` epoll events, read with {@link eventsAt} and {@link tokenAt}. */
export interface EventBuffer {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly max: number;
}

/** An event buffer for up to `max` events. */
export function eventBuffer(max: number): EventBuffer {
  const bytes = new Uint8Array(max * 16);
  return { bytes, view: new DataView(bytes.buffer), max };
}

/** Waits up to `timeoutMs` on this thread; events, or -errno. */
export function epollWait(ep: number, out: EventBuffer, timeoutMs: number): number {
  return ret(libc().epoll_wait(ep, out.bytes, out.max, timeoutMs));
}

/**
 * Waits up to `timeoutMs` on a helper thread, leaving the event loop free;
 * events, or -1 on an error (errno is the helper's, so unknown: EINTR in
 * practice). `out` must not be read or reused until it resolves.
 */
export function epollWaitAsync(ep: number, out: EventBuffer, timeoutMs: number): Promise<number> {
  return libc().epoll_wait_async(ep, out.bytes, out.max, timeoutMs);
}

/** The event mask of the `i`th event. */
export function eventsAt(out: EventBuffer, i: number): number {
  return out.view.getUint32(i * eventSize, true);
}

/** The token of the `i`th event. */
export function tokenAt(out: EventBuffer, i: number): number {
  return out.view.getUint32(i * eventSize + eventDataOffset, true);
}

/** An eventfd, nonblocking unless `blocking` (then read on a helper thread); fd or -errno. */
export function eventFd(blocking = false): number {
  return ret(libc().eventfd(0, blocking ? SOCK_CLOEXEC : EFD_FLAGS));
}

/**
 * Reads a blocking eventfd's counter into `into` on a helper thread, leaving
 * the event loop free: 8 once something signalled it, else -1. `into` must
 * not be reused until it resolves.
 */
export function waitEventFd(fd: number, into: Uint8Array): Promise<number> {
  checkRange(into, 8);
  return libc().read_async(fd, into, 8n);
}

const counterBuf = new Uint8Array(8);

/** Adds 1 to an eventfd (wakes its epoll waiter). */
export function signalEventFd(fd: number): void {
  counterBuf.fill(0);
  counterBuf[0] = 1;
  libc().write(fd, counterBuf, BigInt(counterBuf.length));
}

/** Resets an eventfd to 0. */
export function clearEventFd(fd: number): void {
  libc().read(fd, counterBuf, BigInt(counterBuf.length));
}

/** Reads an eventfd's 8-byte counter into `into`; 8, or -errno (-EAGAIN when it is 0). */
export function readCounter(fd: number, into: Uint8Array): number {
  checkRange(into, 8);
  return ret(libc().read(fd, into, 8n));
}

/** io_uring's system call numbers: the same on x86_64 and in aarch64's generic table. */
const URING = { setup: 425n, enter: 426n, register: 427n } as const;

/**
 * The address of `buf`'s first byte, for the kernel to read or write it
 * later (io_uring): the caller keeps `buf` referenced until the kernel is
 * done with it (the GC never moves an ArrayBuffer's bytes).
 */
export function addressOf(buf: Uint8Array): number {
  if (buf.byteLength === 0) throw new RangeError("an empty buffer has no address");
  return Number(libc().memmove(buf, buf, 0n));
}

/** io_uring_setup with `params` (struct io_uring_params, 120 bytes); the ring's fd or -errno. */
export function uringSetup(entries: number, params: Uint8Array): number {
  if (params.byteLength < 120) throw new RangeError("io_uring_params is 120 bytes");
  return ret(libc().uring_setup(URING.setup, entries, params));
}

/** io_uring_enter without a signal mask or extended argument; what it returns, or -errno. */
export function uringEnter(ring: number, toSubmit: number, minComplete: number, flags: number) {
  return ret(libc().uring_enter(URING.enter, ring, toSubmit, minComplete, flags, 0n, 0n));
}

/**
 * struct io_uring_getevents_arg (no signal mask) and the timespec it points
 * to: module memory, so the kernel's pointer stays good (an ArrayBuffer's
 * bytes never move).
 */
const waitArg = new BigUint64Array(3);
/** io_uring_enter's flag: its last two arguments are a struct io_uring_getevents_arg and its size. */
const ENTER_EXT_ARG = 8;
const waitTime = new BigInt64Array(2);
let waitArgAddress = 0n;

/**
 * io_uring_enter that waits for `minComplete` completions at most `ms`
 * milliseconds (IORING_ENTER_EXT_ARG with a timeout); what it returns, or
 * -errno (-ETIME when the time ran out).
 */
export function uringEnterWait(
  ring: number,
  toSubmit: number,
  minComplete: number,
  flags: number,
  ms: number,
): number {
  if (waitArgAddress === 0n) {
    waitArg[2] = BigInt(addressOf(new Uint8Array(waitTime.buffer)));
    waitArgAddress = BigInt(addressOf(new Uint8Array(waitArg.buffer)));
  }
  const ns = Math.max(0, Math.round(ms * 1e6));
  waitTime[0] = BigInt(Math.floor(ns / 1e9));
  waitTime[1] = BigInt(ns % 1e9);
  return ret(
    libc().uring_enter(
      URING.enter,
      ring,
      toSubmit,
      minComplete,
      flags | ENTER_EXT_ARG,
      waitArgAddress,
      24n,
    ),
  );
}

/** io_uring_register with `arg` (`size` bytes of it are the kernel's to read); 0 or -errno. */
export function uringRegister(ring: number, opcode: number, arg: Uint8Array, count: number) {
  return ret(libc().uring_register(URING.register, ring, opcode, arg, count));
}

/**
 * Asks glibc to give the free memory in its arenas back to the system
 * (`malloc_trim(0)`): whether it gave any, or null when this libc has no
 * such call (musl) or cannot be loaded.
 */
export function trimHeap(): boolean | null {
  try {
    loadLibc();
  } catch {
    return null;
  }
  const trim = libc().malloc_trim;
  return trim === null ? null : trim(0n) === 1;
}
