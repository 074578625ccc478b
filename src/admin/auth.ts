/**
 * Who an admin request comes from: the bearer token it carries, matched in
 * constant time against `admin.token` (full rights, named `admin`) and
 * every one of `admin.tokens`. Pure.
 *
 * @module
 */
import type { AdminSettings, TokenRole } from "../config/schema.ts";

/** The caller a token names. */
export interface Caller {
  /** Logged with each change it makes. */
  name: string;
  role: TokenRole;
}

/** Without any token configured, a loopback caller may read but not change anything. */
export const ANONYMOUS: Caller = { name: "anonymous", role: "read" };

const encoder = new TextEncoder();

/**
 * Whether two secrets are equal, taking the same time wherever they differ:
 * every byte of `known` is compared whatever `given` holds, so neither the
 * position of a first difference nor a length mismatch shortens the work.
 */
export function sameSecret(given: string, known: string): boolean {
  const a = encoder.encode(given), b = encoder.encode(known);
  let diff = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) diff |= (a[i % Math.max(a.length, 1)] ?? 0) ^ b[i];
  return diff === 0;
}

/** The bearer credential of an `Authorization` header (the scheme's case does not matter), or null. */
export function bearerOf(header: string | null): string | null {
  const m = header === null ? null : /^bearer[ ]+(\S+)\s*$/i.exec(header);
  return m ? m[1] : null;
}

/**
 * The caller `header` identifies: null when a token is required and none
 * matches (401). Every configured token is compared, so the time taken
 * does not say which one nearly matched.
 */
export function callerOf(header: string | null, settings: AdminSettings): Caller | null {
  const known = [
    ...(settings.token === null
      ? []
      : [{ name: "admin", token: settings.token, role: "write" as const }]),
    ...settings.tokens,
  ];
  if (known.length === 0) return ANONYMOUS;
  const given = bearerOf(header) ?? "";
  let found: Caller | null = null;
  for (const t of known) {
    if (sameSecret(given, t.token) && found === null) found = { name: t.name, role: t.role };
  }
  return found;
}
