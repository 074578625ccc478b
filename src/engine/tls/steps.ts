/**
 * The TLS steps of a session on Deno's sockets: for a service with `tls:`,
 * the inspect step terminates the client's TLS (after its PROXY header,
 * when one is expected) and its server name picks the route; for a backend
 * with `backend_tls:`, the connect step ends with the TLS handshake to it.
 * A failed client handshake is a refusal (`tls_handshake`); a failed
 * backend one fails that connect, as a refused connect would.
 *
 * @module
 */
import type { BackendTls, Service, TlsTerminate } from "../../config/schema.ts";
import type { Preface } from "../../route/preface.ts";
import type { Stream } from "../../net/stream.ts";
import { refuse } from "../admission.ts";
import { inspector, routeOf } from "../inspect.ts";
import type { Plane, SessionBase } from "../plane.ts";
import { readPreface } from "../deno/preface_read.ts";
import { loadNodeTls } from "./node_io.ts";
import { terminate, type Terminated } from "./terminate.ts";
import { originate, type Originated } from "./originate.ts";

/** What a Deno-socket session holds that TLS changes. */
export interface TlsSession extends SessionBase {
  client: Deno.TcpConn;
  /** What the relay reads the client from: after termination, its plain bytes. */
  from: Stream;
  /** The client's terminated TLS, once its handshake finished. */
  clientTls: Terminated | null;
  /** The backend's TLS, once its handshake finished. */
  backendTls: Originated | null;
}

/**
 * Reads a PROXY header when the service takes one, then terminates the
 * client's TLS. Resolves to what the inspect step judges: the preface
 * (the handshake's server name as its hello, for routes), or a refusal
 * ("" once counted here).
 */
export async function terminateClient<S extends TlsSession>(
  plane: Plane<S>,
  s: S,
  service: Service,
  tls: TlsTerminate,
): Promise<Preface | string> {
  let proxied: Preface | null = null;
  if (service.accept_proxy) {
    const { read, from } = await readPreface(s.client, inspector(plane, s, service));
    if (typeof read === "string") return read;
    s.from = from;
    proxied = read;
  }
  const done = await terminate(await loadNodeTls(), {
    tls,
    conn: s.from,
    first: proxied?.early ?? null,
    routeOf: (sni) => routeOf(service, sni),
  });
  if (s.finished) {
    if (typeof done !== "string") done.socket.destroy();
    return "";
  }
  if (typeof done === "string") {
    refuse(plane, service, s.peer, "tls_handshake", done, false);
    s.closing = "tls_handshake";
    return "";
  }
  s.clientTls = done;
  s.tls = done.facts;
  s.from = done.stream;
  return {
    source: proxied?.source ?? null,
    destination: proxied?.destination ?? null,
    hello: service.routes.length > 0 ? { kind: "hello", sni: done.facts.sni } : null,
    early: null,
  };
}

/**
 * The TLS handshake with `backend` over `conn`, just dialed, within what is
 * left of the connect timeout: the plain stream, or why it failed.
 */
export async function originateTo(
  s: TlsSession,
  tls: BackendTls,
  host: string,
  conn: Deno.TcpConn,
  timeoutMs: number,
): Promise<Stream | string> {
  const done = await originate(await loadNodeTls(), conn, tls, host, timeoutMs);
  if (typeof done === "string") return done;
  s.backendTls = done;
  return done.stream;
}
