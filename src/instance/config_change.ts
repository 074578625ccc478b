/**
 * Changes from code (the HTTP API and `bal backend add`, `bal service
 * add`...): made in the config file's text in place, checked as `bal check`
 * checks, written atomically and applied as a reload is, one at a time and
 * in the queue reloads wait in, each logged as `config_changed` with who
 * asked. The file stays the truth: a change is refused when the file
 * differs from what bal last loaded, and undone when it cannot be applied.
 *
 * @module
 */
import { checkConfig } from "../config/mod.ts";
import { plainYaml } from "../config/yaml.ts";
import type { ConfigEdit } from "../config/edit.ts";
import { describeError, ioReason } from "../errors.ts";
import { logger } from "../log.ts";
import { addressKey } from "../net/address.ts";
import type { Command } from "../admin/registry.ts";
import type { ServiceStatus } from "./status_report.ts";
import type { Running } from "./running.ts";
import { reload } from "./reload.ts";
import { statusOf } from "./observe.ts";

const log = logger("server");

/** A refusal: the HTTP status that says it and, for a config that fails its check, every error. */
export interface Refusal {
  error: string;
  status: 400 | 404 | 409 | 500;
  errors?: { key_path: string; message: string; line?: number; col?: number }[];
}

/** What a change answers when it was made. */
export interface Changed {
  ok: true;
  /** What changed, in words. */
  change: string;
  /** The file it was written into. */
  saved: string;
  generation: number;
  /** The service changed (absent once removed), as `GET /api/services/{name}` shows it. */
  service?: ServiceView;
}

/** A service as configured (the file's own keys) and as it runs. */
export interface ServiceView {
  name: string;
  config: Record<string, unknown>;
  live: ServiceStatus | null;
}

/**
 * Makes `edit` after every reload and change asked for before it; `who`
 * is logged with it (a token's name, or the control socket peer's uid).
 */
export function queueChange(
  running: Running,
  request: unknown,
  who: string,
): Promise<Changed | Refusal> {
  const outcome = running.reloading.then(() => change(running, request, who));
  running.reloading = outcome.then(() => {}, () => {});
  return outcome.catch((err): Refusal => ({
    error: `the change failed: ${describeError(err)}`,
    status: 500,
  }));
}

async function change(running: Running, request: unknown, who: string): Promise<Changed | Refusal> {
  const { editConfig, editOf, EditError } = await import("../config/edit.ts");
  const edit = editOf(request);
  if (typeof edit === "string") return { error: edit, status: 400 };
  const path = running.options.configPath;
  const before = await Deno.readTextFile(path);
  if (before !== running.declaredText) {
    return {
      error:
        `${path} changed on disk since bal loaded it: apply it first (bal graceful), or fix it and retry; nothing was changed`,
      status: 409,
    };
  }
  const discovered = discoveredBackend(running, edit);
  if (discovered) return { error: discovered, status: 409 };
  let after: string;
  try {
    after = editConfig(before, edit);
  } catch (err) {
    if (err instanceof EditError) return { error: err.message, status: err.status };
    throw err;
  }
  const checked = checkConfig(after, path);
  if (!checked.ok) {
    const messages = checked.errors.map((e) => e.message);
    return {
      error: `the change would make an invalid config:${
        messages.length === 1 ? ` ${messages[0]}` : `\n${messages.join("\n")}`
      }`,
      status: 400,
      errors: checked.errors.map((e) => ({
        key_path: e.keyPath,
        message: e.message,
        line: e.location.line,
        col: e.location.col,
      })),
    };
  }
  try {
    await writeAtomically(path, after);
  } catch (err) {
    return {
      error: `cannot save the change into ${path}: ${ioReason(err)}; nothing was changed`,
      status: 409,
    };
  }
  const outcome = await reload(running);
  if (!outcome.ok) {
    await writeAtomically(path, before);
    return { error: `not applied, the file is as it was: ${outcome.error}`, status: 409 };
  }
  return await recordChange(running, edit, who);
}

async function recordChange(running: Running, edit: ConfigEdit, who: string): Promise<Changed> {
  const path = running.options.configPath;
  const described = describeEdit(edit);
  running.lastChange = { at: new Date().toISOString(), who, change: described };
  const generation = running.runtime.snapshot.generation;
  log.info("config changed by {who}: {change}; saved in {file}", {
    event: "config_changed",
    who,
    change: described,
    file: path,
    generation,
  });
  // The service as it is now: a replaced one under the name its body gave.
  const views = "service" in edit ? await serviceViews(running, serviceName(edit.service)) : [];
  return { ok: true, change: described, saved: path, generation, service: views[0] };
}

function serviceName(service: string | Record<string, unknown>): string {
  return typeof service === "string" ? service : String(service.name);
}

/** A change in words, as logged and answered. */
export function describeEdit(edit: ConfigEdit): string {
  switch (edit.op) {
    case "add_backend":
      return `added backend ${edit.backend.host}:${edit.backend.port} to ${edit.service}`;
    case "remove_backend":
      return `removed backend ${edit.backend} from ${edit.service}`;
    case "set_weight":
      return `set the weight of ${edit.backend} in ${edit.service} to ${edit.weight}`;
    case "add_service":
      return `added service ${edit.service.name}`;
    case "replace_service":
      return `replaced service ${edit.name}`;
    case "remove_service":
      return `removed service ${edit.name}`;
  }
}

/** Why a backend change must go to discovery instead, or null. */
function discoveredBackend(running: Running, edit: ConfigEdit): string | null {
  if (edit.op !== "remove_backend" && edit.op !== "set_weight") return null;
  const key = addressKey(edit.backend);
  const service = running.runtime.snapshot.services.get(edit.service);
  const found = service?.backends.find((b) => addressKey(b.address) === key);
  if (!found || found.source === "static") return null;
  return `${edit.backend} of ${edit.service} comes from ${found.source} discovery (${
    found.origin ?? "its source"
  }): change the source instead`;
}

/** Writes `text` to a temporary file beside `path`, synced, then renames it over `path`. */
async function writeAtomically(path: string, text: string): Promise<void> {
  const slash = path.lastIndexOf("/");
  const temp = `${path.slice(0, slash + 1)}.${path.slice(slash + 1)}.${Deno.pid}.tmp`;
  const mode = (await Deno.stat(path)).mode ?? 0o644;
  try {
    const file = await Deno.open(temp, { write: true, create: true, truncate: true, mode });
    try {
      const bytes = new TextEncoder().encode(text);
      for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.chmod(temp, mode & 0o7777);
    await Deno.rename(temp, path);
  } catch (err) {
    await Deno.remove(temp).catch(() => {});
    throw err;
  }
}

/** The services as configured and live; only `name` when given. */
export async function serviceViews(running: Running, name?: string): Promise<ServiceView[]> {
  const status = await statusOf(running);
  const raw = plainYaml(running.declaredText) as Record<string, unknown>;
  const configured = running.declared.single
    ? [{ ...singleKeys(raw), name: "default" }]
    : (raw.services as Record<string, unknown>[]);
  return configured
    .filter((c) => name === undefined || c.name === name)
    .map((c) => ({
      name: String(c.name),
      config: c,
      live: status.services?.find((s) => s.name === c.name) ?? null,
    }));
}

/** The keys of the single-service form that describe its one service. */
function singleKeys(raw: Record<string, unknown>): Record<string, unknown> {
  const keep = ["port", "bind_address", "method", "backends", "allow", "deny", "routes"];
  const extra = ["send_proxy", "accept_proxy", "proxy_trusted", "default_route", "discovery"];
  const out: Record<string, unknown> = {};
  for (const k of [...keep, ...extra, "health_check", "access_log"]) {
    if (k in raw) out[k] = raw[k];
  }
  return out;
}

/** The `config_change` and `service_list` control commands. */
export function changeCommands(running: Running): [string, Command][] {
  const changeCmd: Command = (request) => {
    // The admin API names the token; the control socket admits only its owner and root, and the
    // uid is the one the CLI says it runs as.
    const who = typeof request.caller === "string"
      ? request.caller
      : `uid ${Number(request.uid)} (control socket)`;
    return queueChange(running, request.edit, who);
  };
  const list: Command = async (request) => {
    const name = typeof request.service === "string" ? request.service : undefined;
    const services = await serviceViews(running, name);
    if (name !== undefined && services.length === 0) {
      return { error: `no service ${JSON.stringify(name)}`, status: 404 };
    }
    return { services };
  };
  return [["config_change", changeCmd], ["service_list", list]];
}
