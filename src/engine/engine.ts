/**
 * What an engine is: the mechanism that moves bytes for every service of
 * one data plane. It listens, accepts, asks the policy (`src/balance/`)
 * which backend to try, dials with a timeout, relays with half-close,
 * times out idle connections, drains and counts. It decides nothing
 * itself: config, health and admin state come from the runtime it is
 * given, and what it observes goes out through {@link EngineHooks}.
 *
 * @module
 */
import type { Backend, Config, Service } from "../config/mod.ts";
import type { Observation } from "../health/state.ts";
import type { PlaneStats } from "../stats/counters.ts";
import type { Inherited, ListenerFd } from "./listeners.ts";

/**
 * The engines bal has: `uring` (Linux io_uring), `epoll` (Linux epoll;
 * both through libc's FFI) and `deno` (Deno.Conn, everywhere).
 */
export type EngineName = "uring" | "epoll" | "deno";

/** The running data plane of one thread. */
export interface Engine {
  /** Which implementation moves the bytes. */
  readonly name: EngineName;
  /**
   * Makes the listeners match `config`'s services: opens those of new
   * services and of services whose address changed, closes those of
   * removed services (their live connections drain up to the service's
   * `shutdown_drain_timeout_ms`). All or nothing: when one cannot be
   * opened, nothing changes and a ListenError says why.
   */
  apply(config: Config): void;
  /** `host:port` each service listens on, by service name. */
  listening(): Record<string, string>;
  /** The backlog a service's open listener was opened with (0 when none). */
  backlog(service: string): number;
  /**
   * Closes every listener for good: new clients are refused from now on,
   * and a later {@link Engine.apply} opens nothing. Resolves once the
   * sockets are really closed.
   */
  stopAccepting(): Promise<void>;
  /**
   * Waits until no connection is left, or `timeoutMs` has passed, then
   * closes whatever is left. Resolves to the number closed that way.
   */
  drain(timeoutMs: number): Promise<number>;
  /** Closes the live connections of one backend (by id) at once; returns how many. */
  kill(backendId: string): number;
  /** Its counters now. */
  stats(): PlaneStats;
  /** Each service's listening descriptor (Linux engines; none for deno), for `bal upgrade`. */
  listenerFds(): ListenerFd[];
  /** The engine that runs a service, where it is not this one's name (TLS beside a native engine). */
  engineOf?(service: string): EngineName;
}

/**
 * Whether a service speaks TLS at bal (`tls:`, or `backend_tls:` on any of
 * its backends): such services run beside a native engine, on OpenSSL or
 * on Deno's sockets (src/engine/tls/beside.ts).
 */
export function usesTls(service: Service): boolean {
  return service.tls !== null || service.backends.some((b) => b.tls !== null) ||
    service.discovered.some((d) => d.template.tls !== null);
}

/** Whether to claim `host:port` before listening on it (false: a socket of ours is leaving it). */
export type Claim = (address: string) => boolean;

/** How an engine fits into the process. */
export interface EngineOptions {
  /** 0 for the main thread's plane, 1.. for workers. */
  id: number;
  /**
   * Receives every data-path connect result that health should learn from:
   * the recorder itself in the control plane, a message to it in a worker.
   */
  onResult(backend: Backend, obs: Observation): void;
  /** Hears of a client of `service` that every backend failed. */
  onNoBackend(service: string, at: number): void;
  /** Listen with SO_REUSEPORT, so several data planes share each port. */
  reusePort: boolean;
  /**
   * Before listening with SO_REUSEPORT on a port that is not ours yet, make
   * sure no other socket holds it: SO_REUSEPORT would silently share it with
   * another bal (or any listener of the same user) instead of failing. The
   * control plane claims; the worker planes that join it do not.
   */
  claimPort: boolean | Claim;
  /**
   * Data planes sharing each service's `max_concurrent_connections`: each
   * takes its share, since the kernel spreads clients over them evenly.
   */
  planes: number;
  /** Listening sockets handed over by the bal before (`bal upgrade`), for this plane. */
  inherited?: Inherited;
  /**
   * The services this engine serves, where engines run side by side in one
   * thread (src/engine/tls/beside.ts); by default a native engine serves
   * those that do not {@link usesTls}, and deno serves all.
   */
  serves?: (service: Service) => boolean;
}
