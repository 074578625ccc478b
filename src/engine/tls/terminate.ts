/**
 * Terminating a client's TLS (`tls:` on a service): the handshake over the
 * connection bal accepted, the certificate chosen by the client's server
 * name (a route's own certificates first, then the service's by their
 * names, then its first), the client certificate verified against
 * `client_ca_file`, all within `handshake_timeout_ms`. What it gives is
 * the plain stream and what the handshake said (server name, ALPN,
 * version, client certificate), for routing and the PROXY v2 header.
 *
 * @module
 */
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import type { TlsCertificate, TlsTerminate } from "../../config/schema.ts";
import { certificateFacts } from "../../config/certificates.ts";
import type { Stream } from "../../net/stream.ts";
import type { TlsFacts } from "../../route/proxy_protocol.ts";
import { duplexOver, type Flow, flow, handshake, type NodeTls, tlsStream } from "./node_io.ts";

type SecureContext = ReturnType<NodeTls["tls"]["createSecureContext"]>;
type X509 = InstanceType<NodeTls["crypto"]["X509Certificate"]>;

/** A set of certificates, each with the names it is chosen by. */
type Choice = { names: string[]; context: SecureContext }[];

/** A service's contexts, built once per config snapshot. */
interface Contexts {
  main: Choice;
  routes: Map<string, Choice>;
  /** The CAs client certificates must be issued by; empty when none are asked for. */
  cas: X509[];
}

const built = new WeakMap<TlsTerminate, Contexts>();

function contextsOf(node: NodeTls, tls: TlsTerminate): Contexts {
  let found = built.get(tls);
  if (found) return found;
  const ca = tls.client_ca?.pem;
  const minVersion = tls.min_version === "1.3" ? "TLSv1.3" : "TLSv1.2";
  const choice = (certs: readonly TlsCertificate[]): Choice =>
    certs.map((c) => ({
      names: certificateFacts(node.crypto, c.cert_pem).names,
      context: node.tls.createSecureContext({ cert: c.cert_pem, key: c.key_pem, ca, minVersion }),
    }));
  found = {
    main: choice(tls.certificates),
    routes: new Map(Object.entries(tls.route_certificates).map(([r, c]) => [r, choice(c)])),
    cas: ca ? splitPem(ca).map((pem) => new node.crypto.X509Certificate(pem)) : [],
  };
  built.set(tls, found);
  return found;
}

/** Each certificate of a PEM bundle. */
function splitPem(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/** The context for `name`: an exact name, then a `*.` wildcard one label deep, then the first. */
function pick(choice: Choice, name: string): SecureContext {
  const exact = choice.find((c) => c.names.includes(name));
  if (exact) return exact.context;
  const dot = name.indexOf(".");
  const wild = dot > 0 ? `*${name.slice(dot)}` : null;
  return (choice.find((c) => wild !== null && c.names.includes(wild)) ?? choice[0]).context;
}

/** A finished handshake: the plain stream, and what it said. */
export interface Terminated {
  /** The client's plain bytes, both ways. */
  stream: Stream;
  socket: TLSSocket;
  /** Server name (lowercase), ALPN, version, the client certificate. */
  facts: TlsFacts;
}

/** How to terminate one client. */
export interface TerminateRequest {
  tls: TlsTerminate;
  /** The accepted connection, and what was read off it already (after a PROXY header). */
  conn: Stream;
  first: Uint8Array | null;
  /** The route a server name leads to, for a route's own certificates. */
  routeOf(sni: string | null): string | null;
}

/** The handshake, done; or why it failed, in words. */
export function terminate(node: NodeTls, req: TerminateRequest): Promise<Terminated | string> {
  const { tls } = req;
  const contexts = contextsOf(node, tls);
  const held = flow();
  const under = duplexOver(node, req.conn, req.first, held);
  const socket = new node.tls.TLSSocket(under, {
    isServer: true,
    secureContext: contexts.main[0].context,
    SNICallback(name: string, give: (err: Error | null, ctx?: SecureContext) => void) {
      const sni = name ? name.toLowerCase() : null;
      const route = req.routeOf(sni);
      const own = route !== null ? contexts.routes.get(route) : undefined;
      give(null, pick(own && own.length > 0 ? own : contexts.main, sni ?? ""));
    },
    ALPNProtocols: tls.alpn.length > 0 ? [...tls.alpn] : undefined,
    requestCert: tls.client_ca !== null,
    rejectUnauthorized: tls.client_ca !== null && tls.client_auth === "required",
  });
  return handshake(
    socket,
    under,
    "secure",
    tls.handshake_timeout_ms,
    () =>
      clientCertRefusal(node, socket, contexts, tls) ??
        finished(socket, held, under, tls.client_ca !== null),
  );
}

function finished(
  socket: TLSSocket,
  held: Flow,
  under: Duplex,
  askedCert: boolean,
): Terminated {
  const servername = (socket as TLSSocket & { servername?: string | false }).servername;
  // Reading the peer's certificate parses it: only where one was asked for.
  const peer = askedCert ? socket.getPeerCertificate() : null;
  const shown = peer !== null && typeof peer === "object" && "raw" in peer;
  const cn = shown ? peer.subject?.CN : undefined;
  return {
    stream: tlsStream(socket, held, under),
    socket,
    facts: {
      sni: typeof servername === "string" && servername ? servername.toLowerCase() : null,
      alpn: typeof socket.alpnProtocol === "string" ? socket.alpnProtocol : null,
      version: socket.getProtocol() ?? "",
      clientCert: shown,
      clientCn: typeof cn === "string" ? cn : null,
    },
  };
}

/**
 * Why a client certificate is refused, or null. Deno's `node:tls` asks
 * for one but does not check it against `ca`, so bal does: the certificate
 * must be in its validity period and issued and signed by one of the CAs
 * (directly; intermediates are not followed). Without one, `required`
 * already failed the handshake.
 */
function clientCertRefusal(
  node: NodeTls,
  socket: TLSSocket,
  contexts: Contexts,
  tls: TlsTerminate,
): string | null {
  if (!tls.client_ca) return null;
  const peer = socket.getPeerCertificate();
  const raw = peer && "raw" in peer ? peer.raw : undefined;
  if (!raw) return tls.client_auth === "required" ? "no client certificate" : null;
  let cert: X509;
  try {
    cert = new node.crypto.X509Certificate(raw);
  } catch {
    return "a client certificate that does not parse";
  }
  const now = Date.now();
  if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) < now) {
    return "a client certificate outside its validity period";
  }
  const issued = contexts.cas.some((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey));
  return issued ? null : "a client certificate not issued by client_ca_file";
}
