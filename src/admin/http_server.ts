/**
 * The small HTTP/1.1 server the admin endpoint runs on: keep-alive, request
 * bodies up to {@link BODY_MAX} bytes with a `content-length` (no chunks). bal keeps its own accept loop and timers
 * rather than `Deno.serve`, whose accept loop ended for good the first
 * time accepting failed with EMFILE, and which has no header or idle
 * timeout: 1,500 slowloris clients held 1,500 descriptors for minutes.
 *
 * - Accepting backs off 50 ms while the process is out of descriptors or
 *   memory, and goes on; any other failed accept is that client's alone.
 * - A request's head must arrive within `headerTimeoutMs` (counted from
 *   the connection, then from each request's first byte), at most
 *   {@link HEAD_MAX} bytes; an idle keep-alive connection is closed after
 *   `idleTimeoutMs`, and so is one whose client stops reading an answer.
 * - Past `maxConnections`, new clients are closed at once.
 *
 * @module
 */
import { isExhaustion } from "../net/errno.ts";
import { describeError } from "../errors.ts";
import { episode, logger } from "../log.ts";

const log = logger("admin");

/** The most a request's line and headers may take. */
export const HEAD_MAX = 16 * 1024;
/** The most a request's body may take: a config file's own limit. */
export const BODY_MAX = 1024 * 1024;

/** Timeouts and the connection cap. */
export interface HttpLimits {
  headerTimeoutMs: number;
  idleTimeoutMs: number;
  maxConnections: number;
}

/** What answers a request; a throw becomes a 500, logged with its cause. */
export type HttpHandler = (req: Request) => Response | Promise<Response>;

/** A running server. */
export interface HttpServer {
  /** Clients connected now. */
  connections(): number;
  /** Stops accepting and closes every connection; resolves once the accept loop has ended. */
  close(): Promise<void>;
}

/** Serves `handler` on `listener` until closed; `limits()` is read per connection (reloads). */
export function serveHttp(
  listener: Deno.TcpListener,
  handler: HttpHandler,
  limits: () => HttpLimits,
): HttpServer {
  const open = new Set<Deno.Conn>();
  let closing = false;
  const accepting = acceptLoop(listener, () => closing, (conn) => {
    if (open.size >= limits().maxConnections) {
      refuseConnection(conn, limits().maxConnections);
      return;
    }
    open.add(conn);
    serveConnection(conn, handler, limits()).finally(() => open.delete(conn));
  });
  return {
    connections: () => open.size,
    async close() {
      closing = true;
      closeQuietly(listener);
      for (const conn of open) closeQuietly(conn);
      await accepting;
    },
  };
}

/** Counts refusals at the cap, said at most once per episode. */
const atCap = episode();

function refuseConnection(conn: Deno.Conn, max: number): void {
  if (atCap.fail()) {
    log.warn("admin endpoint at its {max} connections: new clients are closed", {
      event: "admin_connections_full",
      max,
    });
  }
  closeQuietly(conn);
}

async function acceptLoop(
  listener: Deno.TcpListener,
  closing: () => boolean,
  onConn: (conn: Deno.Conn) => void,
): Promise<void> {
  const failing = episode();
  for (;;) {
    let conn: Deno.Conn;
    try {
      conn = await listener.accept();
    } catch (err) {
      if (closing()) return;
      if (!isExhaustion(err)) continue;
      if (failing.fail()) {
        log.error("admin endpoint cannot accept: {error}; retrying every 50 ms", {
          event: "admin_accept_failed",
          error: describeError(err),
        });
      }
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    const failures = failing.recover();
    if (failures !== null) {
      log.info("admin endpoint accepting again after {failures} failed accepts", {
        event: "admin_accept_recovered",
        failures,
      });
    }
    atCap.recover();
    onConn(conn);
  }
}

/** One request's head, parsed. */
interface Head {
  method: string;
  target: string;
  headers: Headers;
  /** The client wants the connection kept open after the answer. */
  keepAlive: boolean;
  /** Bytes of body announced. */
  length: number;
}

/** Serves requests on `conn` until the client closes, a limit is hit, or `Connection: close`. */
async function serveConnection(conn: Deno.Conn, handler: HttpHandler, limits: HttpLimits) {
  const reader = headReader(conn);
  try {
    for (let first = true;; first = false) {
      // The first request's head is due from the connection on; later ones may idle first.
      const head = await reader.next(first ? limits.headerTimeoutMs : limits.idleTimeoutMs, limits);
      if (head === null) return;
      if (typeof head === "number") {
        await send(conn, plain(head), "GET", false, limits.idleTimeoutMs);
        return;
      }
      const body = head.length > BODY_MAX
        ? null
        : await reader.body(head.length, limits.headerTimeoutMs);
      if (head.length > 0 && body === null && head.length <= BODY_MAX) return;
      const res = body === null ? plain(413) : await answer(handler, head, body, conn);
      const keep = head.keepAlive && body !== null;
      if (!(await send(conn, res, head.method, keep, limits.idleTimeoutMs)) || !keep) return;
    }
  } finally {
    closeQuietly(conn);
  }
}

async function answer(
  handler: HttpHandler,
  head: Head,
  body: Uint8Array,
  conn: Deno.Conn,
): Promise<Response> {
  const host = head.headers.get("host") ?? "admin";
  const withBody = body.length > 0 && head.method !== "GET" && head.method !== "HEAD";
  try {
    return await handler(
      new Request(`http://${host}${head.target}`, {
        method: head.method,
        headers: head.headers,
        body: withBody ? body as Uint8Array<ArrayBuffer> : undefined,
      }),
    );
  } catch (err) {
    log.error("admin {method} {path} failed: {error}", {
      event: "admin_error",
      method: head.method,
      path: head.target,
      client: (conn.remoteAddr as Deno.NetAddr).hostname,
      error: describeError(err),
    });
    return plain(500, `internal error: ${describeError(err)}\n`);
  }
}

const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  409: "Conflict",
  408: "Request Timeout",
  413: "Content Too Large",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
};

function plain(status: number, body = `${REASONS[status] ?? "Error"}\n`): Response {
  return new Response(body, { status, headers: { "content-type": "text/plain; charset=utf-8" } });
}

const encoder = new TextEncoder();

/**
 * Writes the answer; false when it could not be written in time (a client
 * that does not read is closed after `timeoutMs`) or at all.
 */
async function send(
  conn: Deno.Conn,
  res: Response,
  method: string,
  keepAlive: boolean,
  timeoutMs: number,
): Promise<boolean> {
  const body = new Uint8Array(await res.arrayBuffer());
  const lines = [`HTTP/1.1 ${res.status} ${REASONS[res.status] ?? res.statusText ?? ""}`];
  for (const [k, v] of res.headers) lines.push(`${k}: ${v}`);
  lines.push(`content-length: ${body.length}`, `connection: ${keepAlive ? "keep-alive" : "close"}`);
  const head = encoder.encode(lines.join("\r\n") + "\r\n\r\n");
  const timer = setTimeout(() => closeQuietly(conn), timeoutMs);
  try {
    await writeAll(conn, head);
    if (method !== "HEAD") await writeAll(conn, body);
    return true;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

/** Reads request heads off a connection, keeping what follows one for the next. */
function headReader(conn: Deno.Conn) {
  let buf = new Uint8Array(0);
  const chunk = new Uint8Array(4096);
  return {
    /**
     * The next head; null when the client closed or went quiet past the
     * timeout before sending anything; a status number when the head is
     * bad (400), too large (431) or uses what is not served (a late one
     * is answered 408 by the timer, which closes the connection).
     */
    async next(timeoutMs: number, limits: HttpLimits): Promise<Head | number | null> {
      let started = buf.length > 0;
      // A read cannot be called off but by closing: a client that began a request hears why first.
      const expire = () => {
        if (!started) return closeQuietly(conn);
        conn.write(TIMED_OUT).catch(() => {}).finally(() => closeQuietly(conn));
      };
      let timer = setTimeout(expire, timeoutMs);
      try {
        for (;;) {
          const end = headEnd(buf);
          if (end >= 0) {
            const head = parseHead(new TextDecoder().decode(buf.subarray(0, end)));
            buf = buf.slice(end + 4);
            return head;
          }
          if (buf.length > HEAD_MAX) return 431;
          const n = await conn.read(chunk).catch(() => null);
          if (n === null) return null;
          if (!started) {
            // The first byte of a request: its head is due within the header timeout.
            started = true;
            clearTimeout(timer);
            timer = setTimeout(expire, limits.headerTimeoutMs);
          }
          const next = new Uint8Array(buf.length + n);
          next.set(buf);
          next.set(chunk.subarray(0, n), buf.length);
          buf = next;
        }
      } finally {
        clearTimeout(timer);
      }
    },
    /** The next `n` bytes (a body), or null when the client closed or stalled past `timeoutMs`. */
    async body(n: number, timeoutMs: number): Promise<Uint8Array | null> {
      const timer = setTimeout(() => closeQuietly(conn), timeoutMs);
      try {
        while (buf.length < n) {
          const got = await conn.read(chunk).catch(() => null);
          if (got === null) return null;
          const next = new Uint8Array(buf.length + got);
          next.set(buf);
          next.set(chunk.subarray(0, got), buf.length);
          buf = next;
        }
        const out = buf.slice(0, n);
        buf = buf.slice(n);
        return out;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

const TIMED_OUT = encoder.encode(
  "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 16\r\nconnection: close\r\n\r\nRequest Timeout\n",
);

function headEnd(buf: Uint8Array): number {
  for (let i = 0; i + 3 < buf.length; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i;
  }
  return -1;
}

const REQUEST_LINE = /^([A-Z]+) (\/[^ ]*) HTTP\/1\.([01])$/;
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/;

/** A request head, or the status that refuses it. */
export function parseHead(text: string): Head | number {
  const [line, ...rest] = text.split("\r\n");
  const m = REQUEST_LINE.exec(line);
  if (!m) return 400;
  const headers = new Headers();
  for (const h of rest) {
    const hm = HEADER_LINE.exec(h);
    if (!hm) return 400;
    try {
      headers.append(hm[1], hm[2]);
    } catch {
      return 400;
    }
  }
  if (headers.has("transfer-encoding")) return 501;
  const length = headers.get("content-length");
  if (length !== null && !/^\d+$/.test(length)) return 400;
  const connection = (headers.get("connection") ?? "").toLowerCase();
  const keepAlive = m[3] === "1"
    ? !connection.includes("close")
    : connection.includes("keep-alive");
  return { method: m[1], target: m[2], headers, keepAlive, length: Number(length ?? 0) };
}

function closeQuietly(c: Deno.Conn | Deno.Listener): void {
  try {
    c.close();
  } catch {
    // Already closed.
  }
}
