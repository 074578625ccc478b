/**
 * Host names resolved the way the system does, through libc's getaddrinfo:
 * the other half of the unsafe code beside ffi.ts, reading the list libc
 * returns by copying each entry (every length checked) before freeing it.
 *
 * @module
 */
import { C, copyFrom, libc, SOCKADDR_MAX } from "./ffi.ts";
import { SOCK_STREAM } from "../../net/linux.ts";

/** struct addrinfo on 64-bit Linux: ai_family at 4, ai_addrlen at 16, ai_addr at 24, ai_next at 40. */
const AI = { family: 4, addrlen: 16, addr: 24, next: 40, size: 48, socktype: 8 };

/**
 * Resolves a host name the way the system does (/etc/hosts, then DNS, as
 * nsswitch says), on a helper thread. Resolves to encoded socket addresses
 * without a port, or rejects with the resolver's reason.
 */
export async function resolve(host: string): Promise<Uint8Array[]> {
  const q = lookupQuery(host);
  return lookupResult(host, await libc().getaddrinfo_async(q.name, null, q.hints, q.result), q);
}

/** {@link resolve} on this thread, blocking it: for the few names a reload listens on. */
export function resolveSync(host: string): Uint8Array[] {
  const q = lookupQuery(host);
  return lookupResult(host, libc().getaddrinfo(q.name, null, q.hints, q.result), q);
}

interface LookupQuery {
  name: Uint8Array;
  hints: Uint8Array;
  result: Uint8Array;
}

function lookupQuery(host: string): LookupQuery {
  const hints = new Uint8Array(AI.size);
  new DataView(hints.buffer).setInt32(AI.socktype, SOCK_STREAM, true);
  return { name: new TextEncoder().encode(host + "\0"), hints, result: new Uint8Array(8) };
}

/** Copies the addresses out of getaddrinfo's list and frees it. */
function lookupResult(host: string, code: number, q: LookupQuery): Uint8Array[] {
  if (code !== 0) throw new Error(`cannot resolve ${host} (getaddrinfo error ${code})`);
  const first = new DataView(q.result.buffer).getBigUint64(0, true);
  const entry = new Uint8Array(AI.size);
  const view = new DataView(entry.buffer);
  const found: Uint8Array[] = [];
  try {
    for (let p = first; p !== 0n && found.length < 64;) {
      copyFrom(p, entry, AI.size);
      const family = view.getInt32(AI.family, true);
      const len = view.getUint32(AI.addrlen, true);
      const addr = view.getBigUint64(AI.addr, true);
      if ((family === C.AF_INET || family === C.AF_INET6) && addr && len <= SOCKADDR_MAX) {
        const bytes = new Uint8Array(len);
        copyFrom(addr, bytes, len);
        found.push(bytes);
      }
      p = view.getBigUint64(AI.next, true);
    }
  } finally {
    if (first) libc().freeaddrinfo(first);
  }
  return found;
}
