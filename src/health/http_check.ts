/**
 * The pure parts of an `http` check: the request it sends and the verdict
 * on the response it reads.
 *
 * @module
 */
import type { HttpCheck } from "../config/mod.ts";
import { printable } from "./expect.ts";

/** The HTTP/1.1 request, closing the connection after the answer. */
export function httpRequest(check: HttpCheck, host: string): string {
  const lines = [
    `${check.method} ${check.path} HTTP/1.1`,
    `Host: ${check.host ?? host}`,
    "User-Agent: bal-health-check",
    "Connection: close",
    ...Object.entries(check.headers).map(([k, v]) => `${k}: ${v}`),
  ];
  return `${lines.join("\r\n")}\r\n\r\n`;
}

/** `200-399` or `200, 204` as written in messages. */
export function statusText(ranges: readonly (readonly [number, number])[]): string {
  return ranges.map(([a, b]) => a === b ? String(a) : `${a}-${b}`).join(", ");
}

/**
 * Judges a complete response (binary string, as read until the server
 * closed or the limit): null when it passes, else why it failed.
 */
export function httpVerdict(check: HttpCheck, response: string): string | null {
  const m = /^HTTP\/1\.[01] (\d{3})[^\r\n]*\r?\n/.exec(response);
  if (!m) return `not an HTTP response: got ${printable(response)}`;
  const status = Number(m[1]);
  if (!check.expect_status.some(([a, b]) => status >= a && status <= b)) {
    return `HTTP status ${status}, expected ${statusText(check.expect_status)}`;
  }
  if (check.expect_body !== null) {
    const split = response.indexOf("\r\n\r\n");
    const body = split < 0 ? "" : response.slice(split + 4);
    if (!new RegExp(check.expect_body).test(body)) {
      return `body does not match /${check.expect_body}/: got ${printable(body)}`;
    }
  }
  return null;
}
