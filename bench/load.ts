/**
 * The benchmark's Deno load generator: one workload per run, a JSON line on
 * stdout. Loopback only; every loop is bounded by `--secs` or `--count`.
 *
 *   deno run --allow-net bench/load.ts short     --port P --conns 50 --secs 5
 *   deno run --allow-net bench/load.ts keepalive --port P --conns 50 --secs 5
 *   deno run --allow-net bench/load.ts bulk      --port P --streams 1 --secs 5
 *   deno run --allow-net bench/load.ts hold      --port P --count 1000   (prints "held", waits for stdin to close)
 *   deno run --allow-net bench/load.ts first     --port P --secs 10      (ms until the first proxied response)
 *
 * @module
 */
const encoder = new TextEncoder();
const REQ = encoder.encode("GET / HTTP/1.1\r\nHost: bench\r\n\r\n");
const REQ_CLOSE = encoder.encode("GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
/** The backend's keep-alive response is exactly this long (headers + 40-byte body). */
const RESPONSE_BYTES = 78;

function opt(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(Deno.args[i + 1]);
}

const port = opt("port", 0);
const connect = () => Deno.connect({ hostname: "127.0.0.1", port });

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** One request per connection: connect, ask, read to EOF, close. */
async function short(conns: number, secs: number) {
  const end = performance.now() + secs * 1000;
  let done = 0;
  let errors = 0;
  await Promise.all(Array.from({ length: conns }, async () => {
    const buf = new Uint8Array(1024);
    while (performance.now() < end) {
      try {
        const c = await connect();
        await writeAll(c, REQ_CLOSE);
        while ((await c.read(buf)) !== null) { /* to EOF */ }
        c.close();
        done++;
      } catch {
        errors++;
      }
    }
  }));
  return { rate: done / secs, errors };
}

/** Requests over long-lived connections, with latency percentiles. */
async function keepalive(conns: number, secs: number) {
  const end = performance.now() + secs * 1000;
  const latencies: number[] = [];
  let errors = 0;
  await Promise.all(Array.from({ length: conns }, async () => {
    const buf = new Uint8Array(1024);
    const c = await connect();
    try {
      while (performance.now() < end) {
        const t = performance.now();
        await writeAll(c, REQ);
        let got = 0;
        while (got < RESPONSE_BYTES) {
          const n = await c.read(buf);
          if (n === null) throw new Error("closed");
          got += n;
        }
        latencies.push(performance.now() - t);
      }
    } catch {
      errors++;
    } finally {
      c.close();
    }
  }));
  latencies.sort((a, b) => a - b);
  const pct = (p: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? 0;
  return { rate: latencies.length / secs, p50_ms: pct(0.5), p99_ms: pct(0.99), errors };
}

/** Streams writing as fast as they can into a sink backend. */
async function bulk(streams: number, secs: number) {
  const chunk = new Uint8Array(256 * 1024);
  const end = performance.now() + secs * 1000;
  let bytes = 0;
  await Promise.all(Array.from({ length: streams }, async () => {
    const c = await connect();
    try {
      while (performance.now() < end) bytes += await c.write(chunk);
    } finally {
      c.close();
    }
  }));
  return { gbit_s: (bytes * 8) / secs / 1e9 };
}

/** Opens `count` proxied keep-alive connections (one request each) and holds them. */
async function hold(count: number) {
  const conns: Deno.Conn[] = [];
  const buf = new Uint8Array(1024);
  let errors = 0;
  for (let i = 0; i < count; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, count - i) }, async () => {
      try {
        const c = await connect();
        await writeAll(c, REQ);
        let got = 0;
        while (got < RESPONSE_BYTES) {
          const n = await c.read(buf);
          // Closed before the answer (a proxy at its connection limit): not held.
          if (n === null) throw new Error("closed");
          got += n;
        }
        conns.push(c);
      } catch {
        errors++;
      }
    }));
  }
  console.log(JSON.stringify({ held: conns.length, errors }));
  // Held until the orchestrator closes our stdin.
  for await (const _ of Deno.stdin.readable) { /* wait */ }
  for (const c of conns) c.close();
  return null;
}

/** Milliseconds from now until a request through the proxy is first answered. */
async function first(secs: number) {
  const start = performance.now();
  const end = start + secs * 1000;
  const buf = new Uint8Array(1024);
  while (performance.now() < end) {
    try {
      const c = await connect();
      await writeAll(c, REQ_CLOSE);
      const n = await c.read(buf);
      c.close();
      if (n !== null && n > 0) return { ms: performance.now() - start };
    } catch {
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  return { ms: null };
}

const workload = Deno.args[0];
const secs = opt("secs", 5);
const result = workload === "short"
  ? await short(opt("conns", 50), secs)
  : workload === "keepalive"
  ? await keepalive(opt("conns", 50), secs)
  : workload === "bulk"
  ? await bulk(opt("streams", 1), secs)
  : workload === "hold"
  ? await hold(opt("count", 1000))
  : workload === "first"
  ? await first(secs)
  : (() => {
    throw new Error(`unknown workload ${workload}`);
  })();
if (result) console.log(JSON.stringify(result));
