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
