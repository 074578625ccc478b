/**
 * Backend faults: a backend that accepts and never answers, one that resets
 * mid-stream, one that closes its write side early, one that reads slowly,
 * one whose port is closed, one blackholed. Each ends in the documented
 * behaviour, and the healthy backend keeps serving throughout.
 */
import assert from "node:assert/strict";
import {
  askName,
  bal,
  closeQuietly,
  type Daemon,
  freePort,
  nameBackend,
  readAll,
  serveTcp,
  startBal,
  text,
  waitFor,
  writeAll,
} from "../helpers.ts";
import { pick, randomBytes, record, rssKiB, sleep } from "./chaos.ts";

/** Starts bal in front of a healthy backend "G" and the faulty one, tried first. */
async function withFault(
  faultPort: number,
  runtime: Record<string, number>,
  body: (d: Daemon, port: number) => Promise<void>,
): Promise<void> {
  const good = nameBackend("G");
  const d = await startBal({
    backends: [faultPort, good.port],
    runtime: {
      health_check_fail_threshold: 1000,
      protection_trigger_threshold: 1000,
      ...runtime,
    },
  });
  const { port } = d;
  try {
    await body(d, port);
    assert.ok(await askNameUntil(port, "G"), "the healthy backend kept serving");
  } finally {
    await d.stop();
    await good.close();
  }
}

/** Asks until `name` answers (round robin alternates), at most 10 times. */
async function askNameUntil(port: number, name: string): Promise<boolean> {
  for (let i = 0; i < 10; i++) if ((await askName(port).catch(() => "")) === name) return true;
  return false;
}

/** Connects through bal and waits for the byte stream to end (EOF or reset). */
async function connectUntilEnd(port: number, send: Uint8Array, ms: number) {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  const started = Date.now();
  await writeAll(c, send).catch(() => {});
  let timer: ReturnType<typeof setTimeout> | undefined;
  const got = await Promise.race([
    readAll(c).then((b) => ({ ended: true, bytes: b.length })).catch(() => ({
      ended: true,
      bytes: -1,
    })),
    new Promise<{ ended: false; bytes: 0 }>((r) =>
      timer = setTimeout(() => r({ ended: false, bytes: 0 }), ms)
    ),
  ]);
  clearTimeout(timer);
  closeQuietly(c);
  return { ...got, ms: Date.now() - started };
}

const figures: Record<string, unknown> = {};

Deno.test("chaos: a backend that accepts and never answers: the idle timeout closes the client", async () => {
  // Reads (until bal closes it) and never writes a byte.
  const silent = serveTcp(async (conn) => {
    const buf = new Uint8Array(1 << 16);
    while ((await conn.read(buf)) !== null);
  });
  await withFault(silent.port, { connection_idle_timeout_ms: 800 }, async (_d, port) => {
    // Round robin: one of two clients lands on the silent backend.
    const ends = await Promise.all([1, 2].map(() => connectUntilEnd(port, text("hi"), 5000)));
    const stuck = ends.find((e) => e.bytes === 0)!;
    assert.ok(stuck.ended, "closed");
    assert.ok(stuck.ms >= 700 && stuck.ms < 3000, `closed after ${stuck.ms} ms`);
    figures.silent_backend_closed_after_ms = stuck.ms;
  });
  await silent.close();
});

Deno.test("chaos: a backend that resets mid-stream: the client's connection ends, others go on", async () => {
  const resetting = serveTcp(async (conn) => {
    await conn.write(text("partial"));
    // Closing with unread bytes makes the kernel send a reset.
    await sleep(50);
    conn.close();
  });
  await withFault(resetting.port, {}, async (_d, port) => {
    const ends = await Promise.all(
      [1, 2].map(() => connectUntilEnd(port, randomBytes(256 * 1024), 3000)),
    );
    assert.ok(ends.every((e) => e.ended), JSON.stringify(ends));
  });
  await resetting.close();
});

Deno.test("chaos: a backend that closes its write side early: the client gets EOF and can still send", async () => {
  let receivedByBackend = 0;
  const early = serveTcp(async (conn) => {
    await writeAll(conn, text("bye"));
    await conn.closeWrite();
    const buf = new Uint8Array(65536);
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) receivedByBackend += n;
    await writeAll(conn, text("")).catch(() => {});
  });
  const good = nameBackend("G");
  const d = await startBal({ backends: [early.port] });
  const { port } = d;
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    const got = await readAll(c);
    assert.equal(new TextDecoder().decode(got), "bye", "EOF after the backend's bytes");
    const payload = randomBytes(1024 * 1024);
    await writeAll(c, payload);
    await c.closeWrite();
    await waitFor(
      "every byte sent after the half-close to arrive",
      () => receivedByBackend === payload.length,
    );
    c.close();
  } finally {
    await d.stop();
    await early.close();
    await good.close();
  }
});

Deno.test("chaos: a backend reading 1 MB/s: the client is held back and bal's memory stays bounded", async () => {
  const RATE = 1024 * 1024;
  const SECONDS = pick(4, 10);
  let read = 0;
  let done = false;
  const slow = serveTcp(async (conn) => {
    const buf = new Uint8Array(64 * 1024);
    const started = Date.now();
    while (!done) {
      // Read only what 1 MB/s allows so far.
      const allowed = ((Date.now() - started) / 1000) * RATE - read;
      if (allowed < buf.length) {
        await sleep(20);
        continue;
      }
      const n = await conn.read(buf);
      if (n === null) break;
      read += n;
    }
  });
  const d = await startBal({ backends: [slow.port] });
  const { port } = d;
  try {
    const before = rssKiB(d.pid);
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    const chunk = randomBytes(64 * 1024);
    let written = 0;
    const target = 100 * 1024 * 1024;
    const deadline = Date.now() + SECONDS * 1000;
    let peak = before;
    const pushing = (async () => {
      while (written < target && Date.now() < deadline) {
        written += await c.write(chunk);
      }
    })().catch(() => {});
    while (Date.now() < deadline) {
      await sleep(250);
      peak = Math.max(peak, rssKiB(d.pid));
    }
    done = true;
    c.close();
    await pushing;
    // What the client got to write is what the backend read plus the kernel buffers
    // on both sides and bal's own (about two 32 KiB buffers), not 100 MB.
    const buffered = written - read;
    assert.ok(written < SECONDS * RATE * 2 + 16 * 1024 * 1024, `client wrote ${written} bytes`);
    assert.ok(buffered < 16 * 1024 * 1024, `${buffered} bytes buffered between client and backend`);
    assert.ok(peak - before < 20 * 1024, `bal grew ${peak - before} KiB`);
    figures.slow_reader = {
      seconds: SECONDS,
      client_wrote_bytes: written,
      backend_read_bytes: read,
      in_flight_bytes: buffered,
      bal_rss_growth_kib: peak - before,
    };
  } finally {
    await d.stop();
    await slow.close();
  }
});

Deno.test("chaos: a backend whose port is closed: every client goes to the other, refused is counted", async () => {
  const closed = freePort();
  await withFault(closed, {}, async (d, port) => {
    for (let i = 0; i < 10; i++) assert.equal(await askName(port), "G");
    const s = JSON.parse((await bal(d.home, "status", "--json")).stdout);
    assert.ok(s.backends[0].counters.refused >= 1);
  });
});

Deno.test("chaos: a blackholed backend: the connect times out, the client is served by the other", async () => {
  // A listener with a backlog of 0 whose queue is full drops further SYNs: a blackhole.
  const hole = new Deno.Command("python3", {
    args: [
      "-c",
      "import socket,sys,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\nfill=[socket.create_connection(s.getsockname()) for _ in range(2)]\ntime.sleep(60)",
    ],
    stdout: "piped",
  }).spawn();
  const reader = hole.stdout.getReader();
  const holePort = Number(new TextDecoder().decode((await reader.read()).value).trim());
  reader.releaseLock();
  try {
    await withFault(holePort, { backend_connect_timeout_ms: 300 }, async (d, port) => {
      const started = Date.now();
      const names = [];
      for (let i = 0; i < 6; i++) names.push(await askName(port));
      assert.deepEqual(new Set(names), new Set(["G"]));
      const s = JSON.parse((await bal(d.home, "status", "--json")).stdout);
      assert.ok(s.backends[0].counters.timeout >= 1, JSON.stringify(s.backends[0].counters));
      // The cooldown spares later clients the 300 ms wait.
      figures.blackhole_six_clients_ms = Date.now() - started;
      assert.ok(Date.now() - started < 6 * 300, "every client waited for the timeout");
    });
  } finally {
    hole.kill("SIGKILL");
    await hole.status;
    await hole.stdout.cancel().catch(() => {});
  }
  record("backend_faults", figures);
});
