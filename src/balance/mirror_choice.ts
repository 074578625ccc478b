/**
 * Which client connections a service's `mirror:` copies: `percent` of
 * them, decided once per connection. With `source_hash` the choice
 * follows the client's IP (the same clients are mirrored every time, as
 * they reach the same backend); otherwise each connection draws.
 *
 * @module
 */
import type { Method, Mirror } from "../config/schema.ts";
import { fnv1a } from "./source_hash.ts";

/** True when a connection from `clientIp` is copied to `mirror`; `draw` is uniform in [0, 1). */
export function mirrored(
  mirror: Mirror | null,
  method: Method,
  clientIp: string,
  draw: () => number,
): boolean {
  if (!mirror || mirror.percent === 0) return false;
  if (mirror.percent === 100) return true;
  const slot = method === "source_hash" ? fnv1a(clientIp) % 100 : Math.floor(draw() * 100);
  return slot < mirror.percent;
}
