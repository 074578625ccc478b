/**
 * Originating TLS to a backend (`backend_tls:`): the handshake over the
 * connection bal dialed, the backend's certificate verified against
 * `ca_file` (or the system's CAs) and the server name unless `verify:
 * false`, a client certificate shown when one is set.
 *
 * @module
 */
import type { TLSSocket } from "node:tls";
import type { BackendTls } from "../../config/schema.ts";
import type { Stream } from "../../net/stream.ts";
import { duplexOver, flow, handshake, type NodeTls, tlsStream } from "./node_io.ts";

/** A backend reached through TLS: its plain side, and the socket (to close). */
export interface Originated {
  stream: Stream;
  socket: TLSSocket;
}

/** The name a backend is asked for and checked against: `server_name`, else its host when a name. */
export function serverNameOf(tls: BackendTls, host: string): string | undefined {
  if (tls.server_name) return tls.server_name;
  return /^[\d.]+$/.test(host) || host.includes(":") ? undefined : host;
}

/** The handshake with a backend over `conn`, within `timeoutMs`; or why it failed, in words. */
export async function originate(
  node: NodeTls,
  conn: Stream,
  tls: BackendTls,
  host: string,
  timeoutMs: number,
): Promise<Originated | string> {
  const servername = serverNameOf(tls, host);
  const held = flow();
  const under = duplexOver(node, conn, null, held);
  const socket = node.tls.connect({
    socket: under,
    servername,
    ca: tls.ca ? tls.ca.pem : undefined,
    // bal decides from `authorized`, so the reason is its own to say.
    rejectUnauthorized: false,
    cert: tls.certificate?.cert_pem,
    key: tls.certificate?.key_pem,
  });
  const done = await handshake(
    socket,
    under,
    "secureConnect",
    timeoutMs,
    () =>
      tls.verify && !socket.authorized
        ? `certificate not verified (${socket.authorizationError ?? "unknown"})`
        : { stream: tlsStream(socket, held, under), socket },
  );
  return typeof done === "string" ? `TLS: ${done}` : done;
}
