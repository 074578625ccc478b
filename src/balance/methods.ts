/**
 * Every balancing method by its config name: one module each, registered
 * here (a new method is one file exporting a {@link Balancer} factory, and
 * a line below).
 *
 * @module
 */
import type { Method } from "../config/schema.ts";
import type { Balancer } from "./balancer.ts";
import { roundRobin } from "./round_robin.ts";
import { leastConnections } from "./least_connections.ts";
import { sourceHash } from "./source_hash.ts";
import { randomTwo } from "./random_two.ts";

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
