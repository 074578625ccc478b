/**
 * `source_hash`: a client IP keeps its backend. Weighted rendezvous
 * (highest random weight) hashing: every backend scores the client as
 * `weight / -ln(u)`, u a hash of client and backend in (0, 1), and the
 * highest score wins.
 *
 * Rendezvous rather than Maglev: removing one of N backends moves only the
 * clients it had (about 1/N) and keeps every other client where it was,
 * weights come free, and the runner-up is the consistent failover target
 * when the winner is down. It costs O(N) per connection with no table to
 * rebuild on a change, which for the tens of backends a service has is
 * cheaper than Maglev's table of thousands of slots per reload.
 *
 * @module
 */
import type { Balancer, Candidate } from "./balancer.ts";

/** A source-hash balancer; stateless. */
export function sourceHash(): Balancer {
  return {
    pick(candidates, ctx) {
      const client = fnv1a(ctx.client);
      let best: Candidate = candidates[0];
      let bestScore = -Infinity;
      for (const c of candidates) {
        const score = c.weight / -Math.log(unit(mix(client ^ fnv1a(c.backend.address))));
        if (score > bestScore) [best, bestScore] = [c, score];
      }
      return best;
    },
  };
}

/** FNV-1a, 32 bits, over the UTF-16 code units (addresses are ASCII). */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** MurmurHash3's finalizer: spreads every input bit over the output. */
function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A 32-bit hash as a number strictly between 0 and 1. */
function unit(h: number): number {
  return (h + 0.5) / 4294967296;
}
