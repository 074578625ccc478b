/**
 * The epoll engine's inspect step for a service that terminates TLS, on
 * OpenSSL (../linux/ffi_ssl.ts): after the client's PROXY header when the
 * service takes one, the handshake on the loop within
 * `handshake_timeout_ms`; then the relay reads and writes the client
 * through its TLS (relay.ts). What the handshake settled (server name,
 * version, client certificate) routes the client and fills the PROXY v2
 * header, as on `node:tls` (../tls/terminate.ts).
 *
 * The certificate is chosen before the handshake starts: when a service
 * has several (or its routes have their own), the ClientHello's server
 * name is peeked first, since OpenSSL would otherwise ask for it through a
 * callback (see ffi_ssl.ts).
 *
 * @module
 */
import type { Service, TlsCertificate, TlsTerminate } from "../../config/schema.ts";
import type { Preface } from "../../route/preface.ts";
import { HELLO_MAX, parseClientHello } from "../../route/client_hello.ts";
import type { TlsFacts } from "../../route/proxy_protocol.ts";
import * as sys from "../linux/ffi.ts";
import * as ssl from "../linux/ffi_ssl.ts";
import { cancel, type Loop, type Timer } from "./loop.ts";
import { RELAY_EVENTS } from "./relay.ts";
import { routeOf } from "../inspect.ts";

/** A client's TLS being set up, then handed to the relay (which takes its token and TLS). */
export interface Securing {
  readonly fd: number;
  token: number;
  /** Every event its socket reported (the relay starts from them: edges come once). */
  events: number;
  /** The client's TLS, once its certificate is chosen. */
  tls: ssl.Tls | null;
  /** Handshake bytes read off the socket with the PROXY header, OpenSSL's to read first. */
  early: Uint8Array | null;
  timer: Timer | null;
  step: "hello" | "handshake" | "done";
  readonly service: Service;
  readonly settings: TlsTerminate;
  /** What the PROXY header said, for the preface this step ends with. */
  proxied: Preface | null;
  /**
   * Hears once: the preface and what TLS settled, with whether the client
   * has left already (ended its stream right after the handshake, nothing
   * sent); or why the client is refused.
   */
  done: (result: { preface: Preface; facts: TlsFacts; left: boolean } | string) => void;
}

/**
 * Starts the handshake of the client on `fd` (watched by `token` when a
 * PROXY header was read, else registered here), after `proxied` (the
 * header read, with what came after it as its `early`). Null when the
 * loop would not watch the socket.
 */
export function secure(
  loop: Loop,
  fd: number,
  token: number,
  service: Service,
  proxied: Preface | null,
  done: Securing["done"],
): Securing | null {
  const settings = service.tls!;
  const s: Securing = {
    fd,
    token,
    events: 0,
    tls: null,
    early: proxied?.early ?? null,
    timer: null,
    step: needsHello(settings) ? "hello" : "handshake",
    service,
    settings,
    proxied,
    done,
  };
  const handler = (ev: number) => onEvent(s, ev);
  if (token > 0) loop.rebind(token, handler);
  else s.token = loop.add(fd, RELAY_EVENTS, handler);
  if (s.token < 0) return null;
  s.timer = loop.timer(Date.now() + settings.handshake_timeout_ms, () => {
    s.timer = null;
    over(s, `no handshake within ${settings.handshake_timeout_ms} ms`);
  });
  // The socket may hold the hello already: a PROXY header came with it, or it came at once.
  onEvent(s, sys.C.EPOLLIN);
  return s;
}

/**
 * Ends a client's TLS at its session's close: a handshake under way
 * stops without a verdict, and its TLS is freed (the relay that used it
 * is over; the caller closes the socket).
 */
export function stopSecuring(s: Securing): void {
  finish(s);
  s.step = "done";
  if (s.tls) ssl.free(s.tls);
  s.tls = null;
}

/** Events saying the client's connection is gone both ways. */
const GONE = sys.C.EPOLLHUP | sys.C.EPOLLERR;

function ignore(): void {}

function onEvent(s: Securing, ev: number): void {
  s.events |= ev;
  if (s.step === "hello") chooseByHello(s);
  if (s.step === "handshake") shake(s);
}

/** Peeks until the ClientHello is whole, then starts TLS with the certificate its name picks. */
function chooseByHello(s: Securing): void {
  const early = s.early ?? new Uint8Array(0);
  const buf = new Uint8Array(early.length + HELLO_MAX);
  buf.set(early);
  const peeked = sys.peek(s.fd, buf.subarray(early.length), HELLO_MAX);
  // Nothing new on the socket: what came with the PROXY header may be the whole hello.
  const waiting = peeked === -sys.E.EAGAIN || peeked === -sys.E.EINTR;
  if (peeked < 0 && !waiting) return over(s, "closed before a complete ClientHello");
  const n = waiting ? 0 : peeked;
  const hello = parseClientHello(buf.subarray(0, early.length + n));
  if (hello === null && (waiting || n > 0) && !(s.events & sys.C.EPOLLRDHUP)) return;
  const sni = hello?.kind === "hello" ? hello.sni : null;
  s.step = "handshake";
  start(s, sni);
}

/** Starts the client's TLS from the context for `sni`; its handshake goes on in {@link shake}. */
function start(s: Securing, sni: string | null): void {
  const contexts = contextsOf(s.settings);
  const route = routeOf(s.service, sni);
  const own = route !== null ? contexts.routes.get(route) : undefined;
  const ctx = pick(own && own.length > 0 ? own : contexts.main, sni ?? "");
  s.tls = ssl.accepting(ctx, s.fd, s.early);
  s.early = null;
  if (!s.tls) over(s, "out of memory for TLS");
}

function shake(s: Securing): void {
  if (!s.tls) start(s, null);
  if (!s.tls || s.step !== "handshake") return;
  // Reset or closed both ways (s_time, a port scanner): nobody is left to take a ticket.
  if (s.events & GONE) ssl.noTickets(s.tls);
  const r = ssl.handshake(s.tls, s.fd);
  if (r === ssl.SSL_ERROR.WANT_READ || r === ssl.SSL_ERROR.WANT_WRITE) return;
  if (r !== 0) return over(s, ssl.handshakeError(s.tls, r));
  s.step = "done";
  const got = ssl.settled(s.tls);
  const sni = got.sni ? got.sni.toLowerCase() : null;
  const facts: TlsFacts = { ...got, sni, alpn: null };
  const { proxied, service } = s;
  const preface: Preface = {
    source: proxied?.source ?? null,
    destination: proxied?.destination ?? null,
    hello: service.routes.length > 0 ? { kind: "hello", sni } : null,
    early: null,
  };
  // A client that ends as soon as its handshake is done (a certificate probe, `openssl
  // s_time`) is not worth a backend connection: nothing would pass on it either way.
  finish(s)({ preface, facts, left: ssl.left(s.tls) });
}

/** The handshake failed or timed out: the client is refused for `why`. */
function over(s: Securing, why: string): void {
  if (s.step === "done") return;
  s.step = "done";
  finish(s)(why);
}

function finish(s: Securing): Securing["done"] {
  const done = s.done;
  s.done = ignore;
  if (s.timer) cancel(s.timer);
  s.timer = null;
  return done;
}

/** A set of contexts, the first the default. */
type Choice = ssl.Context[];

interface Contexts {
  main: Choice;
  routes: Map<string, Choice>;
}

/** Contexts per settings object: one per config snapshot, freed with it. */
const built = new WeakMap<TlsTerminate, Contexts>();
const freed = new FinalizationRegistry<ssl.Context[]>((list) => list.forEach(ssl.freeContext));

/** Whether the certificate depends on the server name (several to choose from). */
function needsHello(tls: TlsTerminate): boolean {
  return tls.certificates.length > 1 || Object.keys(tls.route_certificates).length > 0;
}

function contextsOf(tls: TlsTerminate): Contexts {
  let found = built.get(tls);
  if (found) return found;
  const all: ssl.Context[] = [];
  const choice = (certs: readonly TlsCertificate[]): Choice =>
    certs.map((c) => {
      const ctx = ssl.serverContext({
        certPem: c.cert_pem,
        keyPem: c.key_pem,
        minVersion: tls.min_version,
        clientCaPem: tls.client_ca?.pem ?? null,
        clientCertRequired: tls.client_auth === "required",
      });
      all.push(ctx);
      return ctx;
    });
  found = {
    main: choice(tls.certificates),
    routes: new Map(Object.entries(tls.route_certificates).map(([r, c]) => [r, choice(c)])),
  };
  built.set(tls, found);
  freed.register(tls, all);
  return found;
}

/** The context for `name`: an exact name, then a `*.` wildcard one label deep, then the first. */
function pick(choice: Choice, name: string): ssl.Context {
  if (choice.length === 1 || name === "") return choice[0];
  return choice.find((c) => ssl.certificateFor(c, name, true)) ??
    choice.find((c) => ssl.certificateFor(c, name, false)) ?? choice[0];
}
