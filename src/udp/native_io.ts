/**
 * The native UDP mechanism (Linux): the service's socket read in batches
 * with `recvmmsg`, each flow's socket `connect`ed to its backend (so its
 * replies are the only datagrams it gets, and an ICMP port unreachable
 * comes back as ECONNREFUSED), all on one epoll loop of its own on the
 * control plane's thread, as the TCP engines run theirs.
 *
 * @module
 */
import * as sys from "../engine/linux/ffi.ts";
import {
  datagramAt,
  type DatagramBatch,
  datagramBatch,
  datagramSocket,
  outBatch,
  queueDatagram,
  receiveBatch,
  receiveOne,
  senderAt,
  sendOne,
  sendQueued,
  sendTo,
  steerToNewest,
} from "../engine/linux/ffi_udp.ts";
import { decodeAddress, encodeAddress, familyOf, isIpLiteral } from "../engine/linux/sockaddr.ts";
import { resolveSync } from "../engine/linux/getaddrinfo.ts";
import { addressBook } from "../engine/linux/resolve.ts";
import { cancel, createLoop, type Loop, type Timer } from "../engine/epoll/loop.ts";
import { loopErrors } from "../engine/linux/linux_engine.ts";
import { describeErrno, errnoReason } from "../net/errno.ts";
import { DATAGRAM_BUFFER } from "../net/linux.ts";
import type { Backend } from "../config/schema.ts";
import type { DatagramIo, FlowEvents, FlowSocket, Peer, ServiceSocket } from "./datagram_io.ts";

/** Bytes of replies one round may queue for one sendmmsg (a larger one goes alone). */
const OUT_ARENA = 256 * 1024;

/** Datagrams one `recvmmsg` takes, and the batches one readiness event drains at most. */
const BATCH = 32;
const ROUNDS = 8;

/** The native mechanism; throws when libc or epoll cannot be had (then the Deno one serves). */
export function nativeIo(): DatagramIo {
  sys.loadLibc();
  const loop = createLoop(loopErrors("uring"));
  const book = addressBook();
  const reply = new Uint8Array(DATAGRAM_BUFFER);
  const pools = new Map<string, Pool>();
  // A backend's address, looked up once per config (a literal is parsed every time otherwise).
  const known = new WeakMap<Backend, Uint8Array>();
  return {
    name: "native",
    listen: (bind, port, join, onDatagram) => listenNative(loop, bind, port, join, onDatagram),
    flow(backend, events) {
      const address = known.get(backend) ?? book.of(backend);
      if (address instanceof Uint8Array) known.set(backend, address);
      if (!(address instanceof Uint8Array)) {
        return typeof address === "string" ? address : `resolving ${backend.host}`;
      }
      let pool = pools.get(backend.id);
      if (!pool) pools.set(backend.id, pool = { sockets: [], open: true });
      return connectFlow(loop, address, events, reply, pool);
    },
    keepOnly(ids) {
      for (const [id, pool] of pools) {
        if (ids.has(id)) continue;
        closePool(pool);
        pools.delete(id);
      }
    },
    async stop() {
      for (const pool of pools.values()) closePool(pool);
      pools.clear();
      await loop.stop();
    },
  };
}

/** Sockets of answered flows, kept connected for the next flows to the same backend. */
const POOL_MAX = 1024;

/** A pooled socket: its new flow's events go to `use`. */
interface Pooled {
  use(events: FlowEvents | null): FlowSocket;
  destroy(): void;
}

/** One backend's idle sockets; closed when the backend leaves the config. */
interface Pool {
  sockets: Pooled[];
  open: boolean;
}

function closePool(pool: Pool): void {
  pool.open = false;
  for (const p of pool.sockets) p.destroy();
  pool.sockets = [];
}

function fail(fd: number, r: number): never {
  if (fd >= 0) sys.close(fd);
  throw new Error(errnoReason(-r) ?? describeErrno(-r));
}

/** The service's socket, claimed with a plain bind first, then bound for sharing. */
function listenNative(
  loop: Loop,
  bind: string,
  port: number,
  join: boolean,
  onDatagram: (data: Uint8Array, from: Peer, truncated: boolean) => void,
): ServiceSocket {
  const address = isIpLiteral(bind)
    ? encodeAddress(bind, port)
    : withPortOf(resolveSync(bind)[0], port, bind);
  const claim = datagramSocket(familyOf(address));
  if (claim < 0) fail(-1, claim);
  const claimed = sys.bind(claim, address);
  sys.close(claim);
  if (claimed < 0 && !(join && claimed === -sys.E.EADDRINUSE)) fail(-1, claimed);
  const fd = datagramSocket(familyOf(address));
  if (fd < 0) fail(-1, fd);
  sys.setIntOption(fd, sys.C.SOL_SOCKET, sys.C.SO_REUSEADDR, 1);
  sys.setIntOption(fd, sys.C.SOL_SOCKET, sys.C.SO_REUSEPORT, 1);
  const r = sys.bind(fd, address);
  if (r < 0) fail(fd, r);
  // Taking over from the bal before: new datagrams come here from now on, none to it.
  if (join) steerToNewest(fd);
  const batch = datagramBatch(BATCH, DATAGRAM_BUFFER);
  const peers = new Map<number, Peer>();
  const token = loop.add(fd, sys.C.EPOLLIN, () => {
    for (let round = 0; round < ROUNDS; round++) {
      const n = receiveBatch(fd, batch);
      if (n <= 0) return;
      for (let i = 0; i < n; i++) {
        const { data, truncated } = datagramAt(batch, i);
        const from = senderOf(batch, i, peers);
        if (from) onDatagram(data, from, truncated);
      }
      if (n < batch.count) return;
    }
  });
  if (token < 0) fail(fd, token);
  // Replies wait for the end of the loop's round, then go out together in one sendmmsg.
  const out = outBatch(BATCH * 2, OUT_ARENA);
  let flushing: Timer | null = null;
  const flush = () => {
    flushing = null;
    sendQueued(fd, out);
  };
  return {
    send(data, to) {
      const address = to.raw ?? encodeAddress(to.hostname, to.port);
      if (!queueDatagram(out, data, address)) {
        flush();
        if (!queueDatagram(out, data, address)) return sendTo(fd, data, address) >= 0;
      }
      flushing ??= loop.timer(0, flush);
      return true;
    },
    close() {
      if (flushing) {
        cancel(flushing);
        flush();
      }
      loop.forget(token);
      sys.close(fd);
    },
  };
}

/** IPv4 senders kept at most: a busy client's address is decoded once, not per datagram. */
const PEERS_MAX = 4096;

/**
 * The sender of datagram `i`: an IPv4 one from `peers` when seen lately
 * (keyed by address and port, read in place), else decoded and, for IPv4,
 * kept. Peers are never changed once made, so one serves every datagram.
 */
function senderOf(batch: DatagramBatch, i: number, peers: Map<number, Peer>): Peer | null {
  const b = batch.names;
  const at = i * sys.SOCKADDR_MAX;
  // sockaddr_in: the family (2, little-endian), the port and address (network order).
  const v4 = b[at] === 2 && b[at + 1] === 0;
  const key = v4
    ? ((b[at + 4] << 24 | b[at + 5] << 16 | b[at + 6] << 8 | b[at + 7]) >>> 0) * 65536 +
      (b[at + 2] << 8 | b[at + 3])
    : -1;
  const known = v4 ? peers.get(key) : undefined;
  if (known) return known;
  const raw = senderAt(batch, i);
  const from = decodeAddress(raw);
  if (!from) return null;
  const peer = { ...from, raw };
  if (v4) {
    if (peers.size >= PEERS_MAX) peers.clear();
    peers.set(key, peer);
  }
  return peer;
}

function withPortOf(address: Uint8Array | undefined, port: number, host: string): Uint8Array {
  if (!address) throw new Error(`${host} has no address`);
  const out = address.slice();
  new DataView(out.buffer).setUint16(2, port, false);
  return out;
}

/**
 * A socket connected to the backend (from the pool when one waits there);
 * its replies go to `events` (read into the shared `buf`).
 */
function connectFlow(
  loop: Loop,
  address: Uint8Array,
  events: FlowEvents | null,
  buf: Uint8Array,
  pool: Pool,
): FlowSocket | string {
  const pooled = pool.sockets.pop();
  if (pooled) return pooled.use(events);
  const fd = datagramSocket(familyOf(address));
  if (fd < 0) return describeErrno(-fd);
  const r = sys.connect(fd, address);
  if (r < 0) {
    sys.close(fd);
    return describeErrno(-r);
  }
  let current: FlowEvents | null = null;
  let token = -1;
  const onReadable = () => {
    for (let i = 0; i < BATCH; i++) {
      const n = receiveOne(fd, buf);
      if (n === -sys.E.ECONNREFUSED) current?.refused();
      else if (n < 0) return;
      else if (current) {
        current.reply(buf.subarray(0, Math.min(n, buf.length)));
        // The flow ended on that reply: its socket is pooled or closed, and read no more now.
        if (current === null) return;
      }
      // A reply while pooled is a late one: read and dropped, so the socket stays quiet.
    }
  };
  const destroy = () => {
    if (token >= 0) loop.forget(token);
    sys.close(fd);
  };
  // One socket object for every flow the socket serves: a pooled socket's next flow
  // gets it again (the previous flow, ended, never uses it after closing it).
  const socket: FlowSocket = {
    send(data) {
      const sent = sendOne(fd, data);
      if (sent === -sys.E.ECONNREFUSED) current?.refused();
      return sent >= 0;
    },
    close(reuse) {
      current = null;
      if (reuse && token >= 0 && pool.open && pool.sockets.length < POOL_MAX) {
        pool.sockets.push(entry);
      } else destroy();
    },
  };
  const entry: Pooled = {
    use(events) {
      current = events;
      if (events && token < 0) token = loop.add(fd, sys.C.EPOLLIN, onReadable);
      return socket;
    },
    destroy,
  };
  entry.use(events);
  return token < 0 && events ? (destroy(), "epoll refused the socket") : socket;
}
