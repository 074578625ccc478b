/**
 * Backend addresses for the native engine, which connects to IPs only:
 * literals are encoded once, names are resolved the way the system does
 * (getaddrinfo, on a helper thread) when a config is applied, and used as
 * resolved until the next one, as HAProxy and nginx do without a resolver
 * section. A name looked up for the first time makes its first clients wait
 * for the answer.
 *
 * @module
 */
import type { Backend, Config } from "../../config/schema.ts";
import { allBackends } from "../../config/schema.ts";
import { resolve } from "./getaddrinfo.ts";
import { encodeAddress, isIpLiteral, withPort } from "./sockaddr.ts";

/** A name's lookup: under way, done, or failed with a reason. */
type Lookup = Promise<void> | Uint8Array[] | string;

/** The backends' socket addresses. */
export interface AddressBook {
  /**
   * The address to dial: bytes when known, a promise while the name is
   * looked up, a reason when it cannot be resolved.
   */
  of(backend: Backend): Uint8Array | Promise<void> | string;
  /** Looks up every name in `config` again (in the background). */
  refresh(config: Config): void;
}

/** An empty address book. */
export function addressBook(): AddressBook {
  const literal = new Map<string, Uint8Array>();
  const names = new Map<string, Lookup>();
  const lookup = (host: string): Promise<void> => {
    const running = resolve(host).then(
      (found) => void names.set(host, found.length > 0 ? found : `${host} has no address`),
      (err) => void names.set(host, err instanceof Error ? err.message : String(err)),
    );
    names.set(host, running);
    return running;
  };
  return {
    of(backend) {
      let bytes = literal.get(backend.address);
      if (bytes) return bytes;
      if (isIpLiteral(backend.host)) {
        literal.set(backend.address, bytes = encodeAddress(backend.host, backend.port));
        return bytes;
      }
      const known = names.get(backend.host) ?? lookup(backend.host);
      if (Array.isArray(known)) return withPort(known[0], backend.port);
      return known;
    },
    refresh(config) {
      for (const b of allBackends(config)) {
        // An old answer stays in use until the new one arrives.
        if (!isIpLiteral(b.host) && !(names.get(b.host) instanceof Promise)) {
          const previous = names.get(b.host);
          lookup(b.host).then(() => {
            if (typeof names.get(b.host) === "string" && Array.isArray(previous)) {
              names.set(b.host, previous);
            }
          });
        }
      }
    },
  };
}
