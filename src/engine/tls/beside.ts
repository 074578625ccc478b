/**
 * A native engine (uring or epoll) with a deno engine beside it in the same
 * thread for the services that speak TLS at bal: the TLS stack works on
 * Deno's sockets, the native engines on raw descriptors. Together they are
 * one {@link Engine}: each listens for its own services, and what the
 * process asks (stop, drain, kill, counters) goes to both.
 *
 * @module
 */
import type { Engine, EngineName } from "../engine.ts";
import type { PlaneStats } from "../../stats/counters.ts";

/** `main` with `tls` (a deno engine made with `tlsOnly`) beside it. */
export function besideTls(main: Engine, tls: Engine): Engine {
  return {
    name: main.name,
    apply(config) {
      // The TLS side first: a service that stops speaking TLS is closed there before
      // the native side listens for it, and the other way round on the next reload.
      tls.apply(config);
      main.apply(config);
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
