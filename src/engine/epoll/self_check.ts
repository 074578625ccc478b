/**
 * The native engine's start-up self-check: before bal trusts the engine
 * with clients, it loads libc and moves a few bytes through every call the
 * engine makes (epoll, listen, a nonblocking connect, accept, send, recv,
 * half-close) on loopback. A wrong struct layout or a missing permission
 * shows here as a reason, not as a crash or a silent hang later.
 *
 * @module
 */
import * as sys from "../linux/ffi.ts";
import { decodeAddress, encodeAddress } from "../linux/sockaddr.ts";
import { startConnect } from "../linux/sockets.ts";

/** Null when the native engine works on this machine, else why not. */
export function nativeSelfCheck(): string | null {
  try {
    sys.loadLibc();
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  const fds: number[] = [];
  const keep = (fd: number, what: string) => {
    if (fd < 0) throw new Error(`${what} failed (errno ${-fd})`);
    fds.push(fd);
    return fd;
  };
  try {
    roundTrip(keep);
    return null;
  } catch (err) {
    return `self-check: ${err instanceof Error ? err.message : String(err)}`;
  } finally {
    for (const fd of fds) sys.close(fd);
  }
}

function roundTrip(keep: (fd: number, what: string) => number): void {
  const ep = keep(sys.epollCreate(), "epoll_create1");
  const listener = keep(sys.socket(sys.C.AF_INET), "socket");
  if (sys.bind(listener, encodeAddress("127.0.0.1", 0)) < 0) throw new Error("bind failed");
  if (sys.listen(listener, 8) < 0) throw new Error("listen failed");
  const own = new Uint8Array(sys.SOCKADDR_MAX);
  sys.localAddress(listener, own);
  const port = decodeAddress(own)?.port ?? 0;
  const dial = startConnect(encodeAddress("127.0.0.1", port));
  keep(dial.fd, "connect");
  const events = sys.eventBuffer(4);
  if (sys.epollCtl(ep, sys.C.EPOLL_CTL_ADD, listener, sys.C.EPOLLIN, 7) < 0) {
    throw new Error("epoll_ctl failed");
  }
  if (sys.epollWait(ep, events, 2000) !== 1 || sys.tokenAt(events, 0) !== 7) {
    throw new Error("epoll_wait did not report the connection");
  }
  const peer = new Uint8Array(sys.SOCKADDR_MAX);
  const accepted = keep(sys.accept(listener, peer), "accept4");
  if (decodeAddress(peer)?.hostname !== "127.0.0.1") throw new Error("accept4 gave a bad address");
  const probe = new TextEncoder().encode("bal!");
  if (sys.send(dial.fd, probe, probe.length) !== probe.length) throw new Error("send failed");
  sys.shutdownWrite(dial.fd);
  const got = new Uint8Array(16);
  let n = 0;
  for (let i = 0; i < 100 && n === 0; i++) {
    n = sys.recv(accepted, got, got.length);
    if (n === -sys.E.EAGAIN) n = 0;
    if (n === 0) sys.epollWait(ep, events, 10);
  }
  if (n !== probe.length || new TextDecoder().decode(got.subarray(0, n)) !== "bal!") {
    throw new Error(`recv gave ${n} bytes`);
  }
  if (sys.recv(accepted, got, got.length) !== 0) throw new Error("half-close was not seen");
}
