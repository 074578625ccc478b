/**
 * A native engine (uring or epoll) with the engines that speak TLS beside
 * it in the same thread: an epoll engine terminating on OpenSSL for the
 * services it can (../epoll/tls_accept.ts), and a deno engine with
 * `node:tls` for the rest (ALPN, `backend_tls`). Together they are one
 * {@link Engine}: each listens for its own services, and what the process
 * asks (stop, drain, kill, counters) goes to all.
 *
 * @module
 */
import { type Claim, type Engine, type EngineName, usesTls } from "../engine.ts";
import type { Service } from "../../config/schema.ts";
import type { PlaneStats } from "../../stats/counters.ts";

/** One engine of several side by side, and the services it serves. */
export interface Side {
  make(claim: Claim, serves: (service: Service) => boolean): Engine;
  serves(service: Service): boolean;
}

/**
 * Who serves what beside a native engine: OpenSSL (when it loaded) the
 * services that terminate TLS as it can, `node:tls` the other TLS
 * services, the native engine the rest.
 */
export function tlsSides(openssl: boolean): {
  native(service: Service): boolean;
  openssl(service: Service): boolean;
  node(service: Service): boolean;
} {
  // ALPN: OpenSSL answers it only through a callback, which bal does not give it (ffi_ssl.ts).
  const onOpenssl = (s: Service) =>
    openssl && s.tls !== null && s.tls.alpn.length === 0 &&
    !s.backends.some((b) => b.tls !== null) &&
    !s.discovered.some((d) => d.template.tls !== null);
  return {
    native: (s) => !usesTls(s),
    openssl: onOpenssl,
    node: (s) => usesTls(s) && !onOpenssl(s),
  };
}

/**
 * Several engines as one, the first the main one (its name, its listening
 * descriptors handed over by `bal upgrade`), each made by its side with
 * the {@link Claim} given.
 */
export function besideTls(sides: Side[]): Engine {
  // Addresses of services changing sides in this apply: the side taking one joins the port
  // rather than claiming it, since the side leaving it may hold it a moment longer (io_uring
  // cancels its accept first) and its live connections keep using it.
  let moving = new Set<string>();
  const claim: Claim = (address) => !moving.has(address);
  const engines = sides.map((side) => side.make(claim, side.serves));
  const main = engines[0];
  return {
    name: main.name,
    apply(config) {
      // A service that changes sides is closed on the side it leaves first.
      const listening = engines.map((e) => e.listening());
      const leaving = (i: number) =>
        config.services.filter((s) => listening[i][s.name] !== undefined && !sides[i].serves(s));
      moving = new Set(engines.flatMap((_, i) => leaving(i).map((s) => listening[i][s.name])));
      const order = engines.map((e, i) => ({ e, losing: leaving(i).length }))
        .sort((x, y) => y.losing - x.losing);
      try {
        for (const { e } of order) e.apply(config);
      } finally {
        moving = new Set();
      }
    },
    listening: () => Object.assign({}, ...engines.map((e) => e.listening())),
    backlog: (service) => engines.reduce((n, e) => n || e.backlog(service), 0),
    async stopAccepting() {
      await Promise.all(engines.map((e) => e.stopAccepting()));
    },
    async drain(timeoutMs) {
      const forced = await Promise.all(engines.map((e) => e.drain(timeoutMs)));
      return forced.reduce((a, b) => a + b, 0);
    },
    kill: (backendId) => engines.reduce((n, e) => n + e.kill(backendId), 0),
    stats: () => engines.map((e) => e.stats()).reduce((a, b) => addStats(a, b)),
    listenerFds: () => main.listenerFds(),
    engineOf: (service) =>
      engines.find((e) => e.listening()[service] !== undefined)?.name ?? main.name,
  };
}

/** Two planes' counters as one: numbers added, arrays by index, records by key. */
export function addStats(a: PlaneStats, b: PlaneStats): PlaneStats {
  return { ...add(a, b) as PlaneStats, id: a.id };
}

function add(a: unknown, b: unknown): unknown {
  if (typeof a === "number" && typeof b === "number") return a + b;
  if (Array.isArray(a) && Array.isArray(b)) return a.map((x, i) => add(x, b[i]));
  if (isRecord(a) && isRecord(b)) {
    const out: Record<string, unknown> = { ...b };
    for (const [k, v] of Object.entries(a)) out[k] = k in b ? add(v, b[k]) : v;
    return out;
  }
  return a ?? b;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The engine that runs `service`: the one given, or deno where TLS runs beside it. */
export function engineOf(engine: Engine, service: string): EngineName {
  return engine.engineOf?.(service) ?? engine.name;
}
