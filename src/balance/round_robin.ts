/**
 * `round_robin`: smooth weighted round robin, nginx's algorithm. Each pick
 * adds every candidate's weight to its running score, takes the highest
 * (the first on a tie) and lowers it by the total. Weights 5:1:1 give
 * a a b a c a a, not a a a a a b c; equal weights give plain rotation.
 *
 * @module
 */
import type { Balancer, Candidate } from "./balancer.ts";

/** A round-robin balancer with its scores. */
export function roundRobin(): Balancer {
  const scores = new Map<string, number>();
  return {
    pick(candidates) {
      let total = 0;
      let best: Candidate = candidates[0];
      let bestScore = -Infinity;
      for (const c of candidates) {
        const score = (scores.get(c.backend.id) ?? 0) + c.weight;
        scores.set(c.backend.id, score);
        total += c.weight;
        if (score > bestScore) [best, bestScore] = [c, score];
      }
      scores.set(best.backend.id, bestScore - total);
      return best;
    },
  };
}
