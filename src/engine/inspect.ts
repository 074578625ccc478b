/**
 * The inspect step both engines share, between accept and the first
 * backend: what to read from the client first (a PROXY header with
 * `accept_proxy`, a TLS ClientHello for a service with `routes`), and what
 * the bytes read decide: the client's address, whether it may go on, and
 * its route. The engines only feed bytes to the reader (`route/preface.ts`).
 *
 * @module
 */
import type { Service } from "../config/mod.ts";
import type { HelloRead } from "../route/client_hello.ts";
import { type Preface, type PrefaceReader, prefaceReader } from "../route/preface.ts";
import { routeFor, type RouteTable, routeTable } from "../route/sni.ts";
import { logger } from "../log.ts";
import { admitPeer, proxyRefused, refuse } from "./admission.ts";
import type { Plane, SessionBase } from "./plane.ts";

const log = logger("proxy");

/**
 * Whether a client of `service` must send something before a backend is
 * picked: a PROXY header (`accept_proxy`), a ClientHello (`routes`).
 */
export function inspects(service: Service | undefined): service is Service {
  return service !== undefined &&
    (service.accept_proxy || service.routes.length > 0 || service.tls !== null);
}

/**
 * A reader of what `s`, a client of `service` (one that {@link inspects}),
 * must send first. An engine that can peek may read a ClientHello alone
 * (no `accept_proxy`) without it, within `tls_hello_timeout_ms`.
 */
export function inspector<S extends SessionBase>(
  plane: Plane<S>,
  s: S,
  service: Service,
): PrefaceReader {
  return prefaceReader({
    proxyMs: service.accept_proxy ? service.runtime.proxy_header_timeout_ms : null,
    // A ClientHello bal terminates is the TLS handshake's to read.
    helloMs: service.routes.length > 0 && !service.tls
      ? service.runtime.tls_hello_timeout_ms
      : null,
    onProxy(header) {
      if (header.source) s.peer = header.source;
      s.destination = header.destination;
      return admitPeer(plane, s);
    },
  }, Date.now());
}

/**
 * What the client's first bytes decided: true when it goes on to a backend
 * (`s.early` and `s.route` set); false when it was refused (counted, said,
 * `s.closing` set; the caller closes it).
 */
export function inspected<S extends SessionBase>(
  plane: Plane<S>,
  s: S,
  read: Preface | string,
): boolean {
  if (typeof read === "string") {
    // "": refused by admitPeer, which counted it and set closing.
    if (read !== "") {
      proxyRefused(plane, s, read);
      s.closing = "proxy_refused";
    }
    return false;
  }
  s.early = read.early;
  const service = plane.runtime.snapshot.services.get(s.service);
  if (!service || read.hello === null) return true;
  return routed(plane, s, service, read.hello);
}

/** Tables per service (services are frozen, one object per snapshot). */
const tables = new WeakMap<Service, RouteTable>();

/** The route a server name (or none) leads to in `service`, or null. */
export function routeOf(service: Service, sni: string | null): string | null {
  let table = tables.get(service);
  if (!table) tables.set(service, table = routeTable(service.routes, service.default_route));
  return routeFor(table, sni);
}

/** The route a ClientHello (or bytes that were not one) gives the client; false when none. */
function routed<S extends SessionBase>(
  plane: Plane<S>,
  s: S,
  service: Service,
  hello: HelloRead,
): boolean {
  const sni = hello.kind === "hello" ? hello.sni : null;
  s.route = routeOf(service, sni);
  if (hello.kind === "none") {
    log.debug("no server name from {client}: {reason}", {
      event: "no_sni",
      service: service.name,
      client: s.peer.hostname,
      reason: hello.reason,
      route: s.route,
    });
  }
  if (s.route !== null) return true;
  const why = hello.kind === "none"
    ? hello.reason
    : sni === null
    ? "its ClientHello names no server"
    : `no route for ${sni}`;
  refuse(plane, service, s.peer, "no_route", why, false);
  s.closing = "no_route";
  return false;
}
