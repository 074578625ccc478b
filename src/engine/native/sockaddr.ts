/**
 * Socket addresses as the kernel reads and writes them (`sockaddr_in`,
 * `sockaddr_in6`), to and from the text forms the rest of bal uses. Pure:
 * no system calls.
 *
 * @module
 */

const AF_INET = 2;
const AF_INET6 = 10;
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** An address and port as text, as Deno.NetAddr has them. */
export interface HostPort {
  hostname: string;
  port: number;
}

/** Whether `host` is an IP literal (as opposed to a name to resolve). */
export function isIpLiteral(host: string): boolean {
  return IPV4.test(host) || host.includes(":");
}

function ipv4Bytes(host: string): number[] | null {
  const m = IPV4.exec(host);
  if (!m) return null;
  const bytes = m.slice(1).map(Number);
  return bytes.every((b) => b <= 255) ? bytes : null;
}

/** The 16 bytes of an IPv6 literal (`::`, embedded IPv4 and brackets allowed), or null. */
export function ipv6Bytes(text: string): Uint8Array | null {
  const host = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const halves = host.split("::");
  if (halves.length > 2 || host.length > 45) return null;
  const groups = (part: string): number[] | null => {
    if (part === "") return [];
    const out: number[] = [];
    const pieces = part.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const p = pieces[i];
      if (i === pieces.length - 1 && p.includes(".")) {
        const v4 = ipv4Bytes(p);
        if (!v4) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(p)) {
        out.push(parseInt(p, 16));
      } else {
        return null;
      }
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const all = [...head, ...new Array(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[i * 2] = g >> 8;
    bytes[i * 2 + 1] = g & 0xff;
  });
  return bytes;
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
