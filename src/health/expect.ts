/**
 * The pure parts of a send/expect check: matching an expect step against
 * the bytes received so far, and showing what was received in a message.
 *
 * @module
 */
import type { CheckStep } from "../config/mod.ts";

/** Most bytes a check keeps of what it receives. */
export const RECEIVE_LIMIT = 64 * 1024;
/** Most characters of received bytes a failure message shows. */
const SHOWN = 80;

/** Bytes as a binary string (one char per byte), so text and byte patterns match alike. */
export function binary(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return s;
}

/** Hex as a binary string. */
function hexToBinary(hex: string): string {
  let s = "";
  for (let i = 0; i < hex.length; i += 2) {
    s += String.fromCharCode(parseInt(hex.slice(i, i + 2), 16));
  }
  return s;
}

/**
 * Where an expect step's match ends in `received` (a binary string), or
 * null when it does not match yet.
 */
export function matchEnd(
  step: Extract<CheckStep, { kind: "expect" }>,
  received: string,
): number | null {
  if (step.match === "regex") {
    const m = new RegExp(step.value).exec(received);
    return m ? m.index + m[0].length : null;
  }
  const wanted = hexToBinary(step.value);
  const at = received.indexOf(wanted);
  return at < 0 ? null : at + wanted.length;
}

/** Received bytes as a short printable quote: escapes for control bytes, cut at 80 characters. */
export function printable(received: string): string {
  const shown = received.slice(0, SHOWN).replace(/[^\x20-\x7e]/g, (c) => {
    const code = c.charCodeAt(0);
    return code === 13
      ? "\\r"
      : code === 10
      ? "\\n"
      : code === 9
      ? "\\t"
      : `\\x${code.toString(16).padStart(2, "0")}`;
  });
  return `"${shown}"${received.length > SHOWN ? `… (${received.length} bytes)` : ""}`;
}

/** Hex of a send step as bytes. */
export function sendBytes(step: Extract<CheckStep, { kind: "send" }>): Uint8Array {
  return new Uint8Array(step.hex.match(/../g)?.map((h) => parseInt(h, 16)) ?? []);
}
