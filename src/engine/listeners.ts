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
import { plural } from "../text.ts";

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

/** What a listener set holds. */
interface Listeners {
  readonly options: ListenerOptions;
  readonly entries: Map<string, Entry>;
  /** Listeners we closed on purpose: their accept loops end quietly. */
  readonly closing: WeakSet<Deno.TcpListener>;
  readonly acceptFailing: ReturnType<typeof episode>;
  stopped: boolean;
}

/** An empty listener set. */
export function listenerSet(options: ListenerOptions): ListenerSet {
  const ls: Listeners = {
    options,
    entries: new Map(),
    closing: new WeakSet(),
    acceptFailing: episode(),
    stopped: false,
  };
  return {
    apply: (wanted) => apply(ls, wanted),
    addresses: () =>
      Object.fromEntries(
        [...ls.entries].map((
          [name, e],
        ) => [name, formatAddress(e.bound.bind_address, e.bound.port)]),
      ),
    backlog: (service) => ls.entries.get(service)?.bound.backlog ?? 0,
    async closeAll() {
      ls.stopped = true;
      const loops = [...ls.entries.values()].map((e) => {
        close(ls, e.listener);
        return e.accepting;
      });
      ls.entries.clear();
      await Promise.all(loops);
    },
  };
}

async function acceptLoop(ls: Listeners, service: string, l: Deno.TcpListener): Promise<void> {
  for (;;) {
    let client: Deno.TcpConn;
    try {
      client = await l.accept();
    } catch (err) {
      if (ls.closing.has(l)) return;
      // EMFILE and friends: back off instead of spinning, and keep serving.
      if (ls.acceptFailing.fail()) {
        log.error("accept failed: {error}; retrying every 50 ms", {
          event: "accept_failed",
          service,
          error: String(err),
        });
      }
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    const failures = ls.acceptFailing.recover();
    if (failures !== null) {
      log.info(`accepting again after ${plural(failures, "failed accept")}`, {
        event: "accept_recovered",
        failures,
      });
    }
    ls.options.accept(service, client);
  }
}

function open(ls: Listeners, want: Wanted, claim: boolean): Deno.TcpListener {
  const { bind_address: hostname, port, backlog } = want;
  try {
    // A plain bind fails while any socket holds the port, SO_REUSEPORT or not.
    if (claim) Deno.listen({ hostname, port, transport: "tcp" }).close();
    return Deno.listen({
      hostname,
      port,
      transport: "tcp",
      reusePort: ls.options.reusePort,
      tcpBacklog: backlog,
    });
  } catch (err) {
    throw new ListenError(
      `cannot listen on ${formatAddress(hostname, port)}: ${listenReason(err)}`,
    );
  }
}

function close(ls: Listeners, l: Deno.TcpListener): void {
  ls.closing.add(l);
  try {
    l.close();
  } catch {
    // Already closed.
  }
}

function start(ls: Listeners, service: string, listener: Deno.TcpListener, bound: Wanted): Entry {
  return { listener, bound, accepting: acceptLoop(ls, service, listener) };
}

/**
 * Opens what `wanted` needs beyond the open entries. A socket that fails
 * because one of ours that is going away holds the port (the same port on
 * an overlapping address) is retried once that one is closed; on any
 * failure, what was opened is closed and what was closed is reopened.
 */
function openAll(ls: Listeners, wanted: ReadonlyMap<string, Wanted>) {
  const opened = new Map<string, Deno.TcpListener>();
  const closedEarly: [string, Entry][] = [];
  const goingAway = [...ls.entries].filter(([name, e]) => !sameAddress(wanted.get(name), e.bound));
  try {
    for (const [name, want] of wanted) {
      const current = ls.entries.get(name);
      if (current && sameAddress(want, current.bound)) continue;
      const claim = ls.options.reusePort && ls.options.claimPort &&
        current?.bound.port !== want.port;
      try {
        opened.set(name, open(ls, want, claim));
      } catch (err) {
        const blocker = goingAway.find(([, e]) =>
          listenersOverlap(e.bound, want) && !closedEarly.some(([, c]) => c === e)
        );
        if (!blocker) throw err;
        close(ls, blocker[1].listener);
        closedEarly.push(blocker);
        opened.set(name, open(ls, want, false));
      }
    }
  } catch (err) {
    for (const l of opened.values()) close(ls, l);
    for (const [name, e] of closedEarly) {
      ls.entries.set(name, start(ls, name, open(ls, e.bound, false), e.bound));
    }
    throw err;
  }
  return opened;
}

function apply(ls: Listeners, wanted: ReadonlyMap<string, Wanted>): string[] {
  if (ls.stopped) return [];
  const opened = openAll(ls, wanted);
  for (const [name, listener] of opened) {
    const old = ls.entries.get(name);
    ls.entries.set(name, start(ls, name, listener, wanted.get(name)!));
    if (old) close(ls, old.listener);
  }
  const removed = [...ls.entries.keys()].filter((name) => !wanted.has(name));
  for (const name of removed) {
    close(ls, ls.entries.get(name)!.listener);
    ls.entries.delete(name);
  }
  return removed;
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
