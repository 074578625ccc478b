/**
 * `random_two`: the power of two random choices. Two distinct candidates
 * are drawn at random in proportion to their weights, and the one with
 * fewer live connections per unit of weight wins (the first drawn on a
 * tie). Nearly as even as least connections, without every data plane
 * herding onto the same idle backend.
 *
 * @module
 */
import type { Balancer, Candidate } from "./balancer.ts";

/** A random-two-choices balancer; stateless apart from the random source. */
export function randomTwo(): Balancer {
  return {
    pick(candidates, ctx) {
      if (candidates.length === 1) return candidates[0];
      const first = draw(candidates, null, ctx.random());
      const second = draw(candidates, first, ctx.random());
      return second.active / second.weight < first.active / first.weight ? second : first;
    },
  };
}

/** A candidate drawn by weight, leaving out `skip`; `r` is uniform in [0, 1). */
function draw(candidates: readonly Candidate[], skip: Candidate | null, r: number): Candidate {
  let total = 0;
  for (const c of candidates) if (c !== skip) total += c.weight;
  let point = r * total;
  let last = candidates[0];
  for (const c of candidates) {
    if (c === skip) continue;
    last = c;
    point -= c.weight;
    if (point < 0) return c;
  }
  return last;
}
