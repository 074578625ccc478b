/**
 * Asking a DNS server one question: over UDP, and again over TCP when the
 * answer did not fit (TC). The server is the config's `resolver`, else the
 * first `nameserver` of /etc/resolv.conf.
 *
 * @module
 */
import { decodeResponse, encodeQuery, type RecordType, type Response } from "../net/dns_wire.ts";

/** A DNS server. */
export interface Resolver {
  hostname: string;
  port: number;
}

/** How long one question may take, per transport. */
const TIMEOUT_MS = 2000;
/** Largest UDP answer read (EDNS is not asked for, so 512 in practice). */
const UDP_MAX = 4096;

/** The system's resolver: the first `nameserver` of /etc/resolv.conf, else 127.0.0.53. */
export function systemResolver(): Resolver {
  try {
    const text = Deno.readTextFileSync("/etc/resolv.conf");
    const m = /^\s*nameserver\s+(\S+)/m.exec(text);
    if (m) return { hostname: m[1], port: 53 };
  } catch {
    // No resolv.conf: systemd-resolved's stub is the usual answer on Linux.
  }
  return { hostname: "127.0.0.53", port: 53 };
}

/** `name`'s records of `type` from `server`, or why there is no answer. */
export async function lookup(
  server: Resolver,
  name: string,
  type: RecordType,
): Promise<Response | string> {
  const id = Math.floor(Math.random() * 0x10000);
  const query = encodeQuery(id, name, type);
  const udp = await overUdp(server, query, id).catch((e) => `${describe(e)} (UDP)`);
  if (typeof udp !== "string" && !udp.truncated) return udp;
  const tcp = await overTcp(server, query, id).catch((e) => `${describe(e)} (TCP)`);
  return typeof tcp === "string" && typeof udp === "string" ? udp : tcp;
}

/** A decoded answer to question `id`, or why it is not one (a broken message is "malformed"). */
function answerOf(r: Response | string, id: number): Response | string {
  if (typeof r === "string") return `malformed answer: ${r}`;
  return r.id === id ? r : "answer to another question";
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** One UDP exchange; the answer must carry our id. */
async function overUdp(
  server: Resolver,
  query: Uint8Array,
  id: number,
): Promise<Response | string> {
  const v6 = server.hostname.includes(":");
  const socket = Deno.listenDatagram({
    transport: "udp",
    hostname: v6 ? "::" : "0.0.0.0",
    port: 0,
  });
  const timer = setTimeout(() => socket.close(), TIMEOUT_MS);
  try {
    await socket.send(query, { transport: "udp", ...server });
    for (;;) {
      const [data] = await socket.receive(new Uint8Array(UDP_MAX)).catch(() => [null]);
      if (!data) return `no answer from ${server.hostname}:${server.port} within ${TIMEOUT_MS} ms`;
      // A datagram without our id is stray or forged: keep waiting for ours.
      if (data.length < 2 || ((data[0] << 8) | data[1]) !== id) continue;
      return answerOf(decodeResponse(data), id);
    }
  } finally {
    clearTimeout(timer);
    try {
      socket.close();
    } catch {
      // Closed by the timer.
    }
  }
}

/** One TCP exchange: a two-byte length before the message, both ways. */
async function overTcp(
  server: Resolver,
  query: Uint8Array,
  id: number,
): Promise<Response | string> {
  const conn = await Deno.connect(server);
  const timer = setTimeout(() => conn.close(), TIMEOUT_MS);
  try {
    const framed = new Uint8Array(2 + query.length);
    new DataView(framed.buffer).setUint16(0, query.length);
    framed.set(query, 2);
    for (let off = 0; off < framed.length;) off += await conn.write(framed.subarray(off));
    const head = await readExactly(conn, 2);
    const body = head && await readExactly(conn, (head[0] << 8) | head[1]);
    if (!body) return `${server.hostname}:${server.port} closed before a whole answer`;
    return answerOf(decodeResponse(body), id);
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the timer.
    }
  }
}

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array | null> {
  const buf = new Uint8Array(n);
  for (let off = 0; off < n;) {
    const got = await conn.read(buf.subarray(off)).catch(() => null);
    if (got === null) return null;
    off += got;
  }
  return buf;
}
