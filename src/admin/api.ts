/**
 * The admin endpoint's JSON API under `/api/`: the services as configured
 * and as they run, and changes to them that are saved into the config
 * file. Each route becomes a control command (the CLI's own), so the API
 * and `bal backend add` ... share one implementation. Reading takes any
 * token; changing takes one with the `write` role.
 *
 * @module
 */
import type { Caller } from "./auth.ts";
import { OPENAPI } from "./openapi.ts";

/** Runs a control command for `caller` (its name is logged with a change). */
export type RunCommand = (request: Record<string, unknown>, caller: Caller) => Promise<unknown>;

/** One route: its method, its path with `{name}` and `{backend}` parts, and what it needs. */
export interface ApiRoute {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  path: string;
  write: boolean;
  /** The command request it makes from the path's parts and the body. */
  request(parts: Record<string, string>, body: Record<string, unknown>): Record<string, unknown>[];
  /** The status of a success. */
  created?: boolean;
}

const change = (edit: Record<string, unknown>) => [{ cmd: "config_change", edit }];

const ADMIN_ACTIONS: Record<string, string> = {
  enabled: "enable",
  draining: "drain",
  disabled: "disable",
};

/** Every route the API answers; the OpenAPI document lists the same (a test holds them together). */
export const API_ROUTES: readonly ApiRoute[] = [
  { method: "GET", path: "/api/services", write: false, request: () => [{ cmd: "service_list" }] },
  {
    method: "GET",
    path: "/api/services/{name}",
    write: false,
    request: (p) => [{ cmd: "service_list", service: p.name }],
  },
  {
    method: "POST",
    path: "/api/services",
    write: true,
    created: true,
    request: (_, body) => change({ op: "add_service", service: body }),
  },
  {
    method: "PUT",
    path: "/api/services/{name}",
    write: true,
    request: (p, body) =>
      change({ op: "replace_service", name: p.name, service: { name: p.name, ...body } }),
  },
  {
    method: "DELETE",
    path: "/api/services/{name}",
    write: true,
    request: (p) => change({ op: "remove_service", name: p.name }),
  },
  {
    method: "POST",
    path: "/api/services/{name}/backends",
    write: true,
    created: true,
    request: (p, body) => change({ op: "add_backend", service: p.name, backend: body }),
  },
  {
    method: "DELETE",
    path: "/api/services/{name}/backends/{backend}",
    write: true,
    request: (p) => change({ op: "remove_backend", service: p.name, backend: p.backend }),
  },
  {
    method: "PATCH",
    path: "/api/services/{name}/backends/{backend}",
    write: true,
    request: (p, body) => [
      // The weight goes into the file and, as `bal backend weight` sets it, into force at once.
      ...(body.weight === undefined ? [] : [
        ...change({ op: "set_weight", service: p.name, backend: p.backend, weight: body.weight }),
        {
          cmd: "backend_set",
          service: p.name,
          backend: p.backend,
          action: "weight",
          weight: body.weight,
        },
      ]),
      ...(body.admin_state === undefined ? [] : [{
        cmd: "backend_set",
        service: p.name,
        backend: p.backend,
        action: ADMIN_ACTIONS[String(body.admin_state)] ?? body.admin_state,
      }]),
    ],
  },
];

/** The route `method path` matches and its parts, or null. */
export function matchRoute(
  method: string,
  path: string,
): { route: ApiRoute; parts: Record<string, string> } | null {
  for (const route of API_ROUTES) {
    if (route.method !== method) continue;
    const names: string[] = [];
    const pattern = route.path.replace(/\{(\w+)\}/g, (_, n) => (names.push(n), "([^/]+)"));
    const m = new RegExp(`^${pattern}$`).exec(path);
    if (!m) continue;
    const parts: Record<string, string> = {};
    names.forEach((n, i) => parts[n] = decodeURIComponent(m[i + 1]));
    return { route, parts };
  }
  return null;
}

function json(status: number, value: unknown): Response {
  return Response.json(value, { status });
}

/** Answers a request under `/api/`, `caller` already known by its token. */
export async function answerApi(req: Request, caller: Caller, run: RunCommand): Promise<Response> {
  const path = new URL(req.url).pathname;
  if (path === "/api/openapi.json" && req.method === "GET") return json(200, OPENAPI);
  const found = matchRoute(req.method, path);
  if (!found) {
    const known = API_ROUTES.some((r) => matchRoute(r.method, path)?.route === r);
    return json(known ? 405 : 404, {
      error: known
        ? `${req.method} is not served on ${path}`
        : `no route ${path}; see /api/openapi.json`,
    });
  }
  if (found.route.write && caller.role !== "write") {
    return json(403, {
      error:
        `${caller.name} may only read; a change needs a token with role write (admin.token or admin.tokens)`,
    });
  }
  let body: Record<string, unknown> = {};
  if (req.method === "POST" || req.method === "PUT" || req.method === "PATCH") {
    const parsed = await req.json().catch(() => undefined);
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      return json(400, { error: "the body must be a JSON object" });
    }
    body = parsed;
  }
  const requests = found.route.request(found.parts, body);
  if (requests.length === 0) {
    return json(400, { error: "nothing to change: give weight and/or admin_state" });
  }
  let reply: unknown = null;
  for (const request of requests) {
    reply = await run(request, caller);
    const r = reply as { error?: string; status?: number };
    if (r.error !== undefined) return json(r.status ?? 400, reply);
  }
  return answerOf(found, reply, run, caller);
}

/** A success's answer: the service or backend as it now runs. */
async function answerOf(
  found: { route: ApiRoute; parts: Record<string, string> },
  reply: unknown,
  run: RunCommand,
  caller: Caller,
): Promise<Response> {
  const { route, parts } = found;
  if (route.path === "/api/services/{name}" && route.method === "GET") {
    return json(200, (reply as { services: unknown[] }).services[0]);
  }
  if (route.method === "PATCH") {
    const view = await run({ cmd: "service_list", service: parts.name }, caller) as {
      services: { live: { backends: { address: string }[] } | null }[];
    };
    const backends = view.services?.[0]?.live?.backends ?? [];
    return json(200, backends.find((b) => b.address === parts.backend) ?? reply);
  }
  return json(route.created ? 201 : 200, reply);
}
