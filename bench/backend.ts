/**
 * Benchmark backends, one process: HTTP-like responders that answer every
 * request (up to the blank line) with a 40-byte body, keeping the connection
 * unless asked to close, and a sink that reads and discards (bulk).
 *
 *   deno run --allow-net bench/backend.ts --http 9001,9002 --sink 9003
 *
 * @module
 */
const BODY = "0123456789012345678901234567890123456789";
const encoder = new TextEncoder();
const KEEP = encoder.encode(`HTTP/1.1 200 OK\r\nContent-Length: ${BODY.length}\r\n\r\n${BODY}`);
const CLOSE = encoder.encode(
  `HTTP/1.1 200 OK\r\nContent-Length: ${BODY.length}\r\nConnection: close\r\n\r\n${BODY}`,
);

function arg(name: string): number[] {
  const i = Deno.args.indexOf(`--${name}`);
  return i < 0 ? [] : Deno.args[i + 1].split(",").map(Number);
}

/** Index of "\r\n\r\n" ending a request in buf[0..n), or -1. */
function headerEnd(buf: Uint8Array, n: number): number {
  for (let i = 3; i < n; i++) {
    if (buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) return i + 1;
  }
  return -1;
}

async function http(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(4096);
  let have = 0;
  try {
    for (;;) {
      const n = await conn.read(buf.subarray(have));
      if (n === null) return;
      have += n;
      let end;
      while ((end = headerEnd(buf, have)) >= 0) {
        const close = new TextDecoder().decode(buf.subarray(0, end)).toLowerCase().includes(
          "connection: close",
        );
        await conn.write(close ? CLOSE : KEEP);
        if (close) return;
        buf.copyWithin(0, end, have);
        have -= end;
      }
    }
  } catch {
    // client went away
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

async function sink(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(256 * 1024);
  try {
    while ((await conn.read(buf)) !== null) { /* discard */ }
  } catch { /* reset */ }
  try {
    conn.close();
  } catch { /* closed */ }
}

async function serve(port: number, handler: (c: Deno.Conn) => Promise<void>) {
  const l = Deno.listen({ hostname: "127.0.0.1", port });
  for (;;) {
    try {
      handler(await l.accept());
    } catch {
      // EMFILE under the hold workloads: wait for fds instead of dying.
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

for (const p of arg("http")) serve(p, http);
for (const p of arg("sink")) serve(p, sink);
console.log("ready");
