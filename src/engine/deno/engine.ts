/**
 * The Deno.Conn engine: the sessions of `../session.ts` on Deno's own
 * sockets. It runs wherever Deno does; on Linux the native engine
 * (`../epoll/`) does the same for less CPU and memory.
 *
 * Its part of a session ({@link mechanism}): reading the first bytes
 * (`preface_read.ts`), dialing, the relay (`relay.ts`) and closing.
 * Idle connections are swept every few hundred ms.
 *
 * @module
 */
import type { Backend } from "../../config/schema.ts";
import { dial, DialError } from "../../net/dial.ts";
import { logger, rateLimited } from "../../log.ts";
import type { Engine, EngineOptions } from "../engine.ts";
import type { Runtime } from "../../snapshot.ts";
import { denoSockets, listenerSet } from "../listeners.ts";
import { closeQuietly, type Stream, writeAll } from "../../net/stream.ts";
import { relay } from "./relay.ts";
import { readPreface } from "./preface_read.ts";
import { inspector } from "../inspect.ts";
import { createPlane, type Plane, planeEngine, type Relayed, sweepIdle } from "../plane.ts";
import { begun, type DialOutcome, finish, type Mechanism, serve } from "../session.ts";
import { acceptAborted, admit, refuse } from "../admission.ts";
import { dialedFrom, mayLoop } from "../self_loop.ts";
import type { TlsSession } from "../tls/steps.ts";

const log = logger("proxy");

/** The TLS steps, loaded with the first TLS client: a plane without one never loads them. */
let steps: Promise<typeof import("../tls/steps.ts")> | null = null;
function tlsSteps(): Promise<typeof import("../tls/steps.ts")> {
  return steps ??= import("../tls/steps.ts");
}

/** A bug in a step: said, and the session ends as an error (its sockets closed by `finish`). */
function stepFailed(plane: DenoPlane, s: Session): (err: unknown) => void {
  return (err: unknown) => {
    log.debug("connection ended with {error}", {
      event: "connection_error",
      service: s.service,
      error: String(err),
    });
    plane.close(s, "error");
  };
}

/** One client and, once dialed, its backend connection. */
interface Session extends TlsSession {
  upstream: Deno.TcpConn | null;
}

type DenoPlane = Plane<Session>;

/** Creates the Deno.Conn engine for a runtime; it reads `runtime.snapshot` per connection. */
export function createDenoEngine(runtime: Runtime, options: EngineOptions): Engine {
  const plane: DenoPlane = createPlane<Session>(
    runtime,
    options,
    (s) => finish(plane, mech, s),
    true,
  );
  const mech = mechanism(plane);
  const sweep = () => Deno.unrefTimer(setTimeout(sweep, sweepIdle(plane, Date.now())));
  sweep();
  const listeners = listenerSet({
    reusePort: options.reusePort,
    claimPort: options.claimPort,
    inherited: options.inherited,
    sockets: denoSockets(
      (service, client) => accept(plane, mech, service, client),
      (service, error) => acceptAborted(plane, service, error),
    ),
  });
  return planeEngine("deno", plane, listeners);
}

/** A new client of `service`: refused at the service's limit, else served (session.ts). */
function accept(
  plane: DenoPlane,
  mech: Mechanism<Session, Stream>,
  service: string,
  client: Deno.TcpConn,
): void {
  const peer = client.remoteAddr as Deno.NetAddr;
  const counters = admit(plane, service, peer);
  if (!counters) return closeQuietly(client);
  client.setNoDelay(true);
  client.setKeepAlive(true);
  serve(plane, mech, {
    ...begun(service, peer, counters, Date.now()),
    client,
    from: client,
    upstream: null,
    clientTls: null,
    backendTls: null,
  });
}

/** The Deno.Conn engine's part of a session. */
function mechanism(plane: DenoPlane): Mechanism<Session, Stream> {
  return {
    inspect(s, service, then) {
      const { tls } = service;
      const read = tls
        ? tlsSteps().then((steps) => steps.terminateClient(plane, s, service, tls))
        : readPreface(s.client, inspector(plane, s, service)).then(({ read, from }) => {
          s.from = from;
          return read;
        });
      read.then(then).catch(stepFailed(plane, s));
      return true;
    },
    connect: (s, backend, timeoutMs, done) => connect(plane, s, backend, timeoutMs, done),
    relay: (s, upstream, header, early, counters, done) => {
      const progress: Relayed = {
        aToB: early,
        bToA: 0,
        failed: false,
        firstEnd: null,
        done: false,
      };
      // A backend that will not take the header fails the relay that follows.
      const sent = header ? writeAll(upstream, header).catch(() => closeQuietly(upstream)) : null;
      Promise.resolve(sent)
        .then(() => relay(s.from, upstream, progress, s.activity, counters, s))
        .then(done)
        .catch(stepFailed(plane, s));
      return progress;
    },
    localEnd: (s) => s.client.localAddr as Deno.NetAddr,
    close(s) {
      s.clientTls?.socket.destroy();
      s.backendTls?.socket.destroy();
      closeQuietly(s.client);
      if (s.upstream) closeQuietly(s.upstream);
    },
  };
}

/** Dials `backend`; a connect that lands after the session ended is closed unheard. */
function connect(
  plane: DenoPlane,
  s: Session,
  backend: Backend,
  timeoutMs: number,
  done: (outcome: DialOutcome<Stream>) => void,
): void {
  const begun = performance.now();
  dial(backend.host, backend.port, timeoutMs).then(async (upstream) => {
    if (s.finished) return closeQuietly(upstream);
    s.upstream = upstream;
    if (mayLoop(plane.runtime.snapshot.services, backend)) cutOwnClient(plane, s, upstream);
    const { tls } = backend;
    const left = timeoutMs - (performance.now() - begun);
    const conn = tls
      ? await (await tlsSteps()).originateTo(s, tls, backend.host, upstream, left)
      : upstream;
    if (s.finished) return;
    if (typeof conn === "string") {
      s.upstream = null;
      closeQuietly(upstream);
      backendTlsFailed(backend, conn);
      return done({ ok: false, kind: "tls", message: conn });
    }
    done({ ok: true, conn, ms: performance.now() - begun });
  }, (err) => {
    if (s.finished) return;
    if (err instanceof DialError) return done({ ok: false, kind: err.kind, message: err.message });
    done({ ok: false, kind: "other", message: String(err) });
  }).catch(stepFailed(plane, s));
}

/** A backend's TLS handshake failed: said at most once a second (the counters keep every one). */
const tlsFailing = rateLimited(1000);
function backendTlsFailed(backend: Backend, error: string): void {
  const suppressed = tlsFailing();
  if (suppressed === null) return;
  log.warn("TLS to {backend} of {service} failed: {error}", {
    event: "backend_tls_failed",
    service: backend.service,
    backend: backend.address,
    error,
    suppressed,
  });
}

/**
 * Remembers the local end of a connect that may reach one of bal's own
 * listeners; when its accept already ran (Deno may settle the accept
 * before the connect), that client is cut now.
 */
function cutOwnClient(plane: DenoPlane, s: Session, upstream: Deno.TcpConn): void {
  const own = dialedFrom(plane.loops, s, upstream.localAddr as Deno.NetAddr);
  const service = own && plane.runtime.snapshot.services.get(own.service);
  if (!own || !service) return;
  refuse(plane, service, own.peer, "loop");
  plane.close(own, "loop");
}
