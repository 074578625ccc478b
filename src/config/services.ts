/**
 * Checking the services of a config: the `services:` list (names unique,
 * listeners apart) or the single-service form's one, each with its
 * listener, method, backends or routes, discovery, PROXY protocol settings
 * and runtime merged over the global layer.
 *
 * @module
 */
import { isMap, isScalar, isSeq, type Node } from "./yaml.ts";
import type { ConfigLocation } from "../errors.ts";
import { formatAddress, listenersOverlap } from "../net/address.ts";
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
import { mergeRuntime, RUNTIME_KEYS, type RuntimeLayer, runtimeLayer } from "./runtime.ts";
import { healthCheckOf, noCheck, tcpCheck } from "./health_check.ts";
import { protocolOf, refuseForProtocol } from "./udp.ts";
import { shapingOf } from "./shaping.ts";
import { backendTlsOf, type PemCheck, serviceTlsOf, type TlsFiles } from "./tls.ts";
import { aclOf, cidrList } from "./allow_deny.ts";
import { backendsOf, type ParsedBackend, PORT_RULE, SEND_PROXY } from "./backends.ts";
import { routesOf, type RoutesRead } from "./routes.ts";
import { type DiscoveryBlock, discoveryOf, splitDiscovered } from "./discovery.ts";
import type { ProxyVersion } from "../route/proxy_protocol.ts";
import {
  type Backend,
  type BackendTls,
  DEFAULTS,
  type HealthCheck,
  type Method,
  METHODS,
  type RuntimeSettings,
  type Service,
} from "./schema.ts";

/** What reading the file noticed besides errors. */
export interface Notes {
  warnings: string[];
  places: Map<string, ConfigLocation>;
  /** Where each static backend was written, for checks across services. */
  backendAt: Map<Backend, { node?: Node; path?: string }>;
  /** Where a node is. */
  locate(node: Node | null | undefined): ConfigLocation;
  /** The config file's directory, with a trailing slash: where relative file paths start. */
  dir: string;
  /** Certificate, key and CA files read, for the checks once the file is read. */
  pems: PemCheck[];
}

/** Keys of the single-service form, which live inside a service in the `services:` form. */
export const SERVICE_FORM_KEYS = [
  "port",
  "bind_address",
  "method",
  "backends",
  "allow",
  "deny",
  "send_proxy",
  "accept_proxy",
  "proxy_trusted",
  "health_check_send_proxy",
  "routes",
  "default_route",
  "discovery",
  "protocol",
  "udp",
  "bandwidth",
  "mirror",
  "tls",
  "backend_tls",
];
const SERVICE_KEYS = ["name", ...SERVICE_FORM_KEYS, "health_check", "access_log", "runtime"];
const SERVICE_NAME = /^[a-z0-9_-]{1,32}$/;

/** Where a node is, for messages that point at a second place. */
export type Position = (node: Node | null | undefined) => string;

/** The `services:` list: each entry checked, names unique, listeners apart. */
export function servicesOf(
  field: Field,
  global: RuntimeLayer,
  at: Report,
  position: Position,
  notes: Notes,
  /** Whether a key belongs at the top level (misplaced in a service). */
  topLevel: (name: string) => boolean,
): Service[] {
  if (!isSeq(field.value) || field.value.items.length === 0) {
    at(
      field.value ?? field.key,
      "services",
      `expected a non-empty list of services, got ${describeNode(field.value)}`,
    );
    return [];
  }
  const services: Service[] = [];
  const seen: { service: Service; path: string; nameNode: Node; portNode: Node }[] = [];
  field.value.items.forEach((item, i) => {
    const path = `services[${i}]`;
    if (!isMap(item)) {
      at(
        item as Node,
        path,
        `expected a mapping {name, port, backends}, got ${describeNode(item as Node)}`,
      );
      return;
    }
    const f = mapFields(item, path, SERVICE_KEYS, at, {
      misplaced: (name) =>
        RUNTIME_KEYS.includes(name)
          ? "; it belongs under its `runtime:`"
          : topLevel(name) && !SERVICE_KEYS.includes(name)
          ? "; it belongs at the top level, for every service"
          : "",
    });
    const name = serviceName(f.get("name"), path, item, at);
    const portField = f.get("port");
    if (!portField) at(item, `${path}.port`, "missing; expected an integer from 1 to 65535");
    const service = serviceOf(f, path, name ?? "", global, item, at, notes);
    if (!service || !name || !portField) return;
    const here = {
      service,
      path,
      nameNode: f.get("name")!.value!,
      portNode: f.get("port")!.value!,
    };
    const twin = seen.find((s) => s.service.name === name);
    if (twin) {
      at(
        here.nameNode,
        `${path}.name`,
        `duplicate service name "${name}" (also ${twin.path} at ${position(twin.nameNode)})`,
      );
      return;
    }
    // A TCP and a UDP service may share a port, as DNS does on 53.
    const clash = seen.find((s) =>
      s.service.protocol === service.protocol && listenersOverlap(s.service, service)
    );
    if (clash) {
      const mine = formatAddress(service.bind_address, service.port);
      const theirs = formatAddress(clash.service.bind_address, clash.service.port);
      at(
        here.portNode,
        `${path}.port`,
        `service "${name}" listens on ${mine}, which collides with service "${clash.service.name}" on ${theirs} (${clash.path} at ${
          position(clash.portNode)
        }); give each service its own port or address`,
      );
      return;
    }
    seen.push(here);
    services.push(service);
  });
  return services;
}

function serviceName(
  field: Field | undefined,
  path: string,
  item: Node,
  at: Report,
): string | undefined {
  if (!field) {
    at(item, `${path}.name`, "missing; expected a name of a-z, 0-9, _ and - (at most 32)");
    return undefined;
  }
  const value = isScalar(field.value) ? field.value.value : undefined;
  if (typeof value === "string" && SERVICE_NAME.test(value)) return value;
  at(
    field.value ?? field.key,
    `${path}.name`,
    `expected a name of a-z, 0-9, _ and - (at most 32), got ${describeNode(field.value)}`,
  );
  return undefined;
}

/** One service from its fields (the root's in the single-service form, at `prefix` ""). */
export function serviceOf(
  fields: Map<string, Field>,
  prefix: string,
  name: string,
  global: RuntimeLayer,
  node: Node,
  at: Report,
  notes: Notes,
): Service | undefined {
  const key = (k: string) => prefix ? `${prefix}.${k}` : k;
  const port = intField(fields.get("port"), key("port"), PORT_RULE, at);
  const bind_address = bindAddressOf(fields.get("bind_address"), key, node, notes, at);
  const method = enumField(fields.get("method"), key("method"), METHODS, DEFAULTS.method, at);
  const routed = backendsAndRoutes(fields, key, name, method, node, at);
  const discovery = serviceDiscovery(fields, key, name, at);
  const etcd = discovery.etcd;
  const parsed = routed.parsed && etcd ? [...routed.parsed, etcd.entry] : routed.parsed;
  const layers = [global];
  if (prefix) layers.push(runtimeLayer(fields.get("runtime"), key("runtime"), at, atServiceLevel));
  const runtime = mergeRuntime(parsed?.length ?? 0, layers, at);
  const { protocol, udp } = protocolOf(fields, key, at);
  // Checks are timed by the runtime keys, which depend on how many backends there are.
  const serviceCheck = healthCheckOf(
    fields.get("health_check"),
    key("health_check"),
    protocol === "udp" ? noCheck(runtime) : tcpCheck(runtime),
    runtime,
    at,
  );
  const proxy = proxyOf(fields, key, at);
  const files = tlsFiles(notes, at);
  const tls = serviceTlsOf(fields, key, routed.certificates, protocol, files);
  if (!parsed || bind_address === undefined) return undefined;
  const resolved = resolveBackends(
    parsed,
    fields,
    key,
    {
      sendProxy: proxy.send_proxy,
      check: serviceCheck,
      tls: backendTlsOf(fields.get("backend_tls"), key("backend_tls"), files),
    },
    runtime,
    files,
  );
  resolved.forEach((b, i) => notes.backendAt.set(b, parsed[i]));
  const inherited = { check: serviceCheck, sendProxy: proxy.send_proxy };
  refuseForProtocol(protocol, fields, key, resolved, inherited, notes, at);
  const { backends, discovered } = splitDiscovered(
    resolved,
    etcd?.etcd ?? null,
    discovery.allowEmpty,
  );
  const access_log = boolField(fields.get("access_log"), key("access_log"), false, at);
  const acl = aclOf(fields.get("allow"), fields.get("deny"), key, at);
  const routes = routed.routes.map((r) => ({
    ...r,
    backends: backends.filter((b) => b.route === r.name),
  }));
  const { default_route } = routed;
  return {
    name,
    bind_address,
    port,
    method,
    backends,
    runtime,
    access_log,
    acl,
    ...proxy,
    routes,
    default_route,
    discovered,
    protocol,
    udp,
    ...shapingOf(fields, key, protocol, backends, (b) => notes.backendAt.get(b), at),
    tls,
  };
}

/** Where a service's certificate files are found, and their keys' places kept. */
function tlsFiles(notes: Notes, at: Report): TlsFiles {
  return { dir: notes.dir, at, read: (check) => notes.pems.push(check), locate: notes.locate };
}

/** A service's `bind_address`, located for later messages; left out, a warning says what that means. */
function bindAddressOf(
  bind: Field | undefined,
  key: (k: string) => string,
  node: Node,
  notes: Notes,
  at: Report,
): string | undefined {
  notes.places.set(key("bind_address"), notes.locate(bind?.value ?? node));
  if (bind) return hostField(bind, key("bind_address"), at);
  // Written out, 0.0.0.0 is a choice; left out, the operator may not know it is every interface.
  notes.warnings.push(
    `${
      key("bind_address")
    }: not set, so bal listens on every interface (${DEFAULTS.bind_address}); write \`bind_address: ${DEFAULTS.bind_address}\` to mean it, or 127.0.0.1 for local clients only`,
  );
  return DEFAULTS.bind_address;
}

/** A service's `discovery:` block; etcd cannot stand beside `routes:`. */
function serviceDiscovery(
  fields: Map<string, Field>,
  key: (k: string) => string,
  name: string,
  at: Report,
): DiscoveryBlock {
  const discovery = discoveryOf(fields.get("discovery"), key, name, at);
  if (discovery.etcd && fields.get("routes")) {
    at(
      fields.get("discovery")!.key,
      key("discovery"),
      "etcd discovery goes with backends:, not routes:",
    );
  }
  return discovery;
}

/** A service's backends: its `backends:` list, or its routes' with `routes:`. */
function backendsAndRoutes(
  fields: Map<string, Field>,
  key: (k: string) => string,
  service: string,
  method: Method,
  node: Node,
  at: Report,
): RoutesRead {
  if (fields.get("routes")) return routesOf(fields, key, service, method, at);
  const defaultField = fields.get("default_route");
  if (defaultField) {
    at(
      defaultField.key,
      key("default_route"),
      "goes with `routes:`; without routes every client goes to backends",
    );
  }
  // With etcd discovery a service may have no backends of its own.
  const parsed = !fields.get("backends") && namesEtcd(fields.get("discovery"))
    ? []
    : backendsOf(fields.get("backends"), key("backends"), service, node, at);
  return { routes: [], default_route: null, parsed, certificates: [] };
}

/** True when a `discovery:` block has an `etcd:` key (its backends may then all come from etcd). */
function namesEtcd(field: Field | undefined): boolean {
  const block = field?.value;
  return isMap(block) && block.items.some((p) => isScalar(p.key) && p.key.value === "etcd");
}

/** Backends with their health check and PROXY headers resolved against their service's. */
function resolveBackends(
  parsed: readonly ParsedBackend[],
  fields: Map<string, Field>,
  key: (k: string) => string,
  service: { sendProxy: ProxyVersion | null; check: HealthCheck; tls: BackendTls | null },
  runtime: RuntimeSettings,
  files: TlsFiles,
): Backend[] {
  const { at } = files;
  const serviceCheck = service.check;
  const checkSendProxy = fields.get("health_check_send_proxy");
  const sendsToChecks = boolField(checkSendProxy, key("health_check_send_proxy"), false, at);
  return parsed.map(({ backend, check, sendProxy, tls: ownTls }) => {
    const tls = ownTls ? backendTlsOf(ownTls.field, ownTls.path, files) : service.tls;
    const send_proxy = sendProxy === undefined
      ? service.sendProxy
      : sendProxy === "off"
      ? null
      : sendProxy;
    const ownCheck = check
      ? healthCheckOf(check.field, check.path, serviceCheck, runtime, at)
      : serviceCheck;
    // As HAProxy's check-send-proxy: the backend's own version, v1 when it sends none.
    const check_send_proxy = sendsToChecks ? send_proxy ?? "v1" : null;
    if (check_send_proxy && ownCheck.tls && ownCheck.type !== "agent") {
      at(
        checkSendProxy!.value ?? checkSendProxy!.key,
        key("health_check_send_proxy"),
        `not supported with a TLS check (backend ${backend.address}); use a tcp or http check`,
      );
    }
    return { ...backend, send_proxy, check_send_proxy, check: ownCheck, tls };
  });
}

/** The PROXY protocol settings of a service: what it sends, whether and from whom it accepts one. */
function proxyOf(fields: Map<string, Field>, key: (k: string) => string, at: Report) {
  const send = fields.get("send_proxy");
  const send_proxy = send ? enumField(send, key("send_proxy"), SEND_PROXY, "v1", at) : null;
  const acceptField = fields.get("accept_proxy");
  const accept_proxy = boolField(acceptField, key("accept_proxy"), false, at);
  const trusted = fields.get("proxy_trusted");
  const proxy_trusted = trusted ? cidrList(trusted, key("proxy_trusted"), at) : [];
  if (accept_proxy && !trusted) {
    at(
      acceptField!.value ?? acceptField!.key,
      key("accept_proxy"),
      "needs proxy_trusted: the addresses of the proxies in front, e.g. proxy_trusted: [10.0.0.5]; a header from any other address is refused",
    );
  }
  return { send_proxy, accept_proxy, proxy_trusted };
}

const atServiceLevel = (name: string) =>
  SERVICE_KEYS.includes(name) && name !== "runtime" ? "; it belongs in the service itself" : "";
