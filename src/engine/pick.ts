/**
 * Which backend a client is offered next: its service's (or route's)
 * balancer over the backends' health, admin state and live counts, each
 * backend offered at most once per client.
 *
 * @module
 */
import { type Backend, type Pool, poolKey, type Service } from "../config/schema.ts";
import { type BackendView, nextBackend } from "../balance/select.ts";
import { countersOf, type Plane, type SessionBase } from "./plane.ts";

/** Views of a pool's backends for selection: health, admin state, live count. */
function views<S extends SessionBase>(
  plane: Plane<S>,
  backends: readonly Backend[],
): BackendView[] {
  const { health, admin } = plane.runtime;
  return backends.map((backend) => ({
    backend,
    health: health.get(backend.id),
    admin: admin.get(backend.id),
    active: countersOf(plane, backend.id).active,
  }));
}

/** Each service's routes by name with their balancers' keys (services are frozen, one object per snapshot): no search per client. */
const routePools = new WeakMap<Service, Map<string, { pool: Pool; key: string }>>();

function routesOf(service: Service): Map<string, { pool: Pool; key: string }> {
  let pools = routePools.get(service);
  if (!pools) {
    pools = new Map(service.routes.map((r) => [r.name, { pool: r, key: poolKey(service, r) }]));
    routePools.set(service, pools);
  }
  return pools;
}

/**
 * The next backend to dial for a client (of `route`, when its service has
 * routes), or null when the policy has none left or `tried` reached
 * `max_failover_attempts`. The backend counts the client as active from
 * now, so concurrent picks see it: the caller undoes that with
 * {@link dialFailed}, or when the relay ends.
 */
export function pick<S extends SessionBase>(
  plane: Plane<S>,
  service: Service,
  route: string | null,
  tried: Set<string>,
  client: string,
): Backend | null {
  const routed = route === null ? null : routesOf(service).get(route);
  // A reload may have removed the route the client was given.
  if (routed === undefined) return null;
  const balancer = plane.runtime.balancers.get(routed ? routed.key : service.name)?.balancer;
  if (!balancer || tried.size >= service.runtime.max_failover_attempts) return null;
  const backend = nextBackend(
    views(plane, (routed?.pool ?? service).backends),
    tried,
    balancer,
    { client, random: Math.random },
    Date.now(),
    service.runtime.slow_start_ms,
  );
  if (!backend) return null;
  tried.add(backend.id);
  countersOf(plane, backend.id).active++;
  return backend;
}
