/**
 * The io_uring engine's start-up check: before bal trusts the engine with
 * clients it sets up a ring with the flags and opcodes the engine uses,
 * then moves a few bytes through it on loopback (a multishot accept, a
 * multishot receive into a provided buffer, a send). A kernel that
 * refuses io_uring (too old, `kernel.io_uring_disabled`, a container's
 * seccomp profile) shows here as a reason, and `engine: auto` takes epoll
 * instead.
 *
 * @module
 */
import * as sys from "../linux/ffi.ts";
import { E, errnoOf } from "../../net/errno.ts";
import { decodeAddress, encodeAddress } from "../linux/sockaddr.ts";
import { startConnect } from "../linux/sockets.ts";
import { createRing, enter, prepAccept, prepRecvMultishot, type Ring } from "./ring.ts";

/** Null when the io_uring engine works on this machine, else why not. */
export function uringSelfCheck(): string | null {
  try {
    sys.loadLibc();
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  const ring = createRing({ entries: 8, completions: 16, buffers: 4, bufferSize: 64 });
  if (typeof ring === "string") return refusal(ring);
  const fds: number[] = [ring.fd];
  try {
    roundTrip(ring, fds);
    return null;
  } catch (err) {
    return `io_uring self-check: ${err instanceof Error ? err.message : String(err)}`;
  } finally {
    for (const fd of fds) sys.close(fd);
  }
}

/** What a refusal's errno says, and its likely cause. */
const REFUSALS: Record<number, { what: string; cause: string }> = {
  [E.EPERM]: {
    what: "io_uring refused by the kernel",
    cause: "kernel.io_uring_disabled, or a container's seccomp profile?",
  },
  [E.ENOSYS]: {
    what: "io_uring is not available",
    cause: "a kernel without it, or a seccomp profile?",
  },
  [E.EINVAL]: {
    what: "io_uring cannot be used",
    cause: "a kernel older than 6.6, which lacks the ring set-up bal uses?",
  },
};

/** The kernel's refusal, in words an operator can act on. */
function refusal(reason: string): string {
  const known = REFUSALS[errnoOf(reason) ?? -1];
  return known
    ? `${known.what} (${reason}: ${known.cause})`
    : `io_uring cannot be used (${reason})`;
}

function roundTrip(ring: Ring, fds: number[]): void {
  const keep = (fd: number, what: string) => {
    if (fd < 0) throw new Error(`${what} failed (errno ${-fd})`);
    fds.push(fd);
    return fd;
  };
  const listener = keep(sys.socket(sys.C.AF_INET), "socket");
  if (sys.bind(listener, encodeAddress("127.0.0.1", 0)) < 0) throw new Error("bind failed");
  if (sys.listen(listener, 8) < 0) throw new Error("listen failed");
  const own = new Uint8Array(sys.SOCKADDR_MAX);
  sys.localAddress(listener, own);
  const dial = startConnect(encodeAddress("127.0.0.1", decodeAddress(own)?.port ?? 0));
  keep(dial.fd, "connect");
  prepAccept(ring, listener, 1);
  const accepted = keep(waitFor(ring, 1).res, "accept");
  const probe = new TextEncoder().encode("bal!");
  for (let i = 0; i < 100 && sys.send(dial.fd, probe, probe.length) === -E.EAGAIN; i++) {
    enter(ring, 0);
  }
  prepRecvMultishot(ring, accepted, 2);
  const got = waitFor(ring, 2);
  const bytes = ring.buffers.buffers[got.flags >>> 16]?.subarray(0, got.res);
  if (got.res !== probe.length || new TextDecoder().decode(bytes) !== "bal!") {
    throw new Error(`a receive gave ${got.res} bytes`);
  }
}

/** Enters until the completion for `userData` comes (at most 2 s). */
function waitFor(ring: Ring, userData: number): { res: number; flags: number } {
  let found: { res: number; flags: number } | null = null;
  const until = Date.now() + 2000;
  while (!found && Date.now() < until) {
    enter(ring, 0, (ud, res, flags) => {
      if (ud === userData) found ??= { res, flags };
    });
  }
  if (!found) throw new Error(`no completion for operation ${userData}`);
  return found;
}
