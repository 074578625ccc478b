/**
 * A check's connection, TCP or TLS, as one small interface: write, read
 * the next chunk, close. TLS goes through `node:tls` (loaded only when a
 * TLS check runs) because Deno's own TLS always verifies certificates,
 * and backends often use private CAs.
 *
 * @module
 */
import type { TlsCheck } from "../config/mod.ts";
import { ioReason } from "../errors.ts";

/** A connected check socket. */
export interface Channel {
  write(bytes: Uint8Array): Promise<void>;
  /** The next bytes, or null at the end of the stream. */
  read(): Promise<Uint8Array | null>;
  close(): void;
}

/** A TLS channel, with what the handshake learnt. */
export interface TlsChannel extends Channel {
  /** Whether the certificate verified against the CAs. */
  authorized: boolean;
  /** Why it did not, or null. */
  authorizationError: string | null;
  /** When the certificate expires (epoch ms), or null if unknown. */
  expiresAt: number | null;
}

/** A TCP connection as a channel. */
export function tcpChannel(conn: Deno.Conn): Channel {
  const buf = new Uint8Array(16 * 1024);
  return {
    async write(bytes) {
      for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
    },
    async read() {
      const n = await conn.read(buf);
      return n === null ? null : buf.slice(0, n);
    },
    close() {
      try {
        conn.close();
      } catch {
        // Already closed (by the check's timeout).
      }
    },
  };
}

/** Opens a TLS channel; the handshake completes before it resolves. */
export async function tlsChannel(
  host: string,
  port: number,
  tls: TlsCheck,
  timeoutMs: number,
): Promise<TlsChannel> {
  const { connect } = await import("node:tls");
  const ca = tls.verify && tls.ca_file ? [await readCa(tls.ca_file)] : undefined;
  const socket = connect({
    host,
    port,
    servername: tls.server_name ?? (/^[\d.:]+$/.test(host) ? undefined : host),
    rejectUnauthorized: false,
    ca,
  });
  const chunks: Uint8Array[] = [];
  let ended = false;
  let failure: Error | null = null;
  let wake: () => void = () => {};
  socket.on("data", (d: Uint8Array) => {
    chunks.push(new Uint8Array(d));
    wake();
  });
  socket.on("end", () => {
    ended = true;
    wake();
  });
  socket.on("error", (e: Error) => {
    failure = e;
    wake();
  });
  socket.on("close", () => {
    ended = true;
    wake();
  });
  await handshake(socket, timeoutMs);
  const cert = socket.getPeerCertificate();
  const expires = cert?.valid_to ? Date.parse(cert.valid_to) : NaN;
  return {
    authorized: socket.authorized,
    authorizationError: socket.authorizationError ? String(socket.authorizationError) : null,
    expiresAt: Number.isFinite(expires) ? expires : null,
    write: (bytes) =>
      new Promise((resolve, reject) => socket.write(bytes, (e) => e ? reject(e) : resolve())),
    async read() {
      while (chunks.length === 0 && !ended && !failure) {
        await new Promise<void>((r) => wake = r);
      }
      if (chunks.length) return chunks.shift()!;
      if (failure) throw failure;
      return null;
    },
    close: () => socket.destroy(),
  };
}

async function readCa(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    throw new Error(`tls_ca_file ${path}: ${ioReason(err)}`, { cause: err });
  }
}

function handshake(
  socket: import("node:tls").TLSSocket,
  timeoutMs: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`TLS handshake timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once("error", (e: Error) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}
