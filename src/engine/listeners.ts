/**
 * One data plane's listening sockets, one per service, and their accept
 * loops. A reload's new set of listeners is applied all or nothing, and a
 * listener that moves opens its new socket before closing the old one.
 *
 * @module
 */
import { formatAddress, listenersOverlap } from "../config/mod.ts";
import { ListenError } from "../errors.ts";
import { episode, logger } from "../log.ts";

const log = logger("proxy");

/** Where a service wants to listen. */
export interface Wanted {
  bind_address: string;
  port: number;
  /** The backlog a new socket gets; an open one keeps its own. */
  backlog: number;
}

/** A service's open listener. */
interface Entry {
  listener: Deno.TcpListener;
  bound: Wanted;
  /** The accept loop; it ends once the listener is closed. */
  accepting: Promise<void>;
}

/** The listeners of one data plane. */
export interface ListenerSet {
  /**
   * Listens for exactly the services in `wanted`. Throws a ListenError and
   * changes nothing when a new socket cannot be opened. Returns the names
   * of the services it stopped listening for.
   */
  apply(wanted: ReadonlyMap<string, Wanted>): string[];
  /** `host:port` of each service's listener. */
  addresses(): Record<string, string>;
  /** The backlog a service's listener was opened with, or 0. */
  backlog(service: string): number;
  /** Closes every listener for good; resolves once every accept loop has ended. */
  closeAll(): Promise<void>;
}

/** How listeners are opened, and where accepted clients go. */
export interface ListenerOptions {
  reusePort: boolean;
  claimPort: boolean;
  accept(service: string, conn: Deno.TcpConn): void;
}

/** An empty listener set. */
export function listenerSet(options: ListenerOptions): ListenerSet {
  const entries = new Map<string, Entry>();
  const closing = new WeakSet<Deno.TcpListener>();
  const acceptFailing = episode();
  let stopped = false;

  async function acceptLoop(service: string, l: Deno.TcpListener): Promise<void> {
    for (;;) {
      let client: Deno.TcpConn;
      try {
        client = await l.accept();
      } catch (err) {
        if (closing.has(l)) return;
        // EMFILE and friends: back off instead of spinning, and keep serving.
        if (acceptFailing.fail()) {
          log.error("accept failed: {error}; retrying every 50 ms", {
            event: "accept_failed",
            service,
            error: String(err),
          });
        }
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      const failures = acceptFailing.recover();
      if (failures !== null) {
        log.info("accepting again after {failures} failed accepts", {
          event: "accept_recovered",
          failures,
        });
      }
      options.accept(service, client);
    }
  }

  function open(want: Wanted, claim: boolean): Deno.TcpListener {
    const { bind_address: hostname, port, backlog } = want;
    try {
      // A plain bind fails while any socket holds the port, SO_REUSEPORT or not.
      if (claim) Deno.listen({ hostname, port, transport: "tcp" }).close();
      return Deno.listen({
        hostname,
        port,
        transport: "tcp",
        reusePort: options.reusePort,
        tcpBacklog: backlog,
      });
    } catch (err) {
      throw new ListenError(
        `cannot listen on ${formatAddress(hostname, port)}: ${listenReason(err)}`,
      );
    }
  }

  function close(l: Deno.TcpListener): void {
    closing.add(l);
    try {
      l.close();
    } catch {
      // Already closed.
    }
  }

  const start = (service: string, listener: Deno.TcpListener, bound: Wanted): Entry => ({
    listener,
    bound,
    accepting: acceptLoop(service, listener),
  });

  /**
   * Opens what `wanted` needs beyond the open entries. A socket that fails
   * because one of ours that is going away holds the port (the same port on
   * an overlapping address) is retried once that one is closed.
   */
  function openAll(wanted: ReadonlyMap<string, Wanted>) {
    const opened = new Map<string, Deno.TcpListener>();
    const closedEarly: [string, Entry][] = [];
    const goingAway = [...entries].filter(([name, e]) => !sameAddress(wanted.get(name), e.bound));
    try {
      for (const [name, want] of wanted) {
        const current = entries.get(name);
        if (current && sameAddress(want, current.bound)) continue;
        const claim = options.reusePort && options.claimPort && current?.bound.port !== want.port;
        try {
          opened.set(name, open(want, claim));
        } catch (err) {
          const blocker = goingAway.find(([, e]) =>
            listenersOverlap(e.bound, want) && !closedEarly.some(([, c]) => c === e)
          );
          if (!blocker) throw err;
          close(blocker[1].listener);
          closedEarly.push(blocker);
          opened.set(name, open(want, false));
        }
      }
    } catch (err) {
      for (const l of opened.values()) close(l);
      // What was closed to make room is put back as it was.
      for (const [name, e] of closedEarly) {
        entries.set(name, start(name, open(e.bound, false), e.bound));
      }
      throw err;
    }
    return opened;
  }

  return {
    apply(wanted) {
      if (stopped) return [];
      const opened = openAll(wanted);
      for (const [name, listener] of opened) {
        const old = entries.get(name);
        entries.set(name, start(name, listener, wanted.get(name)!));
        if (old) close(old.listener);
      }
      const removed = [...entries.keys()].filter((name) => !wanted.has(name));
      for (const name of removed) {
        close(entries.get(name)!.listener);
        entries.delete(name);
      }
      return removed;
    },
    addresses: () =>
      Object.fromEntries(
        [...entries].map(([name, e]) => [name, formatAddress(e.bound.bind_address, e.bound.port)]),
      ),
    backlog: (service) => entries.get(service)?.bound.backlog ?? 0,
    async closeAll() {
      stopped = true;
      const loops = [...entries.values()].map((e) => {
        close(e.listener);
        return e.accepting;
      });
      entries.clear();
      await Promise.all(loops);
    },
  };
}

function sameAddress(a: Wanted | undefined, b: Wanted): boolean {
  return a !== undefined && a.bind_address === b.bind_address && a.port === b.port;
}

function listenReason(err: unknown): string {
  if (err instanceof Deno.errors.AddrInUse) return "address already in use";
  if (err instanceof Deno.errors.PermissionDenied) {
    return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)";
  }
  if (err instanceof Deno.errors.AddrNotAvailable) return "address not available on this machine";
  return err instanceof Error ? err.message : String(err);
}
