/**
 * Reading typed values out of YAML nodes, each failure reported with the
 * node's position and key path. Shared by every part of the config schema.
 *
 * @module
 */
import { isMap, isPair, isScalar, isSeq, type Node } from "./yaml.ts";
import { quote } from "../text.ts";
import { normalizeHost } from "../net/address.ts";

/** Reports a problem at a node: the key path and what is wrong. */
export type Report = (node: Node | null | undefined, keyPath: string, reason: string) => void;

/** A present key: its key node (for "unknown key" positions) and value node. */
export interface Field {
  key: Node;
  value: Node | null;
}

/** Says where an unknown key probably belongs, or "" to fall back on did-you-mean. */
export type Misplaced = (name: string) => string;

/** Collects a mapping's known keys; reports unknown and non-string keys. */
export function mapFields(
  map: Node,
  prefix: string,
  known: readonly string[],
  at: Report,
  options: { ignore?: readonly string[]; misplaced?: Misplaced } = {},
): Map<string, Field> {
  const fields = new Map<string, Field>();
  if (!isMap(map)) return fields;
  for (const pair of map.items) {
    if (!isPair(pair)) continue;
    const keyNode = pair.key as Node;
    const name = isScalar(keyNode) ? String(keyNode.value) : undefined;
    const path = prefix ? `${prefix}.${name}` : String(name);
    if (name === undefined) {
      at(keyNode, prefix, "keys must be plain words");
    } else if (known.includes(name)) {
      fields.set(name, { key: keyNode, value: (pair.value as Node | null) ?? null });
    } else if (!options.ignore?.includes(name)) {
      const where = options.misplaced?.(name) ?? "";
      at(keyNode, path, `unknown key${where || didYouMean(name, known)}`);
    }
  }
  return fields;
}

function didYouMean(name: string, known: readonly string[]): string {
  const close = closest(name, known);
  if (close) return `; did you mean "${close}"?`;
  return `; expected one of: ${known.join(", ")}`;
}

/** The known word closest to `word`, when it is close enough to be a typo. */
export function closest(word: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  const lower = word.toLowerCase();
  for (const candidate of known) {
    if (lower.startsWith(candidate) || candidate.startsWith(lower)) return candidate;
    const d = editDistance(lower, candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost);
    }
    prev = row;
  }
  return prev[b.length];
}

/** Bounds of an integer field, and its value when the key is absent. */
export interface IntBounds {
  default: number;
  min: number;
  max: number;
}

/** An integer within bounds; the default when absent or wrong (and reported). */
export function intField(
  field: Field | undefined,
  path: string,
  rule: IntBounds,
  at: Report,
): number {
  if (!field) return rule.default;
  const value = isScalar(field.value) ? field.value.value : undefined;
  if (
    typeof value === "number" && Number.isInteger(value) && value >= rule.min && value <= rule.max
  ) {
    return value;
  }
  at(
    field.value ?? field.key,
    path,
    `expected an integer from ${rule.min} to ${rule.max}, got ${describeNode(field.value)}`,
  );
  return rule.default;
}

/** `true` or `false`; the fallback when absent or wrong (and reported). */
export function boolField(
  field: Field | undefined,
  path: string,
  fallback: boolean,
  at: Report,
): boolean {
  if (!field) return fallback;
  const value = isScalar(field.value) ? field.value.value : undefined;
  if (typeof value === "boolean") return value;
  at(field.value ?? field.key, path, `expected true or false, got ${describeNode(field.value)}`);
  return fallback;
}

/** One of `allowed`; the fallback when absent or wrong (reported with a did-you-mean). */
export function enumField<T extends string>(
  field: Field | undefined,
  path: string,
  allowed: readonly T[],
  fallback: T,
  at: Report,
): T {
  if (!field) return fallback;
  const value = isScalar(field.value) ? field.value.value : undefined;
  if (typeof value === "string" && (allowed as readonly string[]).includes(value)) {
    return value as T;
  }
  const close = typeof value === "string" ? closest(value, allowed) : undefined;
  const suggestion = close ? `; did you mean "${close}"?` : "";
  at(
    field.value ?? field.key,
    path,
    `expected one of ${allowed.map((a) => `"${a}"`).join(", ")}, got ${
      describeNode(field.value)
    }${suggestion}`,
  );
  return fallback;
}

/** Validates a host (IP literal or hostname) and returns it as Deno.connect takes it. */
export function hostField(field: Field, path: string, at: Report): string | undefined {
  const value = isScalar(field.value) ? field.value.value : undefined;
  if (typeof value !== "string" || value.trim() === "") {
    at(
      field.value ?? field.key,
      path,
      `expected an IP address or hostname, got ${describeNode(field.value)}`,
    );
    return undefined;
  }
  const host = normalizeHost(value.trim());
  if (host === undefined) {
    at(field.value, path, `${quote(value)} is not an IP address or hostname`);
  }
  return host;
}

/** How a value reads in an error message: `"abc"`, `42`, `a list`, `nothing`. */
export function describeNode(node: Node | null | undefined): string {
  if (node === null || node === undefined) return "nothing";
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return node.items.length === 0 ? "an empty list" : "a list";
  if (isScalar(node)) {
    const v = node.value;
    if (v === null) return "nothing";
    if (typeof v === "string") return `the text ${quote(v)}`;
    return String(v);
  }
  return "an unsupported value";
}

/** Whether a field is absent in effect: no key, or a key with nothing after it. */
export function isEmpty(field: Field | undefined): boolean {
  return !field || field.value === null || (isScalar(field.value) && field.value.value === null);
}
