/**
 * The data path: accept a client, pick a backend round robin, dial it
 * (trying the next one when a connect fails), then relay bytes both ways.
 * Also owns the listener (moved on reload) and the drain on shutdown.
 *
 * @module
 */
import { type Backend, type Config, formatAddress } from "./config.ts";
import { dial, DialError } from "./dial.ts";
import { ListenError } from "./errors.ts";
import { isClean, isCooling, type Observation } from "./health.ts";
import { logger } from "./log.ts";
import { type Activity, closeQuietly, relay } from "./relay.ts";
import { tryOrder } from "./balancer.ts";
import type { Runtime } from "./snapshot.ts";

const log = logger("proxy");

/** What one data plane counted for one backend. */
export interface BackendCounters {
  /** Connections relaying to it now. */
  active: number;
  /** Connections it was given. */
  served: number;
  /** Bytes from clients to it. */
  bytes_in: number;
  /** Bytes from it to clients. */
  bytes_out: number;
  /** Failed connects, by kind. */
  timeout: number;
  refused: number;
  other: number;
}

/** Fresh counters. */
export function zeroCounters(): BackendCounters {
  return { active: 0, served: 0, bytes_in: 0, bytes_out: 0, timeout: 0, refused: 0, other: 0 };
}

/** One client and, once dialed, its backend connection. */
interface Session {
  client: Deno.TcpConn;
  upstream: Deno.TcpConn | null;
  /** Last time bytes moved either way (or the accept). */
  activity: Activity;
}

/** The running data path. */
export interface Proxy {
  /**
   * Listens on the config's address. When already listening elsewhere, the
   * new listener is opened before the old one is closed; on failure the
   * old one is kept and a {@link ListenError} thrown.
   */
  listen(config: Config): void;
  /** `host:port` being listened on, or null. */
  address(): string | null;
  /** The listen backlog of the open listener: a reload does not change it (0 before listening). */
  backlog(): number;
  /**
   * Closes the listener for good: new clients are refused from now on, and
   * a later {@link Proxy.listen} opens nothing. Resolves once the socket is
   * really closed, which Deno does only when the pending accept has unwound:
   * until then the kernel still completes handshakes on it.
   */
  stopAccepting(): Promise<void>;
  /**
   * Waits until no connection is left, or `timeoutMs` has passed, then
   * closes whatever is left. Resolves to the number closed that way.
   */
  drain(timeoutMs: number): Promise<number>;
  /** Live client connections (being dialed or relaying). */
  active(): number;
  /** Client connections accepted since start. */
  accepted(): number;
  /** Clients closed at once because this plane was at its connection limit. */
  rejected(): number;
  /** Connections closed because no byte moved for `connection_idle_timeout_ms`. */
  idleClosed(): number;
  /** Counters per backend address (kept across reloads). */
  backendCounters(): Record<string, BackendCounters>;
}

/** Everything a data plane counted, as the control plane collects it. */
export function planeStats(id: number, proxy: Proxy) {
  return {
    id,
    accepted: proxy.accepted(),
    active: proxy.active(),
    rejected: proxy.rejected(),
    idle_closed: proxy.idleClosed(),
    backends: proxy.backendCounters(),
  };
}

/** How a data plane fits into the process. */
export interface ProxyOptions {
  /**
   * Receives every data-path connect result that health should learn from:
   * the health table itself in the control plane, a message to it in a worker.
   */
  onResult(backend: Backend, obs: Observation): void;
  /** Hears of a client that every backend failed (protection mode turns on). */
  onNoBackend(at: number): void;
  /** Listen with SO_REUSEPORT, so several data planes share the port. */
  reusePort: boolean;
  /**
   * Before listening with SO_REUSEPORT on a port that is not ours yet, make
   * sure no other socket holds it: SO_REUSEPORT would silently share it with
   * another bal (or any listener of the same user) instead of failing. The
   * control plane claims; the worker planes that join it do not.
   */
  claimPort: boolean;
  /**
   * Data planes sharing `max_concurrent_connections`: each takes its share,
   * since the kernel spreads clients over them evenly.
   */
  planes: number;
}

/** Creates the data path for a runtime; it reads `runtime.snapshot` per connection. */
export function createProxy(runtime: Runtime, options: ProxyOptions): Proxy {
  const sessions = new Set<Session>();
  const idleWaiters = new Set<() => void>();
  let listener: Deno.TcpListener | null = null;
  // What the open listener was opened with.
  let bound: { hostname: string; port: number; backlog: number } | null = null;
  let stopped = false;
  // The accept loop of the current listener; it ends once that listener is closed.
  let accepting = Promise.resolve();
  const closing = new WeakSet<Deno.TcpListener>();
  const noBackend = rateLimited(1000);
  const overloaded = rateLimited(1000);
  let accepted = 0;
  let rejected = 0;
  let idleClosed = 0;
  let sweeper: ReturnType<typeof setTimeout> | undefined;
  const perBackend = new Map<string, BackendCounters>();
  const countersOf = (address: string) => {
    let c = perBackend.get(address);
    if (!c) perBackend.set(address, c = zeroCounters());
    return c;
  };

  // Closes connections idle longer than connection_idle_timeout_ms, checking
  // four times per timeout (at most once a second), timing read afresh from
  // the snapshot so a reload applies.
  function sweep(): void {
    const idleMs = runtime.snapshot.config.runtime.connection_idle_timeout_ms;
    if (idleMs > 0) {
      const deadline = Date.now() - idleMs;
      for (const s of sessions) {
        if (s.activity.at < deadline) {
          idleClosed++;
          // Counted once: it stays in the set until its relay has unwound.
          s.activity.at = Infinity;
          closeQuietly(s.client);
          if (s.upstream) closeQuietly(s.upstream);
        }
      }
    }
    sweeper = setTimeout(sweep, Math.min(1000, Math.max(25, idleMs / 4 || 1000)));
    Deno.unrefTimer(sweeper);
  }
  sweep();

  // Running out of descriptors is one episode: logged when it starts and when it ends.
  const outOfResources = episode();
  const acceptFailing = episode();

  async function connectBackend(): Promise<
    { upstream: Deno.TcpConn; counters: BackendCounters } | null
  > {
    const { config } = runtime.snapshot;
    const timeout = config.runtime.backend_connect_timeout_ms;
    const now = Date.now();
    // Healthy first, then unhealthy, then those cooling down after a failed
    // connect: a cooling backend is tried only when all others failed this client.
    const tier = (b: Backend) => {
      const state = runtime.health.get(b.address);
      if (!state) return 0;
      return isCooling(state, now) ? 2 : state.healthy ? 0 : 1;
    };
    for (const backend of tryOrder(runtime.rr, config.backends, tier)) {
      try {
        const upstream = await dial(backend.host, backend.port, timeout);
        const failures = outOfResources.recover();
        if (failures !== null) {
          log.info("backend connections open again after {failures} failed for lack of resources", {
            event: "out_of_resources_ended",
            failures,
          });
        }
        const state = runtime.health.get(backend.address);
        // A clean backend has nothing to learn from a success: skip the message,
        // unless protection mode is counting successes.
        if (state && (!isClean(state) || runtime.protection.enabled)) {
          options.onResult(backend, { ok: true, at: Date.now(), source: "connect" });
        }
        const counters = countersOf(backend.address);
        counters.served++;
        return { upstream, counters };
      } catch (err) {
        if (!(err instanceof DialError)) throw err;
        if (err.kind === "local") {
          // Not the backend's fault, and every other backend would fail the same way.
          if (outOfResources.fail()) {
            log.error(
              "cannot open backend connections: {error}; clients are closed until it passes",
              {
                event: "out_of_resources",
                backend: backend.address,
                error: err.message,
              },
            );
          }
          return null;
        }
        countersOf(backend.address)[err.kind]++;
        options.onResult(backend, {
          ok: false,
          at: Date.now(),
          source: "connect",
          kind: err.kind,
          error: err.message,
        });
        log.debug("connect to {backend} failed: {error}", {
          event: "connect_failed",
          backend: backend.address,
          kind: err.kind,
          error: err.message,
        });
      }
    }
    options.onNoBackend(Date.now());
    const suppressed = noBackend();
    if (suppressed !== null) {
      log.warn("no backend accepted the connection; client closed", {
        event: "no_backend",
        backends: config.backends.length,
        suppressed,
      });
    }
    return null;
  }

  async function serve(session: Session): Promise<void> {
    session.client.setNoDelay(true);
    session.client.setKeepAlive(true);
    const connected = await connectBackend();
    if (!connected) return;
    session.upstream = connected.upstream;
    const { counters } = connected;
    counters.active++;
    try {
      const moved = await relay(session.client, connected.upstream, session.activity);
      counters.bytes_in += moved.aToB;
      counters.bytes_out += moved.bToA;
    } finally {
      counters.active--;
    }
  }

  function handle(client: Deno.TcpConn): void {
    const session: Session = { client, upstream: null, activity: { at: Date.now() } };
    sessions.add(session);
    serve(session)
      .catch((err) =>
        log.debug("connection ended with {error}", {
          event: "connection_error",
          error: String(err),
        })
      )
      .finally(() => {
        closeQuietly(client);
        if (session.upstream) closeQuietly(session.upstream);
        sessions.delete(session);
        if (sessions.size === 0) { for (const wake of idleWaiters) wake(); }
      });
  }

  async function acceptLoop(l: Deno.TcpListener): Promise<void> {
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
      accepted++;
      const { max_concurrent_connections: max } = runtime.snapshot.config.runtime;
      if (sessions.size >= Math.ceil(max / options.planes)) {
        // overload_policy reject: closed at once, counted, and said at most once a second.
        rejected++;
        closeQuietly(client);
        const suppressed = overloaded();
        if (suppressed !== null) {
          log.warn("at max_concurrent_connections ({max}): new clients are closed", {
            event: "overload",
            max,
            active: sessions.size,
            rejected,
            suppressed,
          });
        }
        continue;
      }
      handle(client);
    }
  }

  function open(hostname: string, port: number, backlog: number, claim: boolean): Deno.TcpListener {
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

  return {
    listen(config) {
      const want = { hostname: config.bind_address, port: config.port };
      if (stopped) return;
      if (bound && bound.hostname === want.hostname && bound.port === want.port) return;
      const old = listener;
      // Deno cannot change the backlog of an open listener (no second
      // listen()): a new tcp_backlog applies when a listener opens.
      const backlog = config.runtime.tcp_backlog;
      const claim = options.reusePort && options.claimPort && bound?.port !== want.port;
      let next: Deno.TcpListener;
      try {
        next = open(want.hostname, want.port, backlog, claim);
      } catch (err) {
        // Same port on an overlapping address (e.g. 0.0.0.0 -> 127.0.0.1): the
        // old socket holds it, so it must go first; put it back if the new one fails.
        if (!old || !bound || bound.port !== want.port) throw err;
        close(old);
        try {
          next = open(want.hostname, want.port, backlog, false);
        } catch (err2) {
          listener = open(bound.hostname, bound.port, bound.backlog, false);
          accepting = acceptLoop(listener);
          throw err2;
        }
      }
      listener = next;
      bound = { ...want, backlog };
      accepting = acceptLoop(next);
      if (old) close(old);
    },
    address: () => bound ? formatAddress(bound.hostname, bound.port) : null,
    backlog: () => bound?.backlog ?? 0,
    stopAccepting() {
      stopped = true;
      if (listener) close(listener);
      listener = null;
      return accepting;
    },
    async drain(timeoutMs) {
      if (sessions.size > 0) {
        let wake = () => {};
        const timer = setTimeout(() => wake(), timeoutMs);
        await new Promise<void>((resolve) => idleWaiters.add(wake = resolve));
        idleWaiters.delete(wake);
        clearTimeout(timer);
      }
      const forced = sessions.size;
      for (const s of sessions) {
        closeQuietly(s.client);
        if (s.upstream) closeQuietly(s.upstream);
      }
      return forced;
    },
    active: () => sessions.size,
    accepted: () => accepted,
    rejected: () => rejected,
    idleClosed: () => idleClosed,
    backendCounters: () => Object.fromEntries(perBackend),
  };
}

function listenReason(err: unknown): string {
  if (err instanceof Deno.errors.AddrInUse) return "address already in use";
  if (err instanceof Deno.errors.PermissionDenied) {
    return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)";
  }
  if (err instanceof Deno.errors.AddrNotAvailable) return "address not available on this machine";
  return err instanceof Error ? err.message : String(err);
}

/**
 * Returns a gate that opens at most once per `intervalMs`: it returns how
 * many calls it swallowed since it last opened, or null while closed. Keeps
 * a flood of identical failures to one log line a second.
 */
function rateLimited(intervalMs: number): () => number | null {
  let last = -Infinity;
  let swallowed = 0;
  return () => {
    const now = Date.now();
    if (now - last < intervalMs) {
      swallowed++;
      return null;
    }
    last = now;
    const n = swallowed;
    swallowed = 0;
    return n;
  };
}

/**
 * Tracks a failure that lasts (out of file descriptors): `fail()` is true
 * only for the first failure of an episode; `recover()`, called on each
 * success, returns how many failures the episode had once it is over (no
 * failure for a second: a shortage flaps as descriptors free and fill),
 * else null. One line when it starts and one when it ends.
 */
function episode(): { fail(): boolean; recover(): number | null } {
  let failures = 0;
  let last = 0;
  return {
    fail() {
      last = Date.now();
      return ++failures === 1;
    },
    recover() {
      if (failures === 0 || Date.now() - last < 1000) return null;
      const n = failures;
      failures = 0;
      return n;
    },
  };
}
