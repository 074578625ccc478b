/**
 * Bytes written in a config as text with escapes or as hex, and the
 * send/expect steps made of them: what `send_expect` and `udp` checks share.
 *
 * @module
 */
import { isScalar } from "./yaml.ts";
import { quote } from "../text.ts";
import { describeNode, type Field, type Report } from "./fields.ts";
import type { CheckStep } from "./schema.ts";

/** A string value, or undefined (reported) when the node is not text. */
export function text(field: Field, path: string, at: Report): string | undefined {
  const v = isScalar(field.value) ? field.value.value : undefined;
  if (typeof v === "string" || typeof v === "number") return String(v);
  at(field.value ?? field.key, path, `expected text, got ${describeNode(field.value)}`);
  return undefined;
}

/** One step from its key and text, or null (reported through `fail`). */
export function stepOf(key: string, raw: string, fail: (reason: string) => void): CheckStep | null {
  const label = quote(raw);
  const bytes = key.endsWith("_hex") ? fromHex(raw) : unescape(raw);
  if (key === "expect_regex") {
    try {
      new RegExp(raw);
    } catch (err) {
      fail(`not a valid regex: ${err instanceof Error ? err.message : err}`);
      return null;
    }
    return { kind: "expect", match: "regex", value: raw, label };
  }
  if (typeof bytes === "string") {
    fail(bytes);
    return null;
  }
  const hex = toHex(bytes);
  if (key.startsWith("send")) return { kind: "send", hex, label };
  return { kind: "expect", match: key === "expect_hex" ? "hex" : "string", value: hex, label };
}

/** `\r \n \t \0 \\ \xHH` decoded; other text as UTF-8. A message when an escape is bad. */
export function unescape(text: string): Uint8Array | string {
  const out: number[] = [];
  const utf8 = new TextEncoder();
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c !== "\\") {
      out.push(...utf8.encode(c));
      continue;
    }
    const next = text[++i];
    const simple: Record<string, number> = { r: 13, n: 10, t: 9, "0": 0, "\\": 92 };
    if (next in simple) out.push(simple[next]);
    else if (next === "x" && /^[0-9a-fA-F]{2}$/.test(text.slice(i + 1, i + 3))) {
      out.push(parseInt(text.slice(i + 1, i + 3), 16));
      i += 2;
    } else return `unknown escape \\${next ?? ""}; use \\r, \\n, \\t, \\0, \\\\ or \\xHH`;
  }
  return new Uint8Array(out);
}

/** Bytes from hex (spaces allowed), or a message. */
export function fromHex(text: string): Uint8Array | string {
  const clean = text.replace(/\s+/g, "");
  if (!/^([0-9a-fA-F]{2})+$/.test(clean)) return `${quote(text)} is not hex bytes, e.g. "0d0a"`;
  return new Uint8Array(clean.match(/../g)!.map((h) => parseInt(h, 16)));
}

/** Lower-case hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}
