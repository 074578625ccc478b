/**
 * Which backend a new client of a service tries next. Pure: health, admin
 * state and live counts come in as plain data, the clock as `now`.
 *
 * A backend may take a new client when it is enabled, has a weight above
 * 0 and is below its `max_connections`. Among those, the best tier is
 * tried first: healthy before unhealthy before cooling down (after a
 * failed connect), and within each, regular backends before backups. So a
 * backup takes clients only while no regular backend can, and a client is
 * refused only when every backend failed it. The service's balancer picks
 * within the tier.
 *
 * @module
 */
import type { Backend } from "../config/mod.ts";
import { type HealthState, isCooling } from "../health/state.ts";
import type { BackendAdmin } from "./admin_state.ts";
import { weightOf } from "./admin_state.ts";
import type { Balancer, Candidate, PickContext } from "./balancer.ts";

/** What selection needs to know of one backend. */
export interface BackendView {
  readonly backend: Backend;
  readonly health: HealthState | undefined;
  readonly admin: BackendAdmin | undefined;
  /** Live connections to it on this data plane. */
  readonly active: number;
}

/**
 * The tier of a backend for a new client at `now` (lower is tried first),
 * or null when it may not take one at all.
 */
export function tier(view: BackendView, now: number): number | null {
  const { backend, health, admin, active } = view;
  if (admin && admin.state !== "enabled") return null;
  if (health?.agent && health.agent.mode !== "ready") return null;
  if (weightOf(backend, admin) === 0 || health?.agent?.weight_percent === 0) return null;
  if (backend.max_connections !== null && active >= backend.max_connections) return null;
  const condition = !health ? 0 : isCooling(health, now) ? 4 : health.healthy ? 0 : 2;
  return condition + (backend.backup ? 1 : 0);
}

/** Where slow start begins: a backend back up gets this share of its weight at first. */
export const SLOW_START_FLOOR = 0.1;

/**
 * The weight a backend takes new clients with at `now`: the operator's or
 * the config's, times its agent's percentage, times slow start's ramp
 * (from 10 % to 100 % over `slowStartMs` after it came back up).
 */
export function effectiveWeight(view: BackendView, now: number, slowStartMs: number): number {
  const { health } = view;
  let weight = weightOf(view.backend, view.admin);
  if (health?.agent?.weight_percent != null) weight *= health.agent.weight_percent / 100;
  const since = health?.up_since;
  if (slowStartMs > 0 && since != null && now - since < slowStartMs) {
    weight *= SLOW_START_FLOOR + (1 - SLOW_START_FLOOR) * Math.max(0, now - since) / slowStartMs;
  }
  return weight;
}

/**
 * The next backend for a client that has already tried `tried` (ids), or
 * null when none is left to try.
 */
export function nextBackend(
  views: readonly BackendView[],
  tried: ReadonlySet<string>,
  balancer: Balancer,
  ctx: PickContext,
  now: number,
  slowStartMs = 0,
): Backend | null {
  let best = Infinity;
  let pool: Candidate[] = [];
  for (const view of views) {
    if (tried.has(view.backend.id)) continue;
    const t = tier(view, now);
    if (t === null || t > best) continue;
    if (t < best) [best, pool] = [t, []];
    pool.push({
      backend: view.backend,
      weight: effectiveWeight(view, now, slowStartMs),
      active: view.active,
    });
  }
  return pool.length === 0 ? null : balancer.pick(pool, ctx).backend;
}
