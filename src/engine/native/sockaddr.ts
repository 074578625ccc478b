/**
 * Socket addresses as the kernel reads and writes them (`sockaddr_in`,
 * `sockaddr_in6`), to and from the text forms the rest of bal uses. Pure:
 * no system calls.
 *
 * @module
 */

const AF_INET = 2;
const AF_INET6 = 10;

import { ipv4Bytes, ipv6Bytes } from "../../config/address.ts";

/** An address and port as text, as Deno.NetAddr has them. */
export interface HostPort {
  hostname: string;
  port: number;
}

/** Whether `host` is an IP literal (as opposed to a name to resolve). */
export function isIpLiteral(host: string): boolean {
  return ipv4Bytes(host) !== null || host.includes(":");
}

/** Encodes an IP literal and port as a socket address; throws a RangeError for anything else. */
export function encodeAddress(host: string, port: number): Uint8Array {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`bad port ${port}`);
  }
  const v4 = ipv4Bytes(host);
  if (v4) {
    const out = new Uint8Array(16);
    new DataView(out.buffer).setUint16(0, AF_INET, true);
    new DataView(out.buffer).setUint16(2, port, false);
    out.set(v4, 4);
    return out;
  }
  const v6 = ipv6Bytes(host);
  if (!v6) throw new RangeError(`${host} is not an IP address`);
  const out = new Uint8Array(28);
  new DataView(out.buffer).setUint16(0, AF_INET6, true);
  new DataView(out.buffer).setUint16(2, port, false);
  out.set(v6, 8);
  return out;
}

/** The address family of an encoded socket address. */
export function familyOf(addr: Uint8Array): number {
  return new DataView(addr.buffer, addr.byteOffset, addr.byteLength).getUint16(0, true);
}

/** A copy of an encoded socket address (from the resolver, port 0) with another port. */
export function withPort(addr: Uint8Array, port: number): Uint8Array {
  const out = addr.slice();
  new DataView(out.buffer).setUint16(2, port, false);
  return out;
}

/** IPv6 text in RFC 5952 form; IPv4-mapped addresses end in dotted IPv4, as Deno writes them. */
function ipv6Text(b: Uint8Array): string {
  const g = Array.from({ length: 8 }, (_, i) => (b[i * 2] << 8) | b[i * 2 + 1]);
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  // The longest run of two or more zero groups becomes "::".
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** Decodes a socket address the kernel wrote; null for a family other than IPv4/IPv6. */
export function decodeAddress(addr: Uint8Array): HostPort | null {
  if (addr.byteLength < 16) return null;
  const view = new DataView(addr.buffer, addr.byteOffset, addr.byteLength);
  const family = view.getUint16(0, true);
  const port = view.getUint16(2, false);
  if (family === AF_INET) {
    return { hostname: `${addr[4]}.${addr[5]}.${addr[6]}.${addr[7]}`, port };
  }
  if (family === AF_INET6 && addr.byteLength >= 24) {
    return { hostname: ipv6Text(addr.subarray(8, 24)), port };
  }
  return null;
}
