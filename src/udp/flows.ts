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
import { type Backend, type Config, poolKey, type Service } from "../config/schema.ts";
import { formatAddress } from "../net/address.ts";
import { describeError, ListenError } from "../errors.ts";
import { episode, logAccessLine, logger } from "../log.ts";
import type { Runtime } from "../snapshot.ts";
import { clientLeft, type ClientTable, clientTable, countClient } from "../route/client_limits.ts";
import { writeProxyHeader } from "../route/proxy_protocol.ts";
import { createBalancer } from "../balance/methods.ts";
import {
  admitFlow,
  answered,
  type DropCause,
  type FlowEnd,
  flowKey,
  idledOut,
  type Origin,
  originOf,
} from "./flow_policy.ts";
import { backendTraffic, type UdpServiceCounters, zeroService } from "../stats/udp_counters.ts";
import type { Observation } from "../health/state.ts";
import {
  type DatagramIo,
  denoIo,
  type FlowSocket,
  type Peer,
  type ServiceSocket,
} from "./datagram_io.ts";
import { nativeIo } from "./native_io.ts";

const log = logger("udp");

/** Flow sockets that could not be opened (out of descriptors), said once per episode. */
const failing = episode();

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

interface Listener {
  service: string;
  bind: string;
  port: number;
  socket: ServiceSocket;
  flows: Map<string, Flow>;
}

interface Flow {
  key: string;
  listener: Listener;
  origin: Origin;
  backend: Backend;
  /** The flow's own socket to its backend (shared when no reply is expected). */
  socket: FlowSocket;
  /** The socket is the backend's shared one: it outlives the flow. */
  shared: boolean;
  /** The PROXY v2 header each datagram to the backend starts with, or null. */
  header: Uint8Array | null;
  startedAt: number;
  lastSeen: number;
  replies: number;
  bytesIn: number;
  bytesOut: number;
  ended: boolean;
}

interface State {
  runtime: Runtime;
  listeners: Map<string, Listener>;
  counters: Map<string, UdpServiceCounters>;
  clients: Map<string, ClientTable>;
  /** Live flows per backend id. */
  active: Map<string, number>;
  /** One socket per backend for datagrams that expect no reply (`responses: 0`). */
  senders: Map<string, FlowSocket>;
  io: DatagramIo;
  /** Passive health: a backend's host said its port is closed. */
  record: (backend: Backend, obs: Observation) => void;
  sequence: number;
  /** May join a port another bal holds (this one takes over from it in `bal upgrade`). */
  joining: boolean;
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

function countersOf(state: State, service: string): UdpServiceCounters {
  let c = state.counters.get(service);
  if (!c) state.counters.set(service, c = zeroService());
  return c;
}

/** One datagram from a client: to its flow, a new flow, or dropped with a cause. */
function onDatagram(
  state: State,
  l: Listener,
  data: Uint8Array,
  sender: Peer,
  truncated: boolean,
): void {
  const service = state.runtime.snapshot.services.get(l.service);
  if (!service?.udp) return;
  const c = countersOf(state, service.name);
  if (truncated || data.length > service.udp.max_datagram_bytes) return void c.drops.oversize++;
  const origin = originOf(service, sender, data);
  if (origin === "proxy") return void c.drops.proxy++;
  const key = flowKey(service, origin, ++state.sequence);
  let flow = l.flows.get(key);
  if (!flow) {
    const made = openFlow(state, l, service, origin, key);
    if (typeof made === "string") return void c.drops[made]++;
    flow = made;
  }
  forward(state, service, flow, data.subarray(origin.headerLength));
}

function openFlow(
  state: State,
  l: Listener,
  service: Service,
  origin: Origin,
  key: string,
): Flow | DropCause {
  const now = Date.now();
  const clients = state.clients.get(service.name) ??
    state.clients.set(service.name, clientTable()).get(service.name)!;
  const picked = admitFlow(service, origin.client.hostname, {
    health: state.runtime.health,
    admin: state.runtime.admin,
    balancer: balancerOf(state, service),
    clients,
    active: state.active,
    now,
    random: Math.random,
  });
  if (typeof picked === "string") return picked;
  const version = picked.send_proxy ?? service.send_proxy;
  const flow: Flow = {
    key,
    listener: l,
    origin,
    backend: picked,
    socket: null!,
    // Without a reply to wait for (syslog), every flow to a backend shares one socket.
    shared: answered(service, 0),
    header: version === "v2"
      ? writeProxyHeader("v2", origin.client, { hostname: l.bind, port: l.port }, "dgram")
      : null,
    startedAt: now,
    lastSeen: now,
    replies: 0,
    bytesIn: 0,
    bytesOut: 0,
    ended: false,
  };
  const socket = flow.shared ? senderFor(state, picked) : state.io.flow(picked, {
    reply: (data) => onReply(state, flow, data),
    refused: () => onRefused(state, flow),
  });
  if (typeof socket === "string") {
    if (failing.fail()) logFlowError(service.name, socket);
    return "queue_full";
  }
  failing.recover();
  flow.socket = socket;
  countClient(clients, origin.client.hostname);
  l.flows.set(key, flow);
  state.active.set(picked.id, (state.active.get(picked.id) ?? 0) + 1);
  const c = countersOf(state, service.name);
  const b = backendTraffic(c, picked.id);
  c.flows_created++;
  c.flows_active++;
  b.flows_created++;
  b.flows_active++;
  return flow;
}

function senderFor(state: State, backend: Backend): FlowSocket | string {
  const known = state.senders.get(backend.id);
  if (known) return known;
  const made = state.io.flow(backend, null);
  if (typeof made !== "string") state.senders.set(backend.id, made);
  return made;
}

/** The service's balancer (the runtime's, kept across reloads while the method stays). */
function balancerOf(state: State, service: Service) {
  const key = poolKey(service, null);
  const found = state.runtime.balancers.get(key);
  if (found?.method === service.method) return found.balancer;
  const made = { method: service.method, balancer: createBalancer(service.method) };
  state.runtime.balancers.set(key, made);
  return made.balancer;
}

/** Sends a client's datagram on through the flow's socket (with its PROXY header, if any). */
function forward(state: State, service: Service, flow: Flow, payload: Uint8Array): void {
  const data = flow.header ? concat(flow.header, payload) : payload;
  const c = countersOf(state, service.name);
  const b = backendTraffic(c, flow.backend.id);
  c.datagrams_in++;
  b.datagrams_in++;
  c.bytes_in += payload.length;
  b.bytes_in += payload.length;
  flow.bytesIn += payload.length;
  flow.lastSeen = Date.now();
  if (!flow.socket.send(data)) c.drops.queue_full++;
  // A request that expects no reply (syslog) is done once sent.
  if (answered(service, flow.replies)) endFlow(state, flow, "responses");
}

/** A reply from the flow's backend, sent to the client from the service's address. */
function onReply(state: State, flow: Flow, data: Uint8Array): void {
  if (flow.ended) return;
  const service = state.runtime.snapshot.services.get(flow.listener.service);
  const c = countersOf(state, flow.listener.service);
  const b = backendTraffic(c, flow.backend.id);
  flow.replies++;
  flow.lastSeen = Date.now();
  flow.bytesOut += data.length;
  c.datagrams_out++;
  b.datagrams_out++;
  c.bytes_out += data.length;
  b.bytes_out += data.length;
  if (!flow.listener.socket.send(data, flow.origin.sender)) c.drops.queue_full++;
  if (service && answered(service, flow.replies)) endFlow(state, flow, "responses");
}

/**
 * The backend's host said its port is closed (ICMP port unreachable on
 * the flow's connected socket): a failed connect, as for TCP, so the
 * backend cools down and new flows go elsewhere.
 */
function onRefused(state: State, flow: Flow): void {
  state.record(flow.backend, {
    ok: false,
    at: Date.now(),
    source: "connect",
    kind: "refused",
    error: "port unreachable (ICMP)",
  });
}

/** Ends a flow: its socket closes, its counts go, and its access line is written. */
function endFlow(state: State, flow: Flow, why: FlowEnd): void {
  if (flow.ended) return;
  flow.ended = true;
  flow.listener.flows.delete(flow.key);
  if (!flow.shared) flow.socket.close(why === "responses");
  const name = flow.listener.service;
  const id = flow.backend.id;
  const left = (state.active.get(id) ?? 1) - 1;
  if (left > 0) state.active.set(id, left);
  else state.active.delete(id);
  const clients = state.clients.get(name);
  if (clients) clientLeft(clients, flow.origin.client.hostname);
  const c = countersOf(state, name);
  const b = backendTraffic(c, id);
  c.flows_active--;
  b.flows_active--;
  if (why === "idle") {
    c.flows_expired++;
    b.flows_expired++;
  }
  const service = state.runtime.snapshot.services.get(name);
  if (service?.access_log ?? false) {
    logAccessLine({
      service: name,
      client: formatAddress(flow.origin.client.hostname, flow.origin.client.port),
      backend: flow.backend.address,
      bytes_in: flow.bytesIn,
      bytes_out: flow.bytesOut,
      connect_ms: null,
      duration_ms: Date.now() - flow.startedAt,
      ended: why,
    });
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

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Says once why a UDP socket could not be opened for a flow. */
export function logFlowError(service: string, err: unknown): void {
  log.warn("udp service {service}: cannot open a flow socket: {error}", {
    event: "udp_flow_failed",
    service,
    error: describeError(err),
  });
}
