/**
 * An operator's live control of a backend (`bal backend drain|disable|
 * enable|weight`): its admin state and a weight that overrides the
 * config's. Held by the control plane, copied to every data plane, kept
 * across reloads while the backend stays in the config. Pure.
 *
 * @module
 */
import type { Backend } from "../config/mod.ts";

/** Whether a backend takes new clients: `draining` and `disabled` take none. */
export type AdminState = "enabled" | "draining" | "disabled";

/** An operator's settings for one backend. */
export interface BackendAdmin {
  readonly state: AdminState;
  /** Overrides the config's weight; null keeps it. */
  readonly weight: number | null;
}

/** Operator settings by backend id; a backend absent from it is enabled with its config weight. */
export type AdminTable = Map<string, BackendAdmin>;

/** What an operator asks of one backend. */
export type AdminAction =
  | { action: "drain" }
  | { action: "disable" }
  | { action: "enable" }
  | { action: "weight"; weight: number };

/** The settings of a backend nobody has touched. */
export const ADMIN_DEFAULT: BackendAdmin = Object.freeze({ state: "enabled", weight: null });

/** The settings after `action`. `enable` keeps a weight override; `weight` keeps the state. */
export function applyAdmin(before: BackendAdmin, action: AdminAction): BackendAdmin {
  switch (action.action) {
    case "drain":
      return { ...before, state: "draining" };
    case "disable":
      return { ...before, state: "disabled" };
    case "enable":
      return { ...before, state: "enabled" };
    case "weight":
      return { ...before, weight: action.weight };
  }
}

/** The weight in force for a backend. */
export function weightOf(backend: Backend, admin: BackendAdmin | undefined): number {
  return admin?.weight ?? backend.weight;
}

/** Forgets the settings of backends no longer in the config. */
export function pruneAdmin(table: AdminTable, ids: ReadonlySet<string>): void {
  for (const id of table.keys()) if (!ids.has(id)) table.delete(id);
}
