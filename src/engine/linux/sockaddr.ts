/**
 * Socket addresses as the kernel reads and writes them (`sockaddr_in`,
 * `sockaddr_in6`), to and from the text forms the rest of bal uses. Pure:
 * no system calls.
 *
 * @module
 */

const AF_INET = 2;
const AF_INET6 = 10;

import { ipText, ipv4Bytes, ipv6Bytes } from "../../net/address.ts";

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
    return { hostname: ipText(addr.subarray(8, 24)), port };
  }
  return null;
}
