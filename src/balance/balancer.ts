/**
 * The interface every balancing method implements, and the registry of
 * methods by their config name. A balancer only chooses among candidates
 * it is given: which backends may take a client at all (health, admin
 * state, limits, backups) is decided before, in `select.ts`.
 *
 * @module
 */
import type { Backend, Method } from "../config/mod.ts";
import { roundRobin } from "./round_robin.ts";
import { leastConnections } from "./least_connections.ts";
import { sourceHash } from "./source_hash.ts";
import { randomTwo } from "./random_two.ts";

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

/** Every method by its config name. */
export const BALANCERS: { readonly [M in Method]: () => Balancer } = {
  round_robin: roundRobin,
  least_connections: leastConnections,
  source_hash: sourceHash,
  random_two: randomTwo,
};

/** A fresh balancer for `method`. */
export function createBalancer(method: Method): Balancer {
  return BALANCERS[method]();
}
