/**
 * Which backend a new connection goes to. Pure: no sockets, no clock.
 *
 * @module
 */

/** Round-robin position, shared by every connection of one process. */
export interface RoundRobin {
  /** How many choices have been made; the next one starts at this turn. */
  turn: number;
}

/** A fresh round-robin position. */
export function roundRobin(): RoundRobin {
  return { turn: 0 };
}

/**
 * The order in which one client tries backends: the healthy ones in
 * round-robin order starting at this turn, then the unhealthy ones as a last
 * resort, so a client is refused only when every backend failed it. Each
 * backend appears once. Advances the turn.
 */
export function tryOrder<T>(
  rr: RoundRobin,
  backends: readonly T[],
  isHealthy: (b: T) => boolean,
): T[] {
  const healthy: T[] = [];
  const unhealthy: T[] = [];
  for (const b of backends) (isHealthy(b) ? healthy : unhealthy).push(b);
  const turn = rr.turn++;
  return [...rotate(healthy, turn), ...rotate(unhealthy, turn)];
}

function rotate<T>(items: T[], by: number): T[] {
  if (items.length < 2) return items;
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}
