/**
 * What a UDP service decides per datagram, apart from sockets: which flow
 * a datagram belongs to, whether a new flow may start and with which
 * backend, and when a flow ends. Pure: the tables, the runtime's health
 * and admin state and the clock come in as plain data.
 *
 * @module
 */
import type { Backend, Service } from "../config/schema.ts";
import { aclAllows, addressBytes, contains } from "../route/acl.ts";
import { type BackendView, nextBackend } from "../balance/select.ts";
import type { Balancer } from "../balance/balancer.ts";
import type { HealthTable } from "../health/state.ts";
import type { AdminTable } from "../balance/admin_state.ts";
import { checkClient, type ClientTable } from "../route/client_limits.ts";
import { parseProxyHeader } from "../route/proxy_protocol.ts";

import type { DropCause } from "../stats/udp_counters.ts";
import type { Peer } from "./datagram_io.ts";
export type { DropCause };

/** How a flow ended, as the access log says it. */
export type FlowEnd = "idle" | "responses" | "killed" | "stopped";

/** Where a datagram came from: the socket's sender and, behind a proxy, the client it names. */
export interface Origin {
  /** Who sent the datagram (replies go back there). */
  sender: Peer;
  /** The client: the sender, or the source a PROXY v2 header names. */
  client: Peer;
  /** Bytes of PROXY header at the start of the datagram. */
  headerLength: number;
}

/**
 * Who a datagram is from, or the drop cause: with `accept_proxy`, a sender
 * in `proxy_trusted` must start every datagram with a PROXY v2 header,
 * and a header from anyone else is refused.
 */
export function originOf(
  service: Service,
  sender: Peer,
  data: Uint8Array,
): Origin | "proxy" {
  if (!service.accept_proxy) return { sender, client: sender, headerLength: 0 };
  const ip = addressBytes(sender.hostname);
  const trusted = ip !== null && service.proxy_trusted.some((c) => contains(c, ip));
  const parsed = parseProxyHeader(data, "dgram");
  if (!trusted) {
    return parsed.kind === "header" ? "proxy" : { sender, client: sender, headerLength: 0 };
  }
  if (parsed.kind !== "header" || parsed.version !== 2) return "proxy";
  const client = parsed.source
    ? { hostname: parsed.source.hostname, port: parsed.source.port }
    : sender;
  return { sender, client, headerLength: parsed.length };
}

/** A flow's key: a string per sender and client in session mode, a sequence number in request mode. */
export type FlowKey = string | number;

/**
 * The key of the flow a datagram belongs to: one per sender and client in
 * session mode; in request mode every datagram is a flow of its own, keyed
 * by its sequence number (a number: no string made per datagram).
 */
export function flowKey(service: Service, origin: Origin, sequence: number): FlowKey {
  if (service.udp!.mode === "request") return sequence;
  const { sender, client } = origin;
  return `${sender.hostname}|${sender.port}|${client.hostname}|${client.port}`;
}

/** What a new flow needs to know of the live state. */
export interface FlowContext {
  health: HealthTable;
  admin: AdminTable;
  balancer: Balancer;
  clients: ClientTable;
  /** Live flows per backend id. */
  active: ReadonlyMap<string, number>;
  now: number;
  random: () => number;
}

/** The backend a new flow from `client` goes to, or why it may not start. */
export function admitFlow(
  service: Service,
  client: string,
  ctx: FlowContext,
): Backend | "acl" | "limit" | "no_backend" {
  if (!aclAllows(service.acl, client)) return "acl";
  const limits = {
    maxConnections: service.runtime.max_connections_per_client,
    ratePerSecond: service.runtime.connection_rate_per_client,
  };
  if (checkClient(ctx.clients, client, limits, ctx.now) !== null) return "limit";
  const views: BackendView[] = service.backends.map((backend) => ({
    backend,
    health: ctx.health.get(backend.id),
    admin: ctx.admin.get(backend.id),
    active: ctx.active.get(backend.id) ?? 0,
  }));
  const picked = nextBackend(
    views,
    new Set(),
    ctx.balancer,
    { client, random: ctx.random },
    ctx.now,
    service.runtime.slow_start_ms,
  );
  return picked ?? "no_backend";
}

/** Whether a flow last active at `lastSeen` has idled out at `now`. */
export function idledOut(service: Service, lastSeen: number, now: number): boolean {
  return now - lastSeen >= service.udp!.idle_timeout_ms;
}

/** Whether a request-mode flow has had all the replies it waits for. */
export function answered(service: Service, replies: number): boolean {
  const udp = service.udp!;
  return udp.mode === "request" && replies >= udp.responses;
}
