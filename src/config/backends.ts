/**
 * Reading a `backends:` list: each backend's address, identity and own
 * settings, before its service resolves health checks and PROXY headers.
 *
 * @module
 */
import { isMap, isScalar, isSeq, type Node } from "./yaml.ts";
import { quote } from "../text.ts";
import { formatAddress, normalizeHost } from "../net/address.ts";
import {
  boolField,
  describeNode,
  enumField,
  type Field,
  hostField,
  intField,
  mapFields,
  type Report,
} from "./fields.ts";
import { type Backend, DEFAULTS, MAX_WEIGHT } from "./schema.ts";
import { bandwidthOf } from "./shaping.ts";
import { normalizePattern, patternProblem } from "../route/sni.ts";

const BACKEND_KEYS = [
  "host",
  "port",
  "dns",
  "srv",
  "weight",
  "backup",
  "max_connections",
  "send_proxy",
  "health_check",
  "bandwidth",
  "backend_tls",
];
/** Versions `send_proxy` takes. */
export const SEND_PROXY = ["v1", "v2"] as const;
/** What a `port` key accepts. */
export const PORT_RULE = { default: DEFAULTS.port, min: 1, max: 65535 };

/** What a backend is before its service resolves its check and PROXY header. */
export type BackendIdentity = Omit<Backend, "check" | "send_proxy" | "check_send_proxy" | "tls">;

/** A backend before its check is resolved, and its own `health_check:` if it has one. */
export interface ParsedBackend {
  backend: BackendIdentity;
  check?: { field: Field; path: string };
  /** Its own `send_proxy`, when it sets one. */
  sendProxy: "v1" | "v2" | "off" | undefined;
  /** Its own `backend_tls:`, unread (files are read against the config's directory). */
  tls?: { field: Field; path: string };
  /** Where it was written, and its key path. */
  node?: Node;
  path?: string;
}

/** Reads a `backends:` list at `path`; undefined when it is missing or empty (a bad entry is reported and left out). */
export function backendsOf(
  field: Field | undefined,
  path: string,
  service: string,
  parent: Node,
  at: Report,
): ParsedBackend[] | undefined {
  if (!field) {
    at(
      parent,
      path,
      "missing; list at least one backend, e.g. `backends: [{host: 127.0.0.1, port: 9000}]`",
    );
    return undefined;
  }
  if (!isSeq(field.value) || field.value.items.length === 0) {
    at(
      field.value ?? field.key,
      path,
      `expected a non-empty list of backends, got ${describeNode(field.value)}`,
    );
    return undefined;
  }
  const backends: ParsedBackend[] = [];
  const seen = new Map<string, number>();
  field.value.items.forEach((item, i) => {
    const itemPath = `${path}[${i}]`;
    const parsed = backendItem(item as Node, itemPath, service, at);
    if (!parsed) return;
    const { backend } = parsed;
    const first = seen.get(backend.address);
    if (first !== undefined) {
      at(item as Node, itemPath, `duplicate backend ${backend.address} (also ${path}[${first}])`);
      return;
    }
    seen.set(backend.address, i);
    backends.push({ ...parsed, node: item as Node, path: itemPath });
  });
  return backends;
}

/** A backend with its identity filled in. */
function backend(
  service: string,
  host: string,
  port: number,
  extra: Pick<Backend, "weight" | "backup" | "max_connections" | "bandwidth"> = {
    weight: DEFAULTS.weight,
    backup: false,
    max_connections: null,
    bandwidth: null,
  },
): BackendIdentity {
  const address = formatAddress(host, port);
  return {
    host,
    port,
    address,
    service,
    id: `${service}/${address}`,
    route: null,
    source: "static",
    origin: null,
    ...extra,
  };
}

/** One backend: `{host, port, weight?, backup?, max_connections?}`, or the shorthand `host:port`. */
function backendItem(
  item: Node,
  path: string,
  service: string,
  at: Report,
): ParsedBackend | undefined {
  if (isScalar(item) && typeof item.value === "string") {
    const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(item.value.trim());
    const host = m ? normalizeHost(m[1]) : undefined;
    const port = m ? Number(m[2]) : 0;
    if (!host || port < 1 || port > 65535) {
      at(
        item,
        path,
        `${quote(item.value)} is not a backend; write {host: HOST, port: PORT} or "HOST:PORT"`,
      );
      return undefined;
    }
    return { backend: backend(service, host, port), sendProxy: undefined };
  }
  if (!isMap(item)) {
    at(item, path, `expected a mapping {host, port}, got ${describeNode(item)}`);
    return undefined;
  }
  const fields = mapFields(item, path, BACKEND_KEYS, at);
  const where = fields.has("dns") || fields.has("srv")
    ? discoveredAt(fields, path, at)
    : hostAndPort(fields, item, path, at);
  const weight = intField(fields.get("weight"), `${path}.weight`, {
    default: DEFAULTS.weight,
    min: 0,
    max: MAX_WEIGHT,
  }, at);
  const backup = boolField(fields.get("backup"), `${path}.backup`, false, at);
  const max = fields.get("max_connections");
  const max_connections = max
    ? intField(max, `${path}.max_connections`, { default: 0, min: 1, max: 1_000_000 }, at)
    : null;
  const send = fields.get("send_proxy");
  const sendProxy = send
    ? enumField(send, `${path}.send_proxy`, [...SEND_PROXY, "off"] as const, "off", at)
    : undefined;
  if (!where) return undefined;
  const check = fields.get("health_check");
  const tls = fields.get("backend_tls");
  const bandwidth = bandwidthOf(fields.get("bandwidth"), `${path}.bandwidth`, at);
  const identity = backend(service, where.host, where.port, {
    weight,
    backup,
    max_connections,
    bandwidth,
  });
  const named = where.discovered && {
    address: where.discovered.address,
    id: `${service}/${where.discovered.address}`,
    source: where.discovered.kind,
    origin: where.host,
  };
  return {
    backend: { ...identity, ...named },
    check: check && { field: check, path: `${path}.health_check` },
    tls: tls && { field: tls, path: `${path}.backend_tls` },
    sendProxy,
  };
}

/** Where a backend is: `host` and `port`, or a name to discover (see {@link discoveredAt}). */
interface Where {
  host: string;
  port: number;
  /** How the name is resolved, and how the entry is named in messages and ids. */
  discovered?: { kind: "dns" | "srv"; address: string };
}

function hostAndPort(
  fields: Map<string, Field>,
  item: Node,
  path: string,
  at: Report,
): Where | undefined {
  const hostF = fields.get("host");
  const portF = fields.get("port");
  if (!hostF) at(item, `${path}.host`, "missing; expected an IP address or hostname");
  if (!portF) at(item, `${path}.port`, "missing; expected an integer from 1 to 65535");
  if (!hostF || !portF) return undefined;
  const host = hostField(hostF, `${path}.host`, at);
  const port = intField(portF, `${path}.port`, PORT_RULE, at);
  return host === undefined ? undefined : { host, port };
}

/**
 * `dns: NAME:PORT` (every A/AAAA address of NAME) or `srv: NAME` (SRV
 * targets with their own ports), in place of host and port.
 */
function discoveredAt(
  fields: Map<string, Field>,
  path: string,
  at: Report,
): Where | undefined {
  for (const k of ["host", "port", ...(fields.has("dns") ? ["srv"] : [])]) {
    const f = fields.get(k);
    if (f) {
      at(
        f.key,
        `${path}.${k}`,
        "cannot stand beside dns or srv, which name where the backends are",
      );
    }
  }
  const kind = fields.has("dns") ? "dns" : "srv";
  const f = fields.get(kind)!;
  const text = isScalar(f.value) && typeof f.value.value === "string" ? f.value.value.trim() : "";
  const m = kind === "dns" ? /^(.+):(\d+)$/.exec(text) : [text, text, ""];
  const name = m ? normalizePattern(m[1]) : "";
  const port = m && kind === "dns" ? Number(m[2]) : 0;
  const bad = !m || patternProblem(name) !== null || name.startsWith("*") ||
    (kind === "dns" && (port < 1 || port > 65535));
  if (bad) {
    const example = kind === "dns" ? `"web.example.com:8080"` : `"_http._tcp.example.com"`;
    at(
      f.value ?? f.key,
      `${path}.${kind}`,
      `expected a DNS name${kind === "dns" ? " and port" : ""}, e.g. ${example}, got ${
        describeNode(f.value)
      }`,
    );
    return undefined;
  }
  const address = kind === "dns" ? `dns:${name}:${port}` : `srv:${name}`;
  return { host: name, port, discovered: { kind, address } };
}
