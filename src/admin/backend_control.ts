/**
 * `bal backend ...` on the control socket: list a service's backends, and
 * drain, disable, enable or reweight one without a reload. The control
 * plane holds the admin table; every data plane gets each change at once.
 *
 * @module
 */
import { type Backend, MAX_WEIGHT } from "../config/schema.ts";
import { normalizeHost } from "../net/address.ts";
import {
  ADMIN_DEFAULT,
  type AdminAction,
  applyAdmin,
  type BackendAdmin,
  weightOf,
} from "../balance/admin_state.ts";
import { logger } from "../log.ts";
import type { Runtime, Snapshot } from "../snapshot.ts";
import type { Status } from "../instance/status_report.ts";
import type { Command } from "./registry.ts";

const log = logger("admin");

/** What the backend commands act through. */
export interface BackendControl {
  runtime: Runtime;
  /** Sends one backend's new admin state to every other data plane. */
  broadcast(id: string, admin: BackendAdmin): void;
  /** Closes one backend's live connections on every data plane; resolves to how many. */
  kill(id: string): Promise<number>;
  /** The live status, for listing. */
  status(): Promise<Status>;
}

/** The backend named `address` (`HOST:PORT`) in `service`, or an error that lists the known ones. */
export function findBackend(
  snapshot: Snapshot,
  service: unknown,
  address: unknown,
): Backend | { error: string } {
  const known = [...snapshot.services.keys()];
  const s = typeof service === "string" ? snapshot.services.get(service) : undefined;
  if (!s) {
    return { error: `unknown service ${JSON.stringify(service)}; known: ${known.join(", ")}` };
  }
  const m = typeof address === "string" ? /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(address.trim()) : null;
  const host = m ? normalizeHost(m[1]) : undefined;
  const backend = s.backends.find((b) => b.host === host && b.port === Number(m?.[2]));
  if (!backend) {
    const list = s.backends.map((b) => b.address).join(", ");
    return {
      error: `service ${s.name} has no backend ${JSON.stringify(address)}; its backends: ${list}`,
    };
  }
  return backend;
}

/** The action a request asks for, or an error. */
export function actionOf(request: Record<string, unknown>): AdminAction | { error: string } {
  switch (request.action) {
    case "drain":
    case "disable":
    case "enable":
      return { action: request.action };
    case "weight": {
      const w = request.weight;
      if (typeof w === "number" && Number.isInteger(w) && w >= 0 && w <= MAX_WEIGHT) {
        return { action: "weight", weight: w };
      }
      return {
        error: `weight must be an integer from 0 to ${MAX_WEIGHT}, got ${JSON.stringify(w)}`,
      };
    }
    default:
      return {
        error: `unknown action ${
          JSON.stringify(request.action)
        }; known: drain, disable, enable, weight`,
      };
  }
}

/** The `backend_list` and `backend_set` commands. */
export function backendCommands(ctl: BackendControl): [string, Command][] {
  const list: Command = async (request) => {
    const status = await ctl.status();
    const services = status.services ?? [];
    if (request.service === undefined) return { services };
    const chosen = services.filter((s) => s.name === request.service);
    if (chosen.length === 0) {
      const known = services.map((s) => s.name).join(", ");
      return { error: `unknown service ${JSON.stringify(request.service)}; known: ${known}` };
    }
    return { services: chosen };
  };
  const set: Command = async (request) => {
    const backend = findBackend(ctl.runtime.snapshot, request.service, request.backend);
    if ("error" in backend) return backend;
    const action = actionOf(request);
    if ("error" in action) return action;
    const { admin } = ctl.runtime;
    const next = applyAdmin(admin.get(backend.id) ?? ADMIN_DEFAULT, action);
    admin.set(backend.id, next);
    ctl.broadcast(backend.id, next);
    const killed = action.action === "disable" && request.kill === true
      ? await ctl.kill(backend.id)
      : 0;
    const reply = {
      service: backend.service,
      backend: backend.address,
      admin_state: next.state,
      weight: weightOf(backend, next),
      killed,
    };
    log.info("backend {backend} of {service}: {action}, now {admin_state}, weight {weight}", {
      event: "backend_admin",
      action: action.action,
      ...reply,
    });
    return { ok: true, ...reply };
  };
  return [["backend_list", list], ["backend_set", set]];
}
