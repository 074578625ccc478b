/**
 * Host and address forms shared by the config, the logs and the engines.
 *
 * @module
 */

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const HOSTNAME =
  /^(?=.{1,253}\.?$)[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?(\.[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?)*\.?$/;

/**
 * Returns the canonical form of an IPv4, IPv6 (brackets optional) or
 * hostname, or undefined when it is none of them.
 */
export function normalizeHost(host: string): string | undefined {
  const v4 = IPV4.exec(host);
  if (v4) return v4.slice(1).every((o) => Number(o) <= 255) ? host : undefined;
  if (host.includes(":")) {
    const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
    try {
      return new URL(`http://[${bare}]/`).hostname.slice(1, -1);
    } catch {
      return undefined;
    }
  }
  return HOSTNAME.test(host) && !/^[\d.]+$/.test(host) ? host.toLowerCase() : undefined;
}

/** The 4 bytes of an IPv4 literal, or null. */
export function ipv4Bytes(host: string): number[] | null {
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

/**
 * An address's bytes as text: IPv4 dotted, IPv6 in RFC 5952 form (the
 * longest run of zero groups as "::"), an IPv4-mapped IPv6 address ending
 * in dotted IPv4, as Deno writes it.
 */
export function ipText(b: Uint8Array): string {
  if (b.length === 4) return b.join(".");
  const g = Array.from({ length: 8 }, (_, i) => (b[i * 2] << 8) | b[i * 2 + 1]);
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
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

/** `host:port`, with brackets around IPv6 literals. */
export function formatAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost\.?)$/;

/** Whether `host` names this machine's loopback interface only. */
export function isLoopback(host: string): boolean {
  return LOOPBACK.test(host);
}

/** Whether `host` is a wildcard address that listens on every interface. */
export function isWildcard(host: string): boolean {
  return host === "0.0.0.0" || host === "::";
}

/**
 * Whether two listeners on these hosts and ports would collide: the same
 * port on the same host, or on a wildcard that covers the other (Linux
 * refuses `127.0.0.1:P` while `0.0.0.0:P` is bound, and `::` covers IPv4 too).
 */
export function listenersOverlap(
  a: { bind_address: string; port: number },
  b: { bind_address: string; port: number },
): boolean {
  if (a.port !== b.port) return false;
  return a.bind_address === b.bind_address || isWildcard(a.bind_address) ||
    isWildcard(b.bind_address);
}

/**
 * Whether a connection to `host:port` certainly lands on a listener of
 * `bind_address:port` on this machine: the same address, or loopback when
 * the listener takes every interface or `localhost`. Names other than
 * localhost are not resolved here (the engines catch such loops when they
 * happen).
 */
export function reachesListener(
  backend: { host: string; port: number },
  listener: { bind_address: string; port: number },
): boolean {
  if (backend.port !== listener.port) return false;
  const { host } = backend;
  const bind = listener.bind_address;
  const isLocalhost = (h: string) => h.startsWith("localhost");
  return host === bind ||
    (isLoopback(host) &&
      (isWildcard(bind) || isLocalhost(bind) || (isLocalhost(host) && isLoopback(bind))));
}

/** `HOST:PORT` as a key that two spellings of one address share, or null when it is not one. */
export function addressKey(address: string): string | null {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(address.trim());
  const host = m ? normalizeHost(m[1]) : undefined;
  return host ? `${host}|${Number(m![2])}` : null;
}
