/**
 * One UDP flow's life on the plane: a datagram in, to its flow or a new
 * one (admitted, given a backend and a socket), on to the backend, its
 * replies back to the client, and its end with the counts and access line.
 *
 * @module
 */
import { type Backend, poolKey, type Service } from "../config/schema.ts";
import { formatAddress } from "../net/address.ts";
import { describeError } from "../errors.ts";
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
  type FlowKey,
  flowKey,
  type Origin,
  originOf,
} from "./flow_policy.ts";
import {
  backendTraffic,
  type UdpServiceCounters,
  type UdpTraffic,
  zeroService,
} from "../stats/udp_counters.ts";
import type { Observation } from "../health/state.ts";
import type { DatagramIo, FlowSocket, Peer, ServiceSocket } from "./datagram_io.ts";

const log = logger("udp");

/** Flow sockets that could not be opened (out of descriptors), said once per episode. */
const failing = episode();

/** A UDP service's socket and its live flows. */
export interface Listener {
  service: string;
  bind: string;
  port: number;
  socket: ServiceSocket;
  flows: Map<FlowKey, Flow>;
}

/** One flow: a client (or one request) bound to a backend, through a socket of its own. */
export interface Flow {
  key: FlowKey;
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
  /** The service's counters and its backend's, looked up once per flow, not per datagram. */
  counters: UdpServiceCounters;
  traffic: UdpTraffic;
}

/** What the UDP plane keeps. */
export interface State {
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

/** A service's counters, made on first use. */
export function countersOf(state: State, service: string): UdpServiceCounters {
  let c = state.counters.get(service);
  if (!c) state.counters.set(service, c = zeroService());
  return c;
}

/** One datagram from a client: to its flow, a new flow, or dropped with a cause. */
export function onDatagram(
  state: State,
  l: Listener,
  data: Uint8Array,
  sender: Peer,
  truncated: boolean,
): void {
  const service = state.runtime.snapshot.services.get(l.service);
  if (!service?.udp) return;
  if (truncated || data.length > service.udp.max_datagram_bytes) {
    return void countersOf(state, service.name).drops.oversize++;
  }
  const origin = originOf(service, sender, data);
  if (origin === "proxy") return void countersOf(state, service.name).drops.proxy++;
  const key = flowKey(service, origin, ++state.sequence);
  const now = Date.now();
  let flow = l.flows.get(key);
  if (!flow) {
    const made = openFlow(state, l, service, origin, key, now);
    if (typeof made === "string") return void countersOf(state, service.name).drops[made]++;
    flow = made;
  }
  flow.lastSeen = now;
  forward(state, service, flow, origin.headerLength ? data.subarray(origin.headerLength) : data);
}

function openFlow(
  state: State,
  l: Listener,
  service: Service,
  origin: Origin,
  key: FlowKey,
  now: number,
): Flow | DropCause {
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
  const c = countersOf(state, service.name);
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
    counters: c,
    traffic: backendTraffic(c, picked.id),
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
  // Counted only while a limit needs it (clientLeft forgets a client never counted).
  if (service.runtime.max_connections_per_client > 0) countClient(clients, origin.client.hostname);
  l.flows.set(key, flow);
  state.active.set(picked.id, (state.active.get(picked.id) ?? 0) + 1);
  const b = flow.traffic;
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
  const { counters: c, traffic: b } = flow;
  c.datagrams_in++;
  b.datagrams_in++;
  c.bytes_in += payload.length;
  b.bytes_in += payload.length;
  flow.bytesIn += payload.length;
  if (!flow.socket.send(data)) c.drops.queue_full++;
  // A request that expects no reply (syslog) is done once sent.
  if (answered(service, flow.replies)) endFlow(state, flow, "responses");
}

/** A reply from the flow's backend, sent to the client from the service's address. */
function onReply(state: State, flow: Flow, data: Uint8Array): void {
  if (flow.ended) return;
  const service = state.runtime.snapshot.services.get(flow.listener.service);
  const { counters: c, traffic: b } = flow;
  flow.replies++;
  flow.bytesOut += data.length;
  c.datagrams_out++;
  b.datagrams_out++;
  c.bytes_out += data.length;
  b.bytes_out += data.length;
  if (!flow.listener.socket.send(data, flow.origin.sender)) c.drops.queue_full++;
  if (service && answered(service, flow.replies)) endFlow(state, flow, "responses");
  else flow.lastSeen = Date.now();
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
export function endFlow(state: State, flow: Flow, why: FlowEnd): void {
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
  const { counters: c, traffic: b } = flow;
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

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Says once why a UDP socket could not be opened for a flow. */
function logFlowError(service: string, err: unknown): void {
  log.warn("udp service {service}: cannot open a flow socket: {error}", {
    event: "udp_flow_failed",
    service,
    error: describeError(err),
  });
}
