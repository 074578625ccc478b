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
 * The order in which one client tries backends: those of the best tier
 * first (tier 0: healthy; then 1, 2, ... as the caller ranks them, e.g.
 * unhealthy, cooling down), each tier in round-robin order starting at this
 * turn, so a client is refused only when every backend failed it. Each
 * backend appears once. Advances the turn.
 */
export function tryOrder<T>(
  rr: RoundRobin,
  backends: readonly T[],
  tier: (b: T) => number,
): T[] {
  const tiers: T[][] = [];
  for (const b of backends) (tiers[tier(b)] ??= []).push(b);
  const turn = rr.turn++;
  return tiers.flatMap((t) => rotate(t, turn));
}

function rotate<T>(items: T[], by: number): T[] {
  if (items.length < 2) return items;
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}
