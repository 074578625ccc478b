/**
 * What the two Linux engines (uring, epoll) build alike around their own
 * loop: the data plane with its backends' addresses, a client taken from
 * an accepted socket to the session driver, the idle sweep on the loop's
 * timers, the listeners, a bug in a handler said and survived, and a
 * backend's address found (looked up first when it is a name) before a
 * connect.
 *
 * @module
 */
import type { Backend, Service } from "../../config/schema.ts";
import type { Preface } from "../../route/preface.ts";
import { describeError } from "../../errors.ts";
import { logger, rateLimited } from "../../log.ts";
import type { Runtime } from "../../snapshot.ts";
import { acceptAborted, admit } from "../admission.ts";
import type { Engine, EngineName, EngineOptions } from "../engine.ts";
import { listenerSet, type ListenSockets, type Wanted } from "../listeners.ts";
import {
  createPlane,
  type Peer,
  type Plane,
  planeEngine,
  type Relayed,
  type SessionBase,
  sweepIdle,
} from "../plane.ts";
import { begun, type DialOutcome, finish, type Mechanism, serve } from "../session.ts";
import { dialFailure } from "../../net/dial.ts";
import { dialedFrom, mayLoop } from "../self_loop.ts";
import { dialSocket, listenAddress, localEnd, openListener, startConnect } from "./sockets.ts";
import * as sys from "./ffi.ts";
import { type AddressBook, addressBook } from "./resolve.ts";

const log = logger("proxy");

/** The loop a Linux engine runs its plane on: timers, and a stop. */
export interface EngineLoop {
  timer(at: number, fn: () => void): unknown;
  stop(): Promise<void>;
}

/** A Linux engine's data plane: the shared bookkeeping, its loop and its backends' addresses. */
export interface LinuxPlane<S extends SessionBase, Lp extends EngineLoop> extends Plane<S> {
  readonly loop: Lp;
  readonly addresses: AddressBook;
}

/** What every Linux engine's session holds: its client's socket. */
export interface LinuxSession extends SessionBase {
  readonly clientFd: number;
}

/** A listening socket of a Linux engine, and its registration on the loop. */
export interface LinuxListener {
  fd: number;
  token: number;
  closed: () => void;
}

/** Opens a listening socket for `want`, not yet on any loop. */
export function openLinuxListener(want: Wanted, reusePort: boolean): LinuxListener {
  return { fd: openListener(want, listenAddress(want), reusePort), token: 0, closed: () => {} };
}

/** A listening socket the bal before handed over, not yet on any loop. */
export function adoptLinuxListener(fd: number): LinuxListener {
  return { fd, token: 0, closed: () => {} };
}

/** Closes a listener, once: `release` lets go of its registration first. */
export function closeLinuxListener(l: LinuxListener, release: (l: LinuxListener) => void): void {
  if (l.fd < 0) return;
  release(l);
  sys.close(l.fd);
  l.fd = -1;
  l.closed();
}

/** Where a Linux engine's listeners hand accepted clients, and clients lost before. */
export type OnClient = (service: string, fd: number, peer: Peer) => void;
export type OnAborted = (service: string, error: string) => void;

/** An engine's own parts, over the plane {@link linuxEngine} makes. */
export interface EngineParts<S extends LinuxSession, C, Lp extends EngineLoop> {
  /** A session for an admitted client on socket `fd`. */
  session(plane: LinuxPlane<S, Lp>, base: SessionBase, fd: number): S;
  /** Its listeners. */
  sockets(onClient: OnClient, aborted: OnAborted): ListenSockets<LinuxListener>;
  /** The Mechanism's parts that differ per engine (connect is {@link connector} over `awaitConnect`). */
  inspect(
    plane: LinuxPlane<S, Lp>,
    s: S,
    service: Service,
    then: (read: Preface | string) => void,
  ): boolean;
  awaitConnect(plane: LinuxPlane<S, Lp>, ...args: Parameters<AwaitConnect<S, C>>): void;
  /** Whether `awaitConnect` makes the connect itself when given the address (through a ring). */
  connectsItself: boolean;
  relay(plane: LinuxPlane<S, Lp>, ...args: Parameters<Mechanism<S, C>["relay"]>): Relayed;
  close(plane: LinuxPlane<S, Lp>, s: S): void;
}

/** The engine `name` over `loop` and its `parts`; libc must be loaded. */
export function linuxEngine<S extends LinuxSession, C, Lp extends EngineLoop>(
  name: EngineName,
  runtime: Runtime,
  options: EngineOptions,
  loop: Lp,
  parts: EngineParts<S, C, Lp>,
): Engine {
  const plane: LinuxPlane<S, Lp> = Object.assign(
    createPlane<S>(runtime, options, (s) => finish(plane, mech, s)),
    { loop, addresses: addressBook() },
  );
  const mech: Mechanism<S, C> = {
    inspect: (s, service, then) => parts.inspect(plane, s, service, then),
    connect: connector(
      plane,
      parts.connectsItself,
      (...args) => parts.awaitConnect(plane, ...args),
    ),
    relay: (...args) => parts.relay(plane, ...args),
    localEnd: (s) => localEnd(s.clientFd),
    close: (s) => parts.close(plane, s),
  };
  const sweep = () => loop.timer(Date.now() + sweepIdle(plane, Date.now()), sweep);
  sweep();
  const onClient = (service: string, fd: number, peer: Peer) => {
    const counters = admit(plane, service, peer);
    if (!counters) return sys.close(fd);
    serve(plane, mech, parts.session(plane, begun(service, peer, counters, Date.now()), fd));
  };
  const listeners = listenerSet({
    reusePort: options.reusePort,
    claimPort: options.claimPort,
    inherited: options.inherited,
    sockets: parts.sockets(onClient, (service, error) => acceptAborted(plane, service, error)),
  });
  plane.addresses.refresh(runtime.snapshot.config);
  return planeEngine(name, plane, listeners, {
    applied: (config) => plane.addresses.refresh(config),
    stopped: () => loop.stop(),
  });
}

/** A handler's bug, said at most once a second; the loop serves on. */
export function loopErrors(engine: EngineName): (err: unknown) => void {
  const gate = rateLimited(1000);
  return (err) => {
    const suppressed = gate();
    if (suppressed === null) return;
    log.error(`${engine} engine: unexpected error, still serving: {error}`, {
      event: "internal_error",
      error: describeError(err),
      suppressed,
    });
  };
}

/**
 * Waits for a connect on `fd` begun at `begun` (performance.now()): started
 * already when `address` is null, else to be started by the engine; `done`
 * hears how it went.
 */
export type AwaitConnect<S extends SessionBase, C> = (
  s: S,
  fd: number,
  address: Uint8Array | null,
  begun: number,
  timeoutMs: number,
  done: (outcome: DialOutcome<C>) => void,
) => void;

/**
 * A Mechanism's connect for a Linux engine: the backend's address found,
 * a socket made, and the engine's `wait` for the connect. An engine that
 * `connectsItself` (io_uring: one system call less) is handed the address;
 * otherwise, and always when the backend may be bal itself (its local end
 * must be remembered before the listener can accept it), the connect is
 * started here.
 */
function connector<S extends SessionBase, C, Lp extends EngineLoop>(
  plane: LinuxPlane<S, Lp>,
  connectsItself: boolean,
  wait: AwaitConnect<S, C>,
): Mechanism<S, C>["connect"] {
  return (s, backend, timeoutMs, done) =>
    withAddress(plane.addresses, s, backend, (address) => {
      const begun = performance.now();
      const looping = mayLoop(plane.runtime.snapshot.services, backend);
      if (connectsItself && !looping) {
        const fd = dialSocket(address);
        if (fd < 0) return done({ ok: false, ...dialFailure(-fd) });
        return wait(s, fd, address, begun, timeoutMs, done);
      }
      const { fd, errno } = startConnect(address);
      if (fd < 0) return done({ ok: false, ...dialFailure(errno) });
      if (looping) {
        const local = localEnd(fd);
        if (local) dialedFrom(plane.loops, s, local);
      }
      wait(s, fd, null, begun, timeoutMs, done);
    }, (message) => done({ ok: false, kind: "other", message }));
}

/**
 * Calls `connect` with `backend`'s socket address, or `fail` with why
 * there is none. A name not known yet is looked up first and the same pick
 * dialed once it is (it still counts as active meanwhile); nothing is
 * called when `s` has finished by then.
 */
function withAddress(
  addresses: AddressBook,
  s: SessionBase,
  backend: Backend,
  connect: (address: Uint8Array) => void,
  fail: (message: string) => void,
  lookedUp = false,
): void {
  if (s.finished) return;
  const address = addresses.of(backend);
  if (address instanceof Uint8Array) return connect(address);
  if (address instanceof Promise && !lookedUp) {
    address.then(() => withAddress(addresses, s, backend, connect, fail, true));
    return;
  }
  fail(typeof address === "string" ? address : `cannot resolve ${backend.host}`);
}
