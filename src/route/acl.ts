/**
 * Who may connect to a service: `allow` and `deny` lists of CIDR blocks
 * over the client's address. Deny wins; without an allow list everyone not
 * denied may connect. Pure: addresses in, a verdict out.
 *
 * @module
 */
import { ipv4Bytes, ipv6Bytes } from "../net/address.ts";

/** An address block: the first `prefix` bits of `bytes`. */
export interface Cidr {
  /** Plain numbers, not a typed array: configs are frozen and cross to worker threads. */
  readonly bytes: readonly number[];
  readonly prefix: number;
  /** As written in the config, for messages. */
  readonly text: string;
}

/** A service's allow and deny lists. */
export interface Acl {
  /** Null: no allow list, so everyone not denied. */
  readonly allow: readonly Cidr[] | null;
  readonly deny: readonly Cidr[];
}

/** The bytes of an IPv4 or IPv6 address; an IPv4-mapped IPv6 address is its IPv4 address. */
export function addressBytes(address: string): Uint8Array | null {
  const v4 = ipv4Bytes(address);
  if (v4) return new Uint8Array(v4);
  const v6 = ipv6Bytes(address);
  if (!v6) return null;
  // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d.
  const mapped = v6.subarray(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff;
  return mapped ? v6.slice(12) : v6;
}

/**
 * Parses `ADDRESS/PREFIX` or a bare address (the whole address); returns
 * the block, or why it is not one.
 */
export function parseCidr(text: string): Cidr | string {
  const [address, prefixText, extra] = text.split("/");
  const bytes = addressBytes(address);
  if (!bytes || extra !== undefined) return "is not an IPv4 or IPv6 address or CIDR block";
  const bits = bytes.length * 8;
  if (prefixText === undefined) return { bytes: [...bytes], prefix: bits, text };
  const prefix = /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= bits)) return `has a prefix length outside 0-${bits}`;
  return { bytes: [...bytes], prefix, text };
}

/** Whether `ip` (from {@link addressBytes}) lies in `cidr`. */
export function contains(cidr: Cidr, ip: Uint8Array): boolean {
  if (ip.length !== cidr.bytes.length) return false;
  const whole = cidr.prefix >> 3;
  for (let i = 0; i < whole; i++) if (ip[i] !== cidr.bytes[i]) return false;
  const rest = cidr.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (ip[whole] & mask) === (cidr.bytes[whole] & mask);
}

/** Whether a client at `address` may connect. An address that cannot be read is refused. */
export function aclAllows(acl: Acl, address: string): boolean {
  if (acl.allow === null && acl.deny.length === 0) return true;
  const ip = addressBytes(address);
  if (!ip) return false;
  if (acl.deny.some((c) => contains(c, ip))) return false;
  return acl.allow === null || acl.allow.some((c) => contains(c, ip));
}

/** The ACL of a service without allow or deny lists. */
export const OPEN_ACL: Acl = Object.freeze({ allow: null, deny: Object.freeze([]) });
