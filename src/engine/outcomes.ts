/**
 * What a session's backend connections tell the rest of bal: a connect
 * that succeeded or failed, a backend that hung up on a waiting client,
 * a client no backend took. Each is counted, told to health (passive
 * checks, protection mode) and logged, rate-limited where a storm could
 * flood the log.
 *
 * @module
 */
import type { Backend, Service } from "../config/schema.ts";
import { logger } from "../log.ts";
import { plural } from "../text.ts";
import { isClean } from "../health/state.ts";
import { protectionOf } from "../snapshot.ts";
import type { DialFailure } from "../net/dial.ts";
import { observeConnect } from "../stats/counters.ts";
import { countersOf, type Plane, type SessionBase } from "./plane.ts";

const log = logger("proxy");

/** A dial that succeeded after `ms`: counted, timed, and told to health when it has use for it. */
export function dialed<S extends SessionBase>(
  plane: Plane<S>,
  s: S,
  backend: Backend,
  ms: number,
): void {
  const counters = countersOf(plane, backend.id);
  observeConnect(counters, ms / 1000);
  s.connectMs = Math.round(ms * 100) / 100;
  s.to = backend;
  counters.served++;
  const failures = plane.gates.outOfResources.recover();
  if (failures !== null) {
    log.info(
      `backend connections open again after ${plural(failures, "failure")} for lack of resources`,
      { event: "out_of_resources_ended", failures },
    );
  }
  const { runtime } = plane;
  const state = runtime.health.get(backend.id);
  // A clean backend has nothing to learn from a success: skip the message,
  // unless protection mode is counting successes.
  if (state && (!isClean(state) || protectionOf(runtime, backend.service).enabled)) {
    plane.options.onResult(backend, { ok: true, at: Date.now(), source: "connect" });
  }
}

/**
 * A dial that failed: counted and told to health. Returns true when it was
 * this machine's fault (no backend should be tried, every other would fail
 * the same way).
 */
export function dialFailed<S extends SessionBase>(
  plane: Plane<S>,
  backend: Backend,
  kind: DialFailure,
  message: string,
): boolean {
  countersOf(plane, backend.id).active--;
  const names = { service: backend.service, backend: backend.address };
  if (kind === "local") {
    if (plane.gates.outOfResources.fail()) {
      log.error("cannot open backend connections: {error}; clients are closed until it passes", {
        event: "out_of_resources",
        ...names,
        error: message,
      });
    }
    return true;
  }
  countersOf(plane, backend.id)[kind]++;
  plane.options.onResult(backend, {
    ok: false,
    at: Date.now(),
    source: "connect",
    kind,
    error: message,
  });
  log.debug("connect to {backend} failed: {error}", {
    event: "connect_failed",
    ...names,
    kind,
    error: message,
  });
  return false;
}

/** Every backend a client was offered failed: told to health, and said at most once a second. */
export function noBackend<S extends SessionBase>(
  plane: Plane<S>,
  service: Service,
  tried: number,
): void {
  plane.options.onNoBackend(service.name, Date.now());
  const suppressed = plane.gates.noBackend();
  if (suppressed !== null) {
    log.warn("no backend of {service} accepted the connection ({tried} tried); client closed", {
      event: "no_backend",
      service: service.name,
      backends: service.backends.length,
      tried,
      suppressed,
    });
  }
}

/**
 * A backend that reset or closed a client's connection before sending a
 * byte, while the client still waited: a passive failure, like a refused
 * connect (an accept-and-reset backend must not keep its share).
 */
export function hungUp<S extends SessionBase>(
  plane: Plane<S>,
  backend: Backend,
  reset: boolean,
): void {
  const error = `${reset ? "reset" : "closed"} the connection before sending anything`;
  countersOf(plane, backend.id).other++;
  plane.options.onResult(backend, {
    ok: false,
    at: Date.now(),
    source: "connect",
    kind: "other",
    error,
  });
  log.debug("{backend} {error}", {
    event: "backend_hung_up",
    service: backend.service,
    backend: backend.address,
    error,
  });
}
