/**
 * Discovery settings: `resolver:` (the DNS server that `dns:` and `srv:`
 * backends are resolved with) and a service's `discovery: {etcd: ...}`.
 *
 * @module
 */
import { isMap, isScalar, isSeq, type Node } from "./yaml.ts";
import { normalizeHost } from "../net/address.ts";
import { boolField, describeNode, type Field, mapFields, type Report } from "./fields.ts";
import type { Backend, Discovered, EtcdSource } from "./schema.ts";
import type { ParsedBackend } from "./backends.ts";

/** `resolver: HOST:PORT` (or `HOST`, port 53; `[v6]:PORT` for IPv6), or null when absent. */
export function resolverOf(
  field: Field | undefined,
  at: Report,
): { hostname: string; port: number } | null {
  if (!field) return null;
  const text = isScalar(field.value) && typeof field.value.value === "string"
    ? field.value.value.trim()
    : "";
  const m = /^(\[[^\]]+\]|[^:\[\]]+)(?::(\d+))?$/.exec(text) ??
    /^([0-9a-fA-F:]+)$/.exec(text);
  const hostname = m ? normalizeHost(m[1]) : undefined;
  const port = m?.[2] ? Number(m[2]) : 53;
  if (!hostname || !/^[\d.]+$|:/.test(hostname) || port < 1 || port > 65535) {
    at(
      field.value ?? field.key,
      "resolver",
      `expected a DNS server's IP address and port, e.g. "127.0.0.1:53" or "[::1]:5353", got ${
        describeNode(field.value)
      }`,
    );
    return null;
  }
  return { hostname, port };
}

/** A service's backends split: those written with an address, and the entries to discover. */
export function splitDiscovered(
  all: readonly Backend[],
  etcd: EtcdSource | null,
  allowEmpty: boolean,
): { backends: Backend[]; discovered: Discovered[] } {
  const backends = all.filter((b) => b.source === "static");
  const discovered = all.filter((b) => b.source !== "static").map((b): Discovered => ({
    kind: b.source as Discovered["kind"],
    name: b.origin!,
    port: b.source === "dns" ? b.port : null,
    template: b,
    allow_empty: allowEmpty,
    ...(b.source === "etcd" && etcd ? { etcd } : {}),
  }));
  return { backends, discovered };
}

/** An etcd prefix: printable ASCII, starting with `/`. */
const PREFIX = /^\/[\x21-\x7e]*$/;
/** An etcd member's base URL. */
const ENDPOINT = /^https?:\/\/[^/\s]+\/?$/;

/** A service's `discovery:` block: its etcd prefix (or null), and whether an empty answer empties the pool. */
export interface DiscoveryBlock {
  etcd: { etcd: EtcdSource; entry: ParsedBackend } | null;
  allowEmpty: boolean;
}

/**
 * `discovery: {etcd: {endpoints, prefix}, allow_empty: BOOL}`, both optional
 * but not both absent. `allow_empty: true` lets an answer with no backends
 * (a name without records, a prefix without keys) empty the pool; without
 * it the last known set stays, as it does when the source cannot be reached.
 */
export function discoveryOf(
  field: Field | undefined,
  key: (k: string) => string,
  service: string,
  at: Report,
): DiscoveryBlock {
  if (!field) return { etcd: null, allowEmpty: false };
  const path = key("discovery");
  if (!isMap(field.value)) {
    at(
      field.value ?? field.key,
      path,
      `expected {etcd: {endpoints, prefix}, allow_empty: true|false}, got ${
        describeNode(field.value)
      }`,
    );
    return { etcd: null, allowEmpty: false };
  }
  const f = mapFields(field.value, path, ["etcd", "allow_empty"], at);
  const allowEmpty = boolField(f.get("allow_empty"), `${path}.allow_empty`, false, at);
  if (!f.has("etcd") && f.has("allow_empty")) return { etcd: null, allowEmpty };
  return { etcd: etcdOf(f.get("etcd"), field.value, path, service, at), allowEmpty };
}

/**
 * `etcd: {endpoints: [URL, ...], prefix: "/bal/web/"}`: the settings, and a
 * backend entry standing for every key under the prefix (settings as the
 * service's), or null when absent or wrong.
 */
function etcdOf(
  etcdField: Field | undefined,
  parent: Node,
  path: string,
  service: string,
  at: Report,
): { etcd: EtcdSource; entry: ParsedBackend } | null {
  if (!etcdField || !isMap(etcdField.value)) {
    at(
      etcdField?.value ?? parent,
      `${path}.etcd`,
      "expected {endpoints: [http://HOST:2379], prefix: /bal/SERVICE/}",
    );
    return null;
  }
  const f = mapFields(etcdField.value, `${path}.etcd`, ["endpoints", "prefix"], at);
  const endpoints = endpointsOf(f.get("endpoints"), `${path}.etcd.endpoints`, etcdField.value, at);
  const prefixF = f.get("prefix");
  const prefix = isScalar(prefixF?.value) && typeof prefixF.value.value === "string"
    ? prefixF.value.value
    : "";
  if (!PREFIX.test(prefix)) {
    at(
      prefixF?.value ?? etcdField.value,
      `${path}.etcd.prefix`,
      `expected a key prefix starting with /, e.g. "/bal/${service}/", got ${
        describeNode(prefixF?.value)
      }`,
    );
    return null;
  }
  if (!endpoints) return null;
  const address = `etcd:${prefix}`;
  const backend = {
    host: prefix,
    port: 0,
    address,
    service,
    id: `${service}/${address}`,
    route: null,
    source: "etcd" as const,
    origin: prefix,
    weight: 1,
    backup: false,
    max_connections: null,
    bandwidth: null,
  };
  return { etcd: { endpoints, prefix }, entry: { backend, sendProxy: undefined } };
}

function endpointsOf(
  field: Field | undefined,
  path: string,
  parent: Node,
  at: Report,
): string[] | null {
  const items = field && isSeq(field.value) ? field.value.items : [];
  const urls = items.map((n) => isScalar(n) && typeof n.value === "string" ? n.value.trim() : "");
  if (urls.length === 0 || urls.some((u) => !ENDPOINT.test(u))) {
    at(
      field?.value ?? parent,
      path,
      `expected a list of etcd URLs, e.g. ["http://127.0.0.1:2379"], got ${
        describeNode(field?.value)
      }`,
    );
    return null;
  }
  return urls;
}
