/**
 * A native engine (uring or epoll) with a deno engine beside it in the same
 * thread for the services that speak TLS at bal: the TLS stack works on
 * Deno's sockets, the native engines on raw descriptors. Together they are
 * one {@link Engine}: each listens for its own services, and what the
 * process asks (stop, drain, kill, counters) goes to both.
 *
 * @module
 */
import { type Claim, type Engine, type EngineName, usesTls } from "../engine.ts";
import type { PlaneStats } from "../../stats/counters.ts";

/**
 * The native engine and a TLS engine beside it, both made by `make` (the
 * TLS one a deno engine with `tlsOnly`), claiming ports by the
 * {@link Claim} given.
 */
export function besideTls(make: (claim: Claim, tlsOnly: boolean) => Engine): Engine {
  // Addresses of services changing sides in this apply: the side taking one joins the port
  // rather than claiming it, since the side leaving it may hold it a moment longer (io_uring
  // cancels its accept first) and its live connections keep using it.
  let moving = new Set<string>();
  const claim: Claim = (address) => !moving.has(address);
  const main = make(claim, false);
  const tls = make(claim, true);
  return {
    name: main.name,
    apply(config) {
      // A service that changes sides is closed on the side it leaves first.
      const [native, secure] = [main.listening(), tls.listening()];
      const toTls = config.services.filter((s) => usesTls(s) && native[s.name] !== undefined);
      const toNative = config.services.filter((s) => !usesTls(s) && secure[s.name] !== undefined);
      moving = new Set([
        ...toTls.map((s) => native[s.name]),
        ...toNative.map((s) => secure[s.name]),
      ]);
      const [first, second] = toTls.length > 0 ? [main, tls] : [tls, main];
      try {
        first.apply(config);
        second.apply(config);
      } finally {
        moving = new Set();
      }
    },
    listening: () => ({ ...main.listening(), ...tls.listening() }),
    backlog: (service) => main.backlog(service) || tls.backlog(service),
    async stopAccepting() {
      await Promise.all([main.stopAccepting(), tls.stopAccepting()]);
    },
    async drain(timeoutMs) {
      const [a, b] = await Promise.all([main.drain(timeoutMs), tls.drain(timeoutMs)]);
      return a + b;
    },
    kill: (backendId) => main.kill(backendId) + tls.kill(backendId),
    stats: () => addStats(main.stats(), tls.stats()),
    listenerFds: () => main.listenerFds(),
    engineOf: (service) => tls.listening()[service] !== undefined ? "deno" : main.name,
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
