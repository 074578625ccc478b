/**
 * What the io_uring engine must get right beyond the conformance cases:
 * its connections share one pool of provided buffers, so a pool starved
 * to 16 buffers must still move every byte in order, and a client that
 * stops reading must hold a few buffers, never the pool.
 */
import assert from "node:assert/strict";
import { checkConfig } from "../../src/config/mod.ts";
import type { Engine } from "../../src/engine/engine.ts";
import { createUringEngine, RING_SIZE } from "../../src/engine/uring/engine.ts";
import { uringSelfCheck } from "../../src/engine/uring/self_check.ts";
import { createRuntime } from "../../src/snapshot.ts";
import * as sys from "../../src/engine/linux/ffi.ts";
import { decodeAddress, encodeAddress } from "../../src/engine/linux/sockaddr.ts";
import {
  dialSocket,
  localEnd,
  openListener,
  startConnect,
} from "../../src/engine/linux/sockets.ts";
import {
  createRing,
  enter,
  enterWaiting,
  eventFdSignals,
  prepConnect,
  prepRecvBuffered,
  registerEventFd,
} from "../../src/engine/uring/ring.ts";
import { freePort, readAll, serveTcp, sha256, writeAll } from "../helpers.ts";

const ignore = uringSelfCheck() !== null;

/** The io_uring engine on a ring with `buffers` provided buffers, in front of `backend`. */
function start(backend: number, buffers: number): { engine: Engine; port: number } {
  const port = freePort();
  const checked = checkConfig(
    `port: ${port}\nbind_address: 127.0.0.1\nbackends: ["127.0.0.1:${backend}"]\n`,
    "uring.yaml",
  );
  assert.ok(checked.ok);
  const engine = createUringEngine(createRuntime(checked.config, "uring.yaml"), {
    id: 0,
    reusePort: false,
    claimPort: false,
    planes: 1,
    onResult: () => {},
    onNoBackend: () => {},
  }, { ...RING_SIZE, buffers });
  engine.apply(checked.config);
  return { engine, port };
}

/** Rings a test made: their memory stays referenced while the process lives (the kernel owns it). */
const rings: unknown[] = [];

/** A backend that answers each client with the sha256 of everything it sent, after its FIN. */
function hasher() {
  return serveTcp(async (conn) => {
    const got = await readAll(conn);
    await writeAll(conn, new TextEncoder().encode(sha256(got)));
    conn.close();
  });
}

Deno.test({
  name: "uring: 40 streams of 2 MiB through a pool of 16 buffers arrive whole and in order",
  ignore,
  async fn() {
    const backend = hasher();
    const { engine, port } = start(backend.port, 16);
    try {
      const streams = Array.from({ length: 40 }, async (_, i) => {
        const data = crypto.getRandomValues(new Uint8Array(64 * 1024));
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        const whole = new Uint8Array(2 * 1024 * 1024);
        for (let at = 0; at < whole.length; at += data.length) whole.set(data, at);
        whole[i] = i;
        await writeAll(conn, whole);
        await conn.closeWrite();
        const answer = new TextDecoder().decode(await readAll(conn));
        conn.close();
        assert.equal(answer, sha256(whole), `stream ${i}`);
      });
      await Promise.all(streams);
    } finally {
      await engine.stopAccepting();
      await engine.drain(0);
      await backend.close();
    }
  },
});

Deno.test({
  name:
    "uring: a client that stops reading holds a few buffers, and 20 others stream on through the pool",
  ignore,
  async fn() {
    const size = 8 * 1024 * 1024;
    const pusher = serveTcp(async (conn) => {
      const chunk = new Uint8Array(256 * 1024).fill(7);
      try {
        for (let sent = 0; sent < size; sent += chunk.length) await writeAll(conn, chunk);
      } finally {
        conn.close();
      }
    });
    // 64 buffers: the stalled client may hold a handful; the others need the rest.
    const { engine, port } = start(pusher.port, 64);
    try {
      const stalled = await Deno.connect({ hostname: "127.0.0.1", port });
      await new Promise((r) => setTimeout(r, 300));
      const readers = Array.from({ length: 20 }, async () => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        const got = await readAll(conn);
        conn.close();
        return got.length;
      });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error("the streams stalled: the pool ran dry")),
          20_000,
        );
      });
      assert.deepEqual(await Promise.race([Promise.all(readers), late]), Array(20).fill(size));
      clearTimeout(timer);
      stalled.close();
    } finally {
      await engine.stopAccepting();
      await engine.drain(0);
      await pusher.close();
    }
  },
});

Deno.test({
  name:
    "uring: rings closed and collected leave the process whole (the kernel may still write to them)",
  ignore,
  async fn() {
    // Before the regions were kept, a closed self-check ring's memory was freed and reused
    // by malloc while the kernel still posted its cancelled accept there: "free(): invalid
    // next size", a crash at start about one time in three.
    const script = `
      import { uringSelfCheck } from ${
      JSON.stringify(new URL("../../src/engine/uring/self_check.ts", import.meta.url).href)
    };
      // Buffers of the sizes the rings' memory had, filled: freed memory is reused at once,
      // and a stray write of the kernel's shows as a byte that is not its buffer's fill.
      const kept = [];
      for (let i = 0; i < 60; i++) {
        if (uringSelfCheck() !== null) throw new Error("self-check failed");
        globalThis.gc();
        for (let k = 0; k < 40; k++) kept.push(new Uint8Array([8192, 4608, 4352][k % 3]).fill(k % 251 + 1));
        await new Promise((r) => setTimeout(r, 5));
      }
      await new Promise((r) => setTimeout(r, 300));
      const hit = kept.findIndex((b, k) => b.some((v) => v !== k % 40 % 251 + 1));
      if (hit >= 0) throw new Error("a buffer was written to by someone else: " + hit);
      console.log("done");
    `;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--v8-flags=--expose-gc", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.ok(out.success && text.includes("done"), text.slice(-2000));
  },
});

Deno.test({
  name:
    "uring: a completion signals the loop's eventfd as it is posted, so an idle loop wakes at once",
  ignore,
  fn() {
    // Set up with DEFER_TASKRUN, the ring's completion work waited for the next enter and its
    // eventfd signal came from the network's softirq, which Linux defers through RCU (14 ms
    // here): an idle loop served one request per 22 ms.
    const { ring, listener, client, server } = smallRingAndPair();
    const efd = sys.eventFd();
    assert.equal(registerEventFd(ring, efd), 0);
    const counter = new Uint8Array(8);
    try {
      assert.ok(client >= 0 && server >= 0, `connected (${client}, ${server})`);
      prepRecvBuffered(ring, server, 1);
      enter(ring, 0);
      eventFdSignals(ring, true);
      assert.equal(sys.readCounter(efd, counter), -sys.E.EAGAIN, "nothing received yet");
      assert.equal(sys.send(client, new Uint8Array([1, 2, 3]), 3), 3);
      // Loopback delivers within the send; the completion is posted as the call returns.
      // A short grace, should the softirq run on its own thread: the deferred signal took 14 ms.
      let signalled = sys.readCounter(efd, counter);
      for (const until = performance.now() + 3; signalled < 0 && performance.now() < until;) {
        signalled = sys.readCounter(efd, counter);
      }
      assert.equal(signalled, 8, "the eventfd was signalled with the completion");
      const got: number[] = [];
      enter(ring, 0, (userData, res) => got.push(userData, res));
      assert.deepEqual(got, [1, 3]);
    } finally {
      for (const fd of [client, server, listener, efd, ring.fd]) if (fd >= 0) sys.close(fd);
    }
  },
});

Deno.test({
  name:
    "uring: a waiting enter returns when its time is up with nothing done, and with a completion as it comes",
  ignore,
  fn() {
    // The idle loop's settle wait: a timeout the kernel misread would block the thread for good
    // (no completion comes to an idle loop) or not wait at all.
    const { ring, listener, client, server } = smallRingAndPair();
    try {
      assert.ok(client >= 0 && server >= 0, `connected (${client}, ${server})`);
      const got: number[] = [];
      const reap = (userData: number, res: number) => got.push(userData, res);
      prepRecvBuffered(ring, server, 1);
      const started = performance.now();
      assert.equal(enterWaiting(ring, 30, reap), 0, "nothing completes");
      // The kernel's timer may end the wait a little early, never by a third of it.
      assert.ok(performance.now() - started >= 20, "it waited");
      assert.equal(sys.send(client, new Uint8Array([1, 2, 3]), 3), 3);
      assert.equal(enterWaiting(ring, 60_000, reap), 1);
      assert.deepEqual(got, [1, 3]);
    } finally {
      for (const fd of [client, server, listener, ring.fd]) if (fd >= 0) sys.close(fd);
    }
  },
});

/** A small ring (kept referenced), and a loopback connection: its listener, client and server. */
function smallRingAndPair() {
  sys.loadLibc();
  const ring = createRing({ entries: 8, completions: 16, buffers: 4, bufferSize: 4096 });
  if (typeof ring === "string") throw new Error(ring);
  rings.push(ring);
  const address = encodeAddress("127.0.0.1", freePort());
  const listener = openListener(
    { bind_address: "127.0.0.1", port: 0, backlog: 4 },
    address,
    false,
  );
  const client = startConnect(address).fd;
  const server = sys.accept(listener, new Uint8Array(sys.SOCKADDR_MAX));
  return { ring, listener, client, server };
}

Deno.test({
  name:
    "uring: connects queued in one round each reach their own address, and a refused one completes with its errno",
  ignore,
  fn() {
    // The ring copies a connect's address when it takes the entry, so each entry has its own
    // slot until then: a slot shared by a round's connects would send them all to the last address.
    sys.loadLibc();
    const ring = createRing({ entries: 8, completions: 16, buffers: 4, bufferSize: 4096 });
    if (typeof ring === "string") throw new Error(ring);
    rings.push(ring);
    const want = { bind_address: "127.0.0.1", port: 0, backlog: 4 };
    const addresses = [0, 1, 2].map(() => encodeAddress("127.0.0.1", freePort()));
    const listeners = addresses.slice(0, 2).map((a) => openListener(want, a, false));
    const dialed = addresses.map((a) => dialSocket(a));
    const accepted: number[] = [];
    try {
      dialed.forEach((fd, i) => prepConnect(ring, fd, i + 1, addresses[i]));
      const results = new Map<number, number>();
      for (let i = 0; i < 50 && results.size < 3; i++) {
        enterWaiting(ring, 100, (userData, res) => results.set(userData, res));
      }
      assert.deepEqual([1, 2, 3].map((u) => results.get(u)), [0, 0, -sys.E.ECONNREFUSED]);
      const peer = new Uint8Array(sys.SOCKADDR_MAX);
      for (const [i, listener] of listeners.entries()) {
        accepted.push(sys.accept(listener, peer));
        assert.ok(accepted[i] >= 0, `listener ${i} has its client`);
        assert.equal(
          decodeAddress(peer)?.port,
          localEnd(dialed[i])?.port,
          `listener ${i}'s client is its own`,
        );
      }
    } finally {
      for (const fd of [...listeners, ...dialed, ...accepted]) if (fd >= 0) sys.close(fd);
      sys.close(ring.fd);
    }
  },
});
