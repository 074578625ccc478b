/**
 * The Deno.Conn engine: every service's clients on this data plane, each
 * relayed to a backend with Deno's own sockets. It runs wherever Deno
 * does; on Linux the native engine (`../epoll/`) does the same for less CPU
 * and memory. The bookkeeping both share is in `../plane.ts`.
 *
 * The session's steps: {@link accept} (the service's limit), then
 * {@link connectBackend} (pick, dial, fail over), then the relay, then
 * close. Idle connections are swept every few hundred ms.
 *
 * @module
 */
import type { Backend } from "../../config/mod.ts";
import { logger } from "../../log.ts";
import { dial, DialError } from "../../net/dial.ts";
import type { Engine, EngineOptions } from "../engine.ts";
import type { ServiceCounters } from "../../stats/counters.ts";
import type { Runtime } from "../../snapshot.ts";
import { denoSockets, listenerSet } from "../listeners.ts";
import { closeQuietly, type Stream, writeAll } from "../../net/stream.ts";
import { relay } from "./relay.ts";
import { readPreface } from "./preface_read.ts";
import { inspected, inspector, inspects } from "../inspect.ts";
import {
  countersOf,
  createPlane,
  logAccess,
  type Plane,
  planeEngine,
  type SessionBase,
  sweepIdle,
} from "../plane.ts";
import {
  backendHeader,
  begun,
  countEarly,
  dialed,
  dialFailed,
  noBackend,
  pick,
  relayEnded,
} from "../session.ts";
import { acceptAborted, admit, ended, refuse, started } from "../admission.ts";
import { dialedFrom, mayLoop, serviceMayLoop } from "../self_loop.ts";

const log = logger("proxy");

/** One client and, once dialed, its backend connection. */
interface Session extends SessionBase {
  client: Deno.TcpConn;
  /** What the relay reads the client from: the socket, or a read the inspect step left pending. */
  from: Stream;
  upstream: Deno.TcpConn | null;
}

type DenoPlane = Plane<Session>;

/** Creates the Deno.Conn engine for a runtime; it reads `runtime.snapshot` per connection. */
export function createDenoEngine(runtime: Runtime, options: EngineOptions): Engine {
  const plane: DenoPlane = createPlane<Session>(runtime, options, (s) => {
    closeQuietly(s.client);
    if (s.upstream) closeQuietly(s.upstream);
  }, true);
  const sweep = () => Deno.unrefTimer(setTimeout(sweep, sweepIdle(plane, Date.now())));
  sweep();
  const listeners = listenerSet({
    reusePort: options.reusePort,
    claimPort: options.claimPort,
    sockets: denoSockets(
      (service, client) => accept(plane, service, client),
      (service, error) => acceptAborted(plane, service, error),
    ),
  });
  return planeEngine("deno", plane, listeners);
}

/** A new client of `service`: refused at the service's limit, else served. */
function accept(plane: DenoPlane, service: string, client: Deno.TcpConn): void {
  const peer = client.remoteAddr as Deno.NetAddr;
  const counters = admit(plane, service, peer);
  if (!counters) return closeQuietly(client);
  const session: Session = {
    ...begun(service, peer, Date.now()),
    client,
    from: client,
    upstream: null,
  };
  started(plane, session, counters);
  serve(plane, session, counters)
    .catch((err) =>
      log.debug("connection ended with {error}", {
        event: "connection_error",
        service,
        error: String(err),
      })
    )
    .finally(() => {
      plane.close(session, "error");
      ended(plane, session, counters);
    });
}

async function serve(plane: DenoPlane, session: Session, outcome: ServiceCounters): Promise<void> {
  const { client } = session;
  client.setNoDelay(true);
  client.setKeepAlive(true);
  if (await ownConnect(plane, session)) return;
  if (!(await inspect(plane, session))) return;
  const picked = await connectBackend(plane, session);
  if (!picked) {
    outcome.no_backend++;
    logAccess(plane, session.service, session.peer, {
      ended: "no_backend",
      started: session.started,
    });
    return;
  }
  outcome.served++;
  session.upstream = picked.upstream;
  const counters = countersOf(plane, picked.backend.id);
  const early = countEarly(session, counters);
  try {
    const first = backendHeader(
      picked.backend,
      session.peer,
      () => session.destination ?? client.localAddr as Deno.NetAddr,
      session.early,
    );
    // A backend that will not take them fails the relay that follows.
    if (first) await writeAll(picked.upstream, first).catch(() => closeQuietly(picked.upstream));
    const moved = await relay(session.from, picked.upstream, session.activity, (fromClient, n) => {
      if (fromClient) counters.bytes_in += n;
      else counters.bytes_out += n;
    });
    relayEnded(plane, session, picked.backend, {
      bytesIn: moved.aToB + early,
      bytesOut: moved.bToA,
      failed: moved.failed,
      cut: false,
      firstEnd: moved.firstEnd,
    });
  } finally {
    counters.active--;
  }
}

/**
 * Reads what the client must send first (a PROXY header with
 * `accept_proxy`, a ClientHello for a service with routes): it decides who
 * the client is, whether it may go on and its route. False when it was
 * refused (counted, logged; the caller closes it).
 */
async function inspect(plane: DenoPlane, session: Session): Promise<boolean> {
  const service = plane.runtime.snapshot.services.get(session.service);
  if (!inspects(service)) return true;
  const { read, from } = await readPreface(session.client, inspector(plane, session, service));
  session.from = from;
  // Closed by bal meanwhile (a drain, a kill): that is how it ended, not a refusal.
  if (session.closing) return false;
  if (inspected(plane, session, read)) return true;
  logAccess(plane, session.service, session.peer, {
    ended: session.closing ?? "error",
    started: session.started,
  });
  return false;
}

/** Event-loop turns a client of a service that may loop waits for the connect that caused it. */
const LOOP_TURNS = 3;

/**
 * Whether the client turned out to be bal's own connect to a backend (then
 * {@link cutOwnClient} refused it). Deno may settle an accept before the
 * connect that caused it, so for a service whose backends could be bal, a
 * few turns of the event loop pass first: without them each client of a
 * looping backend began one more connect before it was found out, and the
 * chain went on.
 */
async function ownConnect(plane: DenoPlane, session: Session): Promise<boolean> {
  const { services } = plane.runtime.snapshot;
  const service = services.get(session.service);
  if (!service || !serviceMayLoop(services, service)) return false;
  for (let turn = 0; turn < LOOP_TURNS && !session.closing; turn++) {
    await new Promise((r) => setTimeout(r, 0));
  }
  return session.closing !== null;
}

/**
 * Remembers the local end of a connect that may reach one of bal's own
 * listeners; when its accept already ran (Deno may settle the accept
 * before the connect), that client is cut now.
 */
function cutOwnClient(plane: DenoPlane, session: Session, upstream: Deno.TcpConn): void {
  const own = dialedFrom(plane.loops, session, upstream.localAddr as Deno.NetAddr);
  const service = own && plane.runtime.snapshot.services.get(own.service);
  if (!own || !service) return;
  refuse(plane, service, own.peer, "loop");
  plane.close(own, "loop");
}

/**
 * Dials backends in the policy's order until one connects; each is tried
 * at most once. On success the backend stays counted active; the caller
 * uncounts it when the relay ends.
 */
async function connectBackend(
  plane: DenoPlane,
  session: Session,
): Promise<{ upstream: Deno.TcpConn; backend: Backend } | null> {
  const service = plane.runtime.snapshot.services.get(session.service);
  if (!service) return null;
  const tried = new Set<string>();
  for (;;) {
    const backend = pick(plane, service, session.route, tried, session.peer.hostname);
    if (!backend) break;
    try {
      const timeout = service.runtime.backend_connect_timeout_ms;
      const begun = performance.now();
      const upstream = await dial(backend.host, backend.port, timeout);
      dialed(plane, session, backend, performance.now() - begun);
      if (mayLoop(plane.runtime.snapshot.services, backend)) cutOwnClient(plane, session, upstream);
      return { upstream, backend };
    } catch (err) {
      if (!(err instanceof DialError)) {
        countersOf(plane, backend.id).active--;
        throw err;
      }
      if (dialFailed(plane, backend, err.kind, err.message)) return null;
    }
  }
  noBackend(plane, service, tried.size);
  return null;
}
