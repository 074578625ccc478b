/**
 * `least_connections`: the candidate with the fewest live connections per
 * unit of weight; among equals, the next in turn, so idle backends share
 * sequential clients evenly. Counts are per data plane (each worker sees
 * its own connections), as each HAProxy thread group does.
 *
 * @module
 */
import type { Balancer, Candidate } from "./balancer.ts";

/** A least-connections balancer with its tie-breaking turn. */
export function leastConnections(): Balancer {
  let turn = 0;
  return {
    pick(candidates) {
      let least = Infinity;
      const tied: Candidate[] = [];
      for (const c of candidates) {
        const load = c.active / c.weight;
        if (load > least) continue;
        if (load < least) [least, tied.length] = [load, 0];
        tied.push(c);
      }
      return tied[turn++ % tied.length];
    },
  };
}
