/**
 * Reading a service's `routes:` and `default_route:` (SNI routing): each
 * route's names, method and backends, checked, with every backend tagged
 * with its route.
 *
 * @module
 */
import { isMap, isScalar, isSeq, type Node } from "./yaml.ts";
import { normalizePattern, patternProblem } from "../route/sni.ts";
import { backendsOf, type ParsedBackend } from "./backends.ts";
import { describeNode, enumField, type Field, mapFields, type Report } from "./fields.ts";
import { type Method, METHODS, type Route } from "./schema.ts";

const ROUTE_KEYS = ["name", "sni", "method", "backends", "certificates"];
/** A route's name: what status, logs and default_route call it. */
const ROUTE_NAME = /^[a-z0-9_.*-]{1,64}$/;

/** What `routes:` held: the routes (backends still apart) and every backend, tagged. */
export interface RoutesRead {
  routes: Omit<Route, "backends">[];
  default_route: string | null;
  /** Every route's backends in order, each with `route` set; undefined when a route had none. */
  parsed: ParsedBackend[] | undefined;
  /** The routes' own `certificates:` (for a service with `tls:`), unread. */
  certificates: { route: string; field: Field; path: string }[];
}

/** A service's `routes:` and `default_route:`, with `method` as each route's default. */
export function routesOf(
  fields: Map<string, Field>,
  key: (k: string) => string,
  service: string,
  method: Method,
  at: Report,
): RoutesRead {
  const field = fields.get("routes")!;
  const read: RoutesRead = { routes: [], default_route: null, parsed: [], certificates: [] };
  const backends = fields.get("backends");
  if (backends) {
    at(
      backends.key,
      key("backends"),
      "cannot stand beside `routes:`; list each route's backends in it, and name the route other clients go to with default_route",
    );
  }
  if (!isSeq(field.value) || field.value.items.length === 0) {
    at(
      field.value ?? field.key,
      key("routes"),
      `expected a non-empty list of routes {sni, backends}, got ${describeNode(field.value)}`,
    );
    return { ...read, parsed: undefined };
  }
  const places = new Map<string, string>();
  field.value.items.forEach((item, i) => {
    const route = routeOf(item as Node, `${key("routes")}[${i}]`, service, method, at);
    if (!route) return void (read.parsed = undefined);
    if (read.routes.some((r) => r.name === route.name)) {
      at(item as Node, `${key("routes")}[${i}].name`, `duplicate route name "${route.name}"`);
      return;
    }
    read.routes.push(route.route);
    if (route.certificates) read.certificates.push({ route: route.name, ...route.certificates });
    for (const p of route.backends) {
      const other = places.get(p.backend.address);
      if (other) {
        at(
          p.node ?? item as Node,
          p.path ?? key("routes"),
          `backend ${p.backend.address} is also in ${other}; a backend serves one route`,
        );
      }
      places.set(p.backend.address, p.path ?? "");
      read.parsed?.push(p);
    }
  });
  read.default_route = defaultRoute(fields.get("default_route"), key, read.routes, at);
  return read;
}

/** One route: its patterns checked and lowercased, its backends tagged with its name. */
function routeOf(
  item: Node,
  path: string,
  service: string,
  serviceMethod: Method,
  at: Report,
): {
  name: string;
  route: Omit<Route, "backends">;
  backends: ParsedBackend[];
  certificates?: { field: Field; path: string };
} | undefined {
  if (!isMap(item)) {
    at(item, path, `expected a mapping {sni, backends}, got ${describeNode(item)}`);
    return undefined;
  }
  const f = mapFields(item, path, ROUTE_KEYS, at);
  const sni = patternsOf(f.get("sni"), `${path}.sni`, at);
  const method = enumField(f.get("method"), `${path}.method`, METHODS, serviceMethod, at);
  const name = routeName(f.get("name"), sni, path, item, at);
  const parsed = backendsOf(f.get("backends"), `${path}.backends`, service, item, at);
  if (!parsed || !sni || !name) return undefined;
  const backends = parsed.map((p) => ({ ...p, backend: { ...p.backend, route: name } }));
  const certs = f.get("certificates");
  const certificates = certs && { field: certs, path: `${path}.certificates` };
  return { name, route: { name, sni, method }, backends, certificates };
}

/** A route's `name`, or its first pattern when it has none. */
function routeName(
  field: Field | undefined,
  sni: string[] | undefined,
  path: string,
  item: Node,
  at: Report,
): string | undefined {
  if (!field) {
    if (sni && sni.length > 0) return sni[0];
    if (sni) {
      at(item, `${path}.name`, "missing; a route without `sni` needs a name for default_route");
    }
    return undefined;
  }
  const value = isScalar(field.value) ? field.value.value : undefined;
  if (typeof value === "string" && ROUTE_NAME.test(value)) return value;
  at(
    field.value ?? field.key,
    `${path}.name`,
    `expected a name of a-z, 0-9, _, -, . and * (at most 64), got ${describeNode(field.value)}`,
  );
  return undefined;
}

/** `sni:` as lowercase patterns; absent is empty (a route reached only as the default). */
function patternsOf(field: Field | undefined, path: string, at: Report): string[] | undefined {
  if (!field) return [];
  const items = isSeq(field.value) ? field.value.items as Node[] : [field.value as Node];
  const out: string[] = [];
  let ok = true;
  items.forEach((node, i) => {
    const value = isScalar(node) ? node.value : undefined;
    const here = isSeq(field.value) ? `${path}[${i}]` : path;
    if (typeof value !== "string") {
      ok = false;
      return at(node ?? field.key, here, `expected a server name, got ${describeNode(node)}`);
    }
    const pattern = normalizePattern(value);
    const problem = patternProblem(pattern);
    if (problem) {
      ok = false;
      return at(node, here, `"${value}" is ${problem.startsWith("a ") ? "wrong: " : ""}${problem}`);
    }
    if (!out.includes(pattern)) out.push(pattern);
  });
  return ok ? out : undefined;
}

/** `default_route:` the name of one of the routes, or null. */
function defaultRoute(
  field: Field | undefined,
  key: (k: string) => string,
  routes: readonly Omit<Route, "backends">[],
  at: Report,
): string | null {
  if (!field) return null;
  const value = isScalar(field.value) ? field.value.value : undefined;
  if (typeof value === "string" && routes.some((r) => r.name === value)) return value;
  const names = routes.map((r) => `"${r.name}"`).join(", ");
  at(
    field.value ?? field.key,
    key("default_route"),
    `expected the name of one of the routes (${names}), got ${describeNode(field.value)}`,
  );
  return null;
}
