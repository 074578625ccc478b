/**
 * Which route of a service a TLS server name (SNI) goes to. Pure: routes
 * and a name in, a route name out. Precedence is nginx's `server_name`:
 * an exact name first, then the longest matching `*.suffix` wildcard (any
 * depth below the suffix, never the suffix itself), then the default route.
 * Between two routes with the same pattern, the first in the file wins.
 *
 * @module
 */

/** What routing needs of a route: its name and its patterns (lowercase). */
export interface RoutePatterns {
  readonly name: string;
  readonly sni: readonly string[];
}

/** A service's routes, ready for lookups. */
export interface RouteTable {
  readonly exact: ReadonlyMap<string, string>;
  /** `.suffix` and route, longest suffix first. */
  readonly wildcards: readonly (readonly [string, string])[];
  /** Where a name that matches nothing (or no name) goes; null: nowhere, the client is closed. */
  readonly fallback: string | null;
}

/** A name or `*.name` pattern: DNS labels, at most 253 characters. */
const PATTERN =
  /^(?:\*\.)?(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/** Why `pattern` is not a server name or `*.suffix` wildcard, or null when it is. */
export function patternProblem(pattern: string): string | null {
  if (PATTERN.test(pattern)) return null;
  if (pattern.includes("*")) {
    return "a wildcard is `*.` followed by a name (`*.example.com`), nothing else";
  }
  return "not a DNS name (letters, digits, `-`, `_` and dots; labels of 1-63)";
}

/** A pattern as lookups compare it: lowercase, no trailing dot. */
export function normalizePattern(pattern: string): string {
  return pattern.trim().toLowerCase().replace(/\.$/, "");
}

/** Builds a service's lookup table; the first route with a pattern keeps it. */
export function routeTable(routes: readonly RoutePatterns[], fallback: string | null): RouteTable {
  const exact = new Map<string, string>();
  const wild = new Map<string, string>();
  for (const route of routes) {
    for (const p of route.sni) {
      const table = p.startsWith("*.") ? wild : exact;
      const key = p.startsWith("*.") ? p.slice(1) : p;
      if (!table.has(key)) table.set(key, route.name);
    }
  }
  const wildcards = [...wild].sort((a, b) => b[0].length - a[0].length);
  return { exact, wildcards, fallback };
}

/** The route a server name goes to (null: no SNI), or null when none takes it. */
export function routeFor(table: RouteTable, sni: string | null): string | null {
  if (sni === null) return table.fallback;
  const exact = table.exact.get(sni);
  if (exact !== undefined) return exact;
  for (const [suffix, route] of table.wildcards) {
    if (sni.length > suffix.length && sni.endsWith(suffix)) return route;
  }
  return table.fallback;
}

/**
 * Routes that can never be chosen: no pattern of theirs survives an earlier
 * route's same pattern, and they are not the default. Each with why.
 */
export function unreachableRoutes(
  routes: readonly RoutePatterns[],
  fallback: string | null,
): { route: string; why: string }[] {
  const table = routeTable(routes, fallback);
  const out: { route: string; why: string }[] = [];
  for (const route of routes) {
    if (route.name === fallback) continue;
    if (route.sni.length === 0) {
      out.push({ route: route.name, why: "it has no `sni` and is not the default_route" });
      continue;
    }
    const owners = route.sni.map((p) =>
      p.startsWith("*.") ? table.wildcards.find(([s]) => s === p.slice(1))![1] : table.exact.get(p)!
    );
    if (owners.every((o) => o !== route.name)) {
      out.push({
        route: route.name,
        why: `every name it lists belongs to an earlier route (${[...new Set(owners)].join(", ")})`,
      });
    }
  }
  return out;
}
