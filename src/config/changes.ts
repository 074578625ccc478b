/**
 * What a new config changes against the running one: services added,
 * removed or changed, backends added, removed or changed. Pure, for the reload's
 * log line and the one `bal graceful` prints.
 *
 * @module
 */
import { allBackends, type Backend, type Config } from "./schema.ts";
import { firstFew } from "../text.ts";

/** Names of services, and backend ids (`service/host:port`; a single service: `host:port`). */
export interface ConfigChanges {
  services_added: string[];
  services_removed: string[];
  services_changed: string[];
  added: string[];
  removed: string[];
  /** Backends in both whose own settings (weight, backup, limits, PROXY header) differ. */
  changed: string[];
}

/** What `after` changes against `before`. */
export function configChanges(before: Config, after: Config): ConfigChanges {
  const diff = (old: string[], now: string[]) => {
    const had = new Set(old);
    const has = new Set(now);
    return { added: now.filter((x) => !had.has(x)), removed: old.filter((x) => !has.has(x)) };
  };
  const ids = (c: Config) => allBackends(c).map((b) => c.single ? b.address : b.id);
  const services = diff(before.services.map((s) => s.name), after.services.map((s) => s.name));
  // Backends are told apart below: "changed" is about a service's own settings.
  const settings = (s: unknown) => JSON.stringify(s, (k, v) => k === "backends" ? undefined : v);
  const changed = after.services.filter((s) => {
    const old = before.services.find((o) => o.name === s.name);
    return old !== undefined && settings(old) !== settings(s);
  }).map((s) => s.name);
  return {
    ...diff(ids(before), ids(after)),
    changed: changedBackends(before, after, ids),
    services_added: services.added,
    services_removed: services.removed,
    services_changed: changed,
  };
}

/** A backend's own settings, as the file sets them. */
const ownSettings = (b: Backend) =>
  JSON.stringify([b.weight, b.backup, b.max_connections, b.send_proxy, b.bandwidth]);

/** Ids (as `ids` names them) of backends in both configs whose own settings differ. */
function changedBackends(before: Config, after: Config, ids: (c: Config) => string[]): string[] {
  const old = new Map<string, Backend>();
  const named = ids(before);
  allBackends(before).forEach((b, i) => old.set(named[i], b));
  const now = allBackends(after);
  return ids(after).filter((id, i) => {
    const was = old.get(id);
    return was !== undefined && ownSettings(was) !== ownSettings(now[i]);
  });
}

/**
 * The changes in one line, `no change` when there are none: `services added:
 * api; backends added: 10.0.0.3:80, 10.0.0.4:80` (long lists cut to a few
 * and a count). `single`: both configs are of the single-service form.
 */
export function describeChanges(c: ConfigChanges, single = false): string {
  const listed = (what: string, items: string[]) =>
    items.length > 0 ? [`${what}: ${firstFew(items)}`] : [];
  const said = [
    ...listed("services added", c.services_added),
    ...listed("services removed", c.services_removed),
    // The single-service form's one service has no name the user wrote.
    ...(single
      ? (c.services_changed.length > 0 ? ["settings changed"] : [])
      : listed("services changed", c.services_changed)),
    ...listed("backends added", c.added),
    ...listed("backends removed", c.removed),
    ...listed("backends changed", c.changed),
  ];
  return said.length === 0 ? "no change" : said.join("; ");
}
