/**
 * One data plane's listening sockets, one per service. A reload's new set
 * of listeners is applied all or nothing, and a listener that moves opens
 * its new socket before closing the old one. How a socket is opened,
 * served and closed is the engine's ({@link ListenSockets}); the Deno.Conn
 * engine's sockets and accept loops are {@link denoSockets}.
 *
 * @module
 */
import { formatAddress, listenersOverlap } from "../net/address.ts";
import { describeError, ListenError } from "../errors.ts";
import { isExhaustion } from "../net/errno.ts";
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
interface Entry<L> {
  listener: L;
  /**
   * More sockets of the same address, handed over by a bal with more data
   * planes than this one: served here until they close, so the clients
   * queued in them are accepted rather than reset.
   */
  extras: L[];
  bound: Wanted;
  /** The accept loops; they end once the sockets are closed. */
  accepting: Promise<void>;
}

/**
 * An engine's listening sockets. `open` throws an Error whose message says
 * why in a few words; `serve` accepts clients until `close`, and resolves then.
 */
export interface ListenSockets<L> {
  open(want: Wanted, reusePort: boolean): L;
  /** Takes over a listening socket the bal before handed over (Linux engines only). */
  adopt?(fd: number): L;
  /** A listener's descriptor, for handing it to the next bal (Linux engines only). */
  fd?(listener: L): number;
  serve(service: string, listener: L): Promise<void>;
  close(listener: L): void;
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
  /** Each service's listening descriptor, where the engine has one. */
  fds(): ListenerFd[];
}

/** A service's listening socket as a descriptor, to hand to the next bal. */
export interface ListenerFd {
  service: string;
  /** `host:port`, as {@link formatAddress} writes it. */
  address: string;
  fd: number;
}

/**
 * Listening sockets from the bal before (`bal upgrade`), by `host:port`:
 * `fds` to take over (consumed by the first apply: the first of each
 * address becomes the listener, any more are served beside it; what it
 * does not take is closed), and `held`, every address the bal before
 * listens on, where a new socket joins it through SO_REUSEPORT instead of
 * claiming the port.
 */
export interface Inherited {
  fds: Map<string, number[]>;
  held: ReadonlySet<string>;
}

/** How listeners are opened. */
export interface ListenerOptions<L> {
  reusePort: boolean;
  claimPort: boolean | ((address: string) => boolean);
  inherited?: Inherited;
  sockets: ListenSockets<L>;
}

/** What a listener set holds. */
interface Listeners<L> {
  options: ListenerOptions<L>;
  /** Handed-over sockets adopted beside a listener, until its entry is made. */
  extras: Map<string, L[]>;
  readonly entries: Map<string, Entry<L>>;
  stopped: boolean;
}

/** An empty listener set. */
export function listenerSet<L>(options: ListenerOptions<L>): ListenerSet {
  const ls: Listeners<L> = { options, extras: new Map(), entries: new Map(), stopped: false };
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
        closeEntry(ls, e);
        return e.accepting;
      });
      ls.entries.clear();
      await Promise.all(loops);
    },
    fds: () => {
      const fdOf = ls.options.sockets.fd;
      if (!fdOf) return [];
      return [...ls.entries].flatMap(([service, e]) =>
        [e.listener, ...e.extras].map((l) => ({
          service,
          address: formatAddress(e.bound.bind_address, e.bound.port),
          fd: fdOf(l),
        }))
      );
    },
  };
}

function open<L>(ls: Listeners<L>, want: Wanted, claim: boolean): L {
  const { sockets, reusePort, inherited } = ls.options;
  const key = formatAddress(want.bind_address, want.port);
  const [fd, ...more] = inherited?.fds.get(key) ?? [];
  if (fd !== undefined && sockets.adopt) {
    inherited!.fds.delete(key);
    ls.extras.set(key, more.map((n) => sockets.adopt!(n)));
    return sockets.adopt(fd);
  }
  // The bal before holds this port: join it; claiming would fail on its socket.
  if (inherited?.held.has(key)) claim = false;
  try {
    // A plain bind fails while any socket holds the port, SO_REUSEPORT or not.
    if (claim) sockets.close(sockets.open(want, false));
    return sockets.open(want, reusePort);
  } catch (err) {
    throw new ListenError(
      `cannot listen on ${formatAddress(want.bind_address, want.port)}: ${
        err instanceof Error ? err.message : String(err)
      }`,
      { cause: err },
    );
  }
}

function start<L>(ls: Listeners<L>, service: string, listener: L, bound: Wanted): Entry<L> {
  const key = formatAddress(bound.bind_address, bound.port);
  const extras = ls.extras.get(key) ?? [];
  ls.extras.delete(key);
  const serve = (l: L) => ls.options.sockets.serve(service, l);
  return {
    listener,
    extras,
    bound,
    accepting: Promise.all([listener, ...extras].map(serve)).then(() => {}),
  };
}

function closeEntry<L>(ls: Listeners<L>, e: Entry<L>): void {
  for (const l of [e.listener, ...e.extras]) ls.options.sockets.close(l);
}

/**
 * Opens what `wanted` needs beyond the open entries. A socket that fails
 * because one of ours that is going away holds the port (the same port on
 * an overlapping address) is retried once that one is closed; on any
 * failure, what was opened is closed and what was closed is reopened.
 */
function openAll<L>(ls: Listeners<L>, wanted: ReadonlyMap<string, Wanted>) {
  const opened = new Map<string, L>();
  const closedEarly: [string, Entry<L>][] = [];
  const goingAway = [...ls.entries].filter(([name, e]) => !sameAddress(wanted.get(name), e.bound));
  try {
    for (const [name, want] of wanted) {
      const current = ls.entries.get(name);
      if (current && sameAddress(want, current.bound)) continue;
      const { claimPort } = ls.options;
      const claim = ls.options.reusePort && current?.bound.port !== want.port &&
        (typeof claimPort === "function"
          ? claimPort(formatAddress(want.bind_address, want.port))
          : claimPort);
      try {
        opened.set(name, open(ls, want, claim));
      } catch (err) {
        const blocker = goingAway.find(([, e]) =>
          listenersOverlap(e.bound, want) && !closedEarly.some(([, c]) => c === e)
        );
        if (!blocker) throw err;
        ls.options.sockets.close(blocker[1].listener);
        closedEarly.push(blocker);
        opened.set(name, open(ls, want, false));
      }
    }
  } catch (err) {
    for (const l of opened.values()) ls.options.sockets.close(l);
    for (const [name, e] of closedEarly) {
      ls.entries.set(name, start(ls, name, open(ls, e.bound, false), e.bound));
    }
    throw err;
  }
  return opened;
}

function apply<L>(ls: Listeners<L>, wanted: ReadonlyMap<string, Wanted>): string[] {
  if (ls.stopped) return [];
  const opened = openAll(ls, wanted);
  for (const [name, listener] of opened) {
    const old = ls.entries.get(name);
    ls.entries.set(name, start(ls, name, listener, wanted.get(name)!));
    if (old) closeEntry(ls, old);
  }
  releaseInherited(ls);
  const removed = [...ls.entries.keys()].filter((name) => !wanted.has(name));
  for (const name of removed) {
    closeEntry(ls, ls.entries.get(name)!);
    ls.entries.delete(name);
  }
  return removed;
}

/**
 * After the first apply, closes the handed-over sockets it did not take
 * (services the new config dropped): the socket itself closes once the bal
 * before closes its copy too.
 */
function releaseInherited<L>(ls: Listeners<L>): void {
  const { inherited, sockets } = ls.options;
  if (!inherited) return;
  for (const fd of [...inherited.fds.values()].flat()) {
    if (sockets.adopt) sockets.close(sockets.adopt(fd));
  }
  for (const l of [...ls.extras.values()].flat()) sockets.close(l);
  ls.extras.clear();
  ls.options = { ...ls.options, inherited: undefined };
}

function sameAddress(a: Wanted | undefined, b: Wanted): boolean {
  return a !== undefined && a.bind_address === b.bind_address && a.port === b.port;
}

/**
 * Deno.Conn listeners: each accepts in a loop of its own and hands clients
 * to `accept`, backing off 50 ms while accepts fail for want of
 * descriptors or memory. A client that was gone before it could be taken
 * (Deno reads its address and fails with NotConnected when it reset) goes
 * to `aborted`, and accepting goes on at once: a back-off per reset let a
 * storm of them (HAProxy's L4 checks close with one) stall everyone else.
 */
export function denoSockets(
  accept: (service: string, conn: Deno.TcpConn) => void,
  aborted: (service: string, error: string) => void,
): ListenSockets<Deno.TcpListener> {
  /** Listeners we closed on purpose: their accept loops end quietly. */
  const closing = new WeakSet<Deno.TcpListener>();
  const acceptFailing = episode();
  return {
    open({ bind_address: hostname, port, backlog }, reusePort) {
      try {
        return Deno.listen({ hostname, port, transport: "tcp", reusePort, tcpBacklog: backlog });
      } catch (err) {
        throw new Error(listenReason(err), { cause: err });
      }
    },
    async serve(service, l) {
      for (;;) {
        let client: Deno.TcpConn;
        try {
          client = await l.accept();
        } catch (err) {
          if (closing.has(l)) return;
          if (!isExhaustion(err)) {
            aborted(service, describeError(err));
            continue;
          }
          if (acceptFailing.fail()) acceptFailed(service, String(err));
          await new Promise((r) => setTimeout(r, 50));
          continue;
        }
        acceptRecovered(acceptFailing);
        accept(service, client);
      }
    },
    close(l) {
      closing.add(l);
      try {
        l.close();
      } catch {
        // Already closed.
      }
    },
  };
}

/** Says that accepting fails (once per episode). */
export function acceptFailed(service: string, error: string): void {
  log.error("accept failed: {error}; retrying every 50 ms", {
    event: "accept_failed",
    service,
    error,
  });
}

/** Says that accepting works again, when it had failed. */
export function acceptRecovered(failing: ReturnType<typeof episode>): void {
  const failures = failing.recover();
  if (failures !== null) {
    log.info(`accepting again after ${plural(failures, "failed accept")}`, {
      event: "accept_recovered",
      failures,
    });
  }
}

function listenReason(err: unknown): string {
  if (err instanceof Deno.errors.AddrInUse) return "address already in use";
  if (err instanceof Deno.errors.PermissionDenied) {
    return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)";
  }
  if (err instanceof Deno.errors.AddrNotAvailable) return "address not available on this machine";
  return err instanceof Error ? err.message : String(err);
}
