/**
 * UDP services: datagrams in on each service's socket, grouped into flows
 * (flow_policy.ts says which), each flow forwarded to its backend through a
 * socket of its own so that the backend's replies come back to it, and
 * the replies sent to the client from the service's address. Runs on the
 * control plane's thread; the sockets are a {@link DatagramIo}'s: native
 * (epoll and recvmmsg) beside the uring and epoll engines, Deno's
 * datagram sockets beside the deno engine.
 *
 * @module
 */
import type { Backend, Config, Service } from "../config/schema.ts";
import { formatAddress } from "../net/address.ts";
import { describeError, ListenError } from "../errors.ts";
import { logger } from "../log.ts";
import type { Runtime } from "../snapshot.ts";
import { idledOut } from "./flow_policy.ts";
import type { UdpServiceCounters } from "../stats/udp_counters.ts";
import type { Observation } from "../health/state.ts";
import { type DatagramIo, denoIo } from "./datagram_io.ts";
import { nativeIo } from "./native_io.ts";
import { endFlow, type Listener, onDatagram, type State } from "./udp_flow.ts";

const log = logger("udp");

/** How long a retiring bal's sockets stay open for what reached them before the steering. */
const RETIRE_GRACE_MS = 200;

/** How often flows are looked at for their idle timeout. */
const SWEEP_MS = 100;

/** The UDP side of a running bal. */
export interface UdpPlane {
  /** Opens and closes listeners to match `config`'s UDP services (new ones all or nothing). */
  apply(config: Config): void;
  /** `host:port` of each UDP service's socket, by service name. */
  listening(): Record<string, string>;
  /** Counters by service name. */
  counters(): Record<string, UdpServiceCounters>;
  /** Ends every flow to backend `id` (`bal backend disable --kill`); how many. */
  kill(id: string): number;
  /** What moves the datagrams: `native` (epoll, recvmmsg) or `deno`. */
  readonly engine: "native" | "deno";
  /**
   * Stops receiving; request flows get up to `timeoutMs` for their replies,
   * then every flow ends. A bal `retiring` after `bal upgrade` keeps its
   * sockets (natively steered away from, they get nothing new) until its
   * request flows are answered: closing a socket drops what waits in it.
   */
  stop(timeoutMs: number, retiring?: boolean): Promise<void>;
}

/** How the UDP plane runs. */
export interface UdpOptions {
  /** Use the native mechanism (Linux, beside the uring and epoll engines). */
  native: boolean;
  /** May join ports the bal before holds (`bal upgrade`). */
  joining: boolean;
  /** Where passive health observations go (the planes' one recorder). */
  record(backend: Backend, obs: Observation): void;
}

/** Starts the UDP plane for `runtime`'s config (listeners open at the first {@link UdpPlane.apply}). */
export function startUdp(runtime: Runtime, options: UdpOptions): UdpPlane {
  const state: State = {
    runtime,
    listeners: new Map(),
    counters: new Map(),
    clients: new Map(),
    active: new Map(),
    senders: new Map(),
    io: ioFor(options.native),
    record: options.record,
    sequence: 0,
    joining: options.joining,
  };
  const sweeper = setInterval(() => sweep(state, Date.now()), SWEEP_MS);
  Deno.unrefTimer(sweeper);
  return {
    apply: (config) => apply(state, config),
    listening: () =>
      Object.fromEntries(
        [...state.listeners.values()].map((l) => [l.service, formatAddress(l.bind, l.port)]),
      ),
    counters: () => Object.fromEntries(state.counters),
    kill(id) {
      let killed = 0;
      for (const l of state.listeners.values()) {
        for (const flow of [...l.flows.values()]) {
          if (flow.backend.id !== id) continue;
          endFlow(state, flow, "killed");
          killed++;
        }
      }
      return killed;
    },
    engine: state.io.name,
    async stop(timeoutMs, retiring = false) {
      const keep = retiring && state.io.name === "native";
      if (!keep) { for (const l of state.listeners.values()) l.socket.close(); }
      const deadline = Date.now() + timeoutMs;
      // Retiring, stragglers that reached the old socket before the steering are served too.
      if (keep) await new Promise((r) => setTimeout(r, RETIRE_GRACE_MS));
      while (Date.now() < deadline && requestFlows(state) > 0) {
        await new Promise((r) => setTimeout(r, 20));
      }
      if (keep) { for (const l of state.listeners.values()) l.socket.close(); }
      clearInterval(sweeper);
      for (const l of state.listeners.values()) {
        for (const flow of [...l.flows.values()]) endFlow(state, flow, "stopped");
      }
      state.listeners.clear();
      for (const s of state.senders.values()) s.close();
      state.senders.clear();
      await state.io.stop();
    },
  };
}

function requestFlows(state: State): number {
  let n = 0;
  for (const l of state.listeners.values()) {
    const service = state.runtime.snapshot.services.get(l.service);
    if (service?.udp?.mode === "request") n += l.flows.size;
  }
  return n;
}

function apply(state: State, config: Config): void {
  const wanted = config.services.filter((s) => s.protocol === "udp");
  const opened: Listener[] = [];
  try {
    for (const s of wanted) {
      const current = state.listeners.get(s.name);
      if (current && current.bind === s.bind_address && current.port === s.port) continue;
      opened.push(openListener(state, s));
    }
  } catch (err) {
    for (const l of opened) l.socket.close();
    throw err;
  }
  for (const [name, l] of state.listeners) {
    if (wanted.some((s) => s.name === name) && !opened.some((o) => o.service === name)) continue;
    // A removed or moved service stops receiving at once, and its flows end.
    l.socket.close();
    for (const flow of [...l.flows.values()]) endFlow(state, flow, "killed");
    state.listeners.delete(name);
  }
  for (const l of opened) state.listeners.set(l.service, l);
  for (const name of state.counters.keys()) {
    if (!wanted.some((s) => s.name === name)) state.counters.delete(name);
  }
  const ids = new Set(wanted.flatMap((s) => s.backends.map((b) => b.id)));
  for (const [id, socket] of state.senders) {
    if (ids.has(id)) continue;
    socket.close();
    state.senders.delete(id);
  }
  state.io.keepOnly(ids);
}

/** The service's socket, claimed then shared (so the next bal can join it in `bal upgrade`). */
function openListener(state: State, s: Service): Listener {
  const l: Listener = {
    service: s.name,
    bind: s.bind_address,
    port: s.port,
    socket: null!,
    flows: new Map(),
  };
  try {
    l.socket = state.io.listen(
      s.bind_address,
      s.port,
      state.joining,
      (data, from, truncated) => onDatagram(state, l, data, from, truncated),
    );
  } catch (err) {
    const why = err instanceof Deno.errors.AddrInUse
      ? "address already in use"
      : describeError(err);
    const address = formatAddress(s.bind_address, s.port);
    throw new ListenError(`cannot listen on ${address}/udp (service ${s.name}): ${why}`, {
      cause: err,
    });
  }
  return l;
}

/** The native mechanism when asked for and available, else Deno's sockets. */
function ioFor(native: boolean): DatagramIo {
  if (!native) return denoIo();
  try {
    return nativeIo();
  } catch (err) {
    log.warn("udp: the native mechanism is not available ({error}); Deno's sockets serve", {
      event: "udp_native_unavailable",
      error: describeError(err),
    });
    return denoIo();
  }
}

/** Ends the flows that idled out. */
function sweep(state: State, now: number): void {
  for (const l of state.listeners.values()) {
    const service = state.runtime.snapshot.services.get(l.service);
    if (!service?.udp) continue;
    for (const flow of l.flows.values()) {
      if (idledOut(service, flow.lastSeen, now)) endFlow(state, flow, "idle");
    }
  }
}
