/**
 * The control socket `bal.sock` (mode 0600, in the state directory): one
 * JSON request per connection, one JSON answer, then close. Served by the
 * control plane; a request is bounded in size and time, so a stuck or
 * hostile peer cannot hold it.
 *
 * @module
 */
import { writeAll } from "../net/stream.ts";
import { describeError } from "../errors.ts";

/** Largest request read, in bytes. */
const MAX_REQUEST = 64 * 1024;
/** A request must arrive within this long. */
const REQUEST_TIMEOUT_MS = 2000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Answers one parsed request: a JSON-serialisable value. */
export type Handler = (request: Record<string, unknown>) => unknown | Promise<unknown>;

/** A serving control socket. */
export interface ControlSocket {
  /** Stops serving; resolves once its path is gone. */
  close(): Promise<void>;
}

async function readRequest(conn: Deno.Conn): Promise<string> {
  const buf = new Uint8Array(MAX_REQUEST);
  let have = 0;
  const deadline = setTimeout(() => conn.close(), REQUEST_TIMEOUT_MS);
  try {
    while (have < buf.length) {
      const n = await conn.read(buf.subarray(have));
      if (n === null) break;
      have += n;
      if (buf.subarray(0, have).includes(10)) break;
    }
  } finally {
    clearTimeout(deadline);
  }
  return decoder.decode(buf.subarray(0, have));
}

async function answer(conn: Deno.Conn, handler: Handler): Promise<void> {
  let reply: unknown;
  try {
    const request = JSON.parse((await readRequest(conn)).split("\n")[0]);
    if (typeof request !== "object" || request === null || Array.isArray(request)) {
      throw new Error("not an object");
    }
    reply = await handler(request as Record<string, unknown>);
  } catch (err) {
    reply = {
      error: `bad request: ${describeError(err)}; send one JSON object such as {"cmd":"status"}`,
    };
  }
  await writeAll(conn, encoder.encode(JSON.stringify(reply) + "\n"));
}

/** Listens on `path` (replacing a stale socket file) and answers with `handler`. */
export function serveControl(path: string, handler: Handler): ControlSocket {
  try {
    Deno.removeSync(path);
  } catch {
    // No stale socket.
  }
  const listener = Deno.listen({ transport: "unix", path });
  Deno.chmodSync(path, 0o600);
  let closed = false;
  (async () => {
    while (!closed) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        if (closed) return;
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      answer(conn, handler).catch(() => {}).finally(() => {
        try {
          conn.close();
        } catch {
          // closed by the timeout
        }
      });
    }
  })();
  return {
    async close() {
      closed = true;
      try {
        listener.close();
      } catch {
        // already closed
      }
      await pathGone(path);
    },
  };
}

/**
 * Deno unlinks a Unix listener's path a turn or two after `close()`: a
 * process that exits first leaves it behind (a stale socket for `bal
 * status` to report), and one that hands its path on (`bal upgrade`) must
 * not have that late unlink remove its successor's socket. So the close
 * waits for the unlink, and removes the path itself should it not come.
 */
async function pathGone(path: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (!(await Deno.lstat(path).then(() => true, () => false))) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  await Deno.remove(path).catch(() => {});
}

/** The other end took the request but did not answer in time (busy, or stopped). */
export class NoAnswer extends Error {
  constructor(readonly timeoutMs: number, options?: ErrorOptions) {
    super(`no answer within ${timeoutMs} ms (the process is busy)`, options);
    this.name = "NoAnswer";
  }
}

/** Sends one request to the socket at `path` and returns the parsed answer. */
export async function request(
  path: string,
  body: Record<string, unknown>,
  timeoutMs = 3000,
): Promise<unknown> {
  const conn = await Deno.connect({ transport: "unix", path });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, timeoutMs);
  try {
    await writeAll(conn, encoder.encode(JSON.stringify(body) + "\n"));
    // Decoded as it arrives (a streaming decoder keeps split characters whole).
    const stream = new TextDecoder();
    const buf = new Uint8Array(64 * 1024);
    let text = "";
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
      text += stream.decode(buf.subarray(0, n), { stream: true });
    }
    return JSON.parse(text + stream.decode());
  } catch (err) {
    // Closing the socket at the deadline fails the pending read with "Bad resource ID".
    if (timedOut) throw new NoAnswer(timeoutMs, { cause: err });
    throw err;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // closed
    }
  }
}
