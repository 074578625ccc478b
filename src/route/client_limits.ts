/**
 * Per-client limits of a service on one data plane, by client address:
 * `max_connections_per_client` (connections open at once) and
 * `connection_rate_per_client` (new connections per second, a token
 * bucket holding one second's worth). Pure: time is passed in.
 *
 * @module
 */

/** The limits in force; 0 turns one off. */
export interface ClientLimits {
  maxConnections: number;
  ratePerSecond: number;
}

/** One service's clients on one data plane. */
export interface ClientTable {
  /** Open connections by client address (counted while the connection limit is on). */
  readonly active: Map<string, number>;
  /** Tokens by client address (only while the rate limit is on). */
  readonly buckets: Map<string, { tokens: number; at: number }>;
}

/** Why a client was refused. */
export type ClientRefusal = "client_limit" | "client_rate";

/** An empty table. */
export function clientTable(): ClientTable {
  return { active: new Map(), buckets: new Map() };
}

/**
 * Why a new connection from `client` at `now` (epoch ms) may not go on, or
 * null when it may: then it has used one of the client's rate tokens, and
 * the caller counts it open with {@link countClient}.
 */
export function checkClient(
  table: ClientTable,
  client: string,
  limits: ClientLimits,
  now: number,
): ClientRefusal | null {
  if (limits.maxConnections > 0 && (table.active.get(client) ?? 0) >= limits.maxConnections) {
    return "client_limit";
  }
  if (limits.ratePerSecond > 0 && !takeToken(table, client, limits.ratePerSecond, now)) {
    return "client_rate";
  }
  return null;
}

/** A connection of `client` is open (until {@link clientLeft}). */
export function countClient(table: ClientTable, client: string): void {
  table.active.set(client, (table.active.get(client) ?? 0) + 1);
}

function takeToken(table: ClientTable, client: string, rate: number, now: number): boolean {
  const bucket = table.buckets.get(client) ?? { tokens: rate, at: now };
  bucket.tokens = Math.min(rate, bucket.tokens + (now - bucket.at) * rate / 1000);
  bucket.at = now;
  table.buckets.set(client, bucket);
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}

/** A counted connection of `client` ended. */
export function clientLeft(table: ClientTable, client: string): void {
  const open = (table.active.get(client) ?? 1) - 1;
  if (open > 0) table.active.set(client, open);
  else table.active.delete(client);
}

/**
 * Forgets buckets that have refilled (they hold nothing a new bucket would
 * not), so a table's memory follows the clients of the last second, not
 * every client ever seen.
 */
export function pruneBuckets(table: ClientTable, ratePerSecond: number, now: number): void {
  for (const [client, bucket] of table.buckets) {
    if (
      ratePerSecond <= 0 ||
      bucket.tokens + (now - bucket.at) * ratePerSecond / 1000 >= ratePerSecond
    ) {
      table.buckets.delete(client);
    }
  }
}
