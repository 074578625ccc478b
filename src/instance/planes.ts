/**
 * Starting the data planes: how many, which engine, the main thread's engine and the worker
 * threads, and the one recorder every check and data plane reports to.
 *
 * @module
 */
import { type Backend, type Config, workerCount } from "../config/mod.ts";
import { recordNoBackend, recordResult } from "../health/checker.ts";
import type { Observation } from "../health/state.ts";
import { createRuntime, protectionOf } from "../snapshot.ts";
import { chooseEngine, createEngine, type EngineDecision } from "../engine/choose.ts";
import { startWorkers } from "../engine/workers/pool.ts";
import type { Planes } from "./running.ts";
import type { Inherited } from "../engine/listeners.ts";
import type { HealthState } from "../health/state.ts";
import type { BackendAdmin } from "../balance/admin_state.ts";
import { logger } from "../log.ts";
import { startUdp } from "../udp/flows.ts";
import { besideTls, type Side, tlsSides } from "../engine/tls/beside.ts";
import type { Claim, Engine, EngineName, EngineOptions } from "../engine/engine.ts";
import type { Service } from "../config/schema.ts";
import type { Runtime } from "../snapshot.ts";
import { loadSsl } from "../engine/linux/ffi_ssl.ts";

const log = logger("server");

/**
 * Data planes to run. SO_REUSEPORT spreads connections over sockets only on
 * Linux; elsewhere one socket would get them all, so one plane runs.
 */
function planeCount(config: Config): number {
  const wanted = workerCount(config.workers);
  if (wanted > 1 && Deno.build.os !== "linux") {
    log.warn("workers: {wanted} needs Linux (SO_REUSEPORT balancing); running 1 data plane", {
      event: "workers_unsupported",
      wanted,
      os: Deno.build.os,
    });
    return 1;
  }
  return wanted;
}

/**
 * The engine every data plane runs: the config's choice (or BAL_ENGINE's),
 * the first of uring, epoll and deno whose self-check passes for `auto`;
 * a fallback says why.
 */
function engineFor(config: Config): EngineDecision {
  const decision = chooseEngine(config.engine, Deno.env.get("BAL_ENGINE"));
  if (decision.fallback) {
    log.warn("engine: {engine}, as auto falls back: {reason}", {
      event: "engine_fallback",
      engine: decision.name,
      reason: decision.fallback,
    });
  }
  return decision;
}

/**
 * What a new bal starts from besides its config: on `bal upgrade`, the
 * listening sockets, health and admin states the bal before handed over.
 */
export interface PlaneSeed {
  /** The handed-over listeners of data plane `plane`, if any. */
  inherited(plane: number): Inherited | undefined;
  health: ReadonlyArray<[string, HealthState]>;
  admin: ReadonlyArray<[string, BackendAdmin]>;
}

/**
 * Listeners always set SO_REUSEPORT on Linux (after claiming the port), so
 * the next bal can join them during an upgrade: on the deno engine, which
 * cannot take a descriptor over, and for data planes the bal before lacked.
 */
const REUSE_PORT = Deno.build.os === "linux";

/** The runtime, the main thread's engine listening, and the worker threads. */
export async function startPlanes(
  config: Config,
  configPath: string,
  seed?: PlaneSeed,
): Promise<Planes> {
  const runtime = createRuntime(config, configPath);
  // A backend the bal before knew keeps its state: one that was down gets no client
  // until a check passes here too.
  for (const [id, state] of seed?.health ?? []) {
    if (runtime.health.has(id)) runtime.health.set(id, state);
  }
  for (const [id, admin] of seed?.admin ?? []) {
    if (runtime.snapshot.backends.has(id)) runtime.admin.set(id, admin);
  }
  const count = planeCount(config);
  const planes: Planes = {
    runtime,
    record: () => {},
    engine: null!,
    engineFallback: null,
    pool: null,
    udp: null!,
    count,
    stats: () => [],
  };
  // Workers count successes only while protection is on: tell them when it flips.
  const syncProtection = (service: string, wasOn: boolean) => {
    const now = protectionOf(runtime, service);
    if (planes.pool && now.enabled !== wasOn) planes.pool.protection(service, now);
  };
  // Every result, from the checks or any data plane, goes through here, so the
  // table stays the one truth and each worker hears of each change.
  const onResult = (backend: Backend, obs: Observation) => {
    const wasOn = protectionOf(runtime, backend.service).enabled;
    recordResult(runtime, backend, obs);
    const state = runtime.health.get(backend.id);
    if (planes.pool && state) planes.pool.health(backend.id, state);
    syncProtection(backend.service, wasOn);
  };
  planes.record = onResult;
  const onNoBackend = (service: string, at: number) => {
    const wasOn = protectionOf(runtime, service).enabled;
    recordNoBackend(runtime, service, at);
    syncProtection(service, wasOn);
  };
  const decision = engineFor(config);
  planes.engineFallback = decision.fallback;
  const options = {
    id: 0,
    reusePort: count > 1 || REUSE_PORT,
    claimPort: true,
    inherited: seed?.inherited(0),
    planes: count,
    onResult,
    onNoBackend,
  };
  planes.engine = decision.name === "deno"
    ? createEngine(decision.name, runtime, options)
    : besideNative(decision.name, runtime, options);
  planes.engine.apply(config);
  await startUdpPlane(planes, config, decision.name !== "deno", seed !== undefined);
  if (count > 1) {
    try {
      planes.pool = await startWorkers(count - 1, planes.engine.name, runtime, {
        onResult,
        onNoBackend,
      }, (plane) => seed?.inherited(plane));
    } catch (err) {
      await planes.engine.stopAccepting();
      await planes.udp.stop(0);
      throw err;
    }
  }
  planes.stats = () => [planes.engine.stats(), ...(planes.pool?.stats() ?? [])];
  return planes;
}

/**
 * The UDP services, natively beside the uring and epoll engines; on a
 * failure the main engine stops accepting and the error goes on.
 */
async function startUdpPlane(planes: Planes, config: Config, native: boolean, joining: boolean) {
  planes.udp = startUdp(planes.runtime, { native, joining, record: planes.record });
  try {
    planes.udp.apply(config);
  } catch (err) {
    await planes.engine.stopAccepting();
    throw err;
  }
}

/** Where every service listens, TCP and UDP, by service name. */
export function listeningOf(planes: Planes): Record<string, string> {
  return { ...planes.engine.listening(), ...planes.udp.listening() };
}

/**
 * The main thread's engines: the native one for plain services, with the
 * TLS services beside it in this thread only, on OpenSSL (an epoll engine)
 * where it loads and serves them, else on `node:tls` (a deno engine).
 */
function besideNative(name: EngineName, runtime: Runtime, options: EngineOptions): Engine {
  const openssl = loadSsl() === null;
  const who = tlsSides(openssl);
  // The sides' sockets are not handed over (Deno's cannot be): they join the ports the bal
  // before holds, and leave the descriptors to the native side.
  const beside = (claimPort: Claim, serves: (s: Service) => boolean): EngineOptions => ({
    ...options,
    claimPort,
    serves,
    planes: 1,
    inherited: options.inherited && { fds: new Map(), held: options.inherited.held },
  });
  const sides: Side[] = [
    {
      serves: who.native,
      make: (claimPort, serves) => createEngine(name, runtime, { ...options, claimPort, serves }),
    },
    { serves: who.node, make: (c, serves) => createEngine("deno", runtime, beside(c, serves)) },
  ];
  if (openssl) {
    sides.push({
      serves: who.openssl,
      make: (c, serves) => createEngine("epoll", runtime, beside(c, serves)),
    });
  }
  return besideTls(sides);
}
