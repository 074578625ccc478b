/**
 * The interface every balancing method implements (methods.ts has them by
 * their config name). A balancer only chooses among candidates
 * it is given: which backends may take a client at all (health, admin
 * state, limits, backups) is decided before, in `select.ts`.
 *
 * @module
 */
import type { Backend } from "../config/mod.ts";

/** A backend that may take the client, with what the methods weigh. */
export interface Candidate {
  readonly backend: Backend;
  /** The weight in force (an operator's override, else the config's); above 0. */
  readonly weight: number;
  /** Live connections to it on this data plane. */
  readonly active: number;
}

/** What a pick may depend on besides the candidates. */
export interface PickContext {
  /** The client's IP address (the PROXY protocol's, once that exists). */
  readonly client: string;
  /** Uniform in [0, 1); `Math.random` in the engines, seeded in tests. */
  readonly random: () => number;
}

/** One service's balancing method and whatever state it keeps between picks. */
export interface Balancer {
  /** Chooses one of `candidates` (never empty). */
  pick(candidates: readonly Candidate[], ctx: PickContext): Candidate;
}
