/**
 * Reading and checking a config file. Pure apart from {@link readConfig}:
 * text in, a frozen {@link Config} or every {@link ConfigError} out, each
 * naming the file, line, column and key path.
 *
 * Two forms are valid: the single-service form (top-level `port`,
 * `bind_address`, `method`, `backends`: one service named `default`), and
 * a `services:` list. Both normalize to the same {@link Config}.
 *
 * @module
 */
import { isMap, isScalar, linePos as offsetPos, type Node, parseYaml } from "./yaml.ts";
import { ConfigError, type ConfigLocation, ioReason } from "../errors.ts";
import { formatAddress, listenersOverlap, reachesListener } from "../net/address.ts";
import { describeNode, enumField, type Field, mapFields, type Report } from "./fields.ts";
import { mergeRuntime, RUNTIME_KEYS, runtimeLayer } from "./runtime.ts";
import { adminOf } from "./admin.ts";
import { resolverOf } from "./discovery.ts";
import type { PemCheck } from "./tls.ts";
import { checkCertificates } from "./certificates.ts";
import { type Notes, type Position, SERVICE_FORM_KEYS, serviceOf, servicesOf } from "./services.ts";
import {
  type Config,
  deepFreeze,
  DEFAULTS,
  ENGINES,
  LOG_LEVELS,
  MAX_WORKERS,
  type Service,
  type Workers,
} from "./schema.ts";

/** The result of checking a config text: a config, or every error found. */
export type ConfigCheck =
  | {
    ok: true;
    config: Config;
    /** What the file left to a default worth a second look (see configWarnings for the rest). */
    warnings: string[];
    /** Where each service's `bind_address` was written (key path to place), for later checks. */
    places: Map<string, ConfigLocation>;
    /** The text checked. */
    text: string;
    /** Certificate, key and CA files read, for {@link readConfig}'s certificate checks. */
    pems: PemCheck[];
  }
  | { ok: false; errors: ConfigError[] };

const TOP_KEYS = [
  ...SERVICE_FORM_KEYS,
  "health_check",
  "access_log",
  "access_log_path",
  "admin",
  "log_level",
  "workers",
  "engine",
  "resolver",
  "runtime",
  "services",
];
/** Keys of configs written for older bal versions, read and ignored. */
const LEGACY_KEYS = ["mode"];

/** Files larger than this are refused before parsing: no config needs it. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

/**
 * Checks a config text and returns the frozen config or every error found,
 * each with the file, key path, line and column.
 */
export function checkConfig(text: string, file: string): ConfigCheck {
  const doc = parseYaml(text);
  const errors: ConfigError[] = [];
  const linePos = (node: Node | null | undefined): { line?: number; col?: number } => {
    const offset = node?.range?.[0];
    return offset === undefined ? {} : offsetPos(text, offset);
  };
  const at: Report = (node, keyPath, reason) =>
    errors.push(new ConfigError({ file, ...linePos(node) }, keyPath, reason));
  const position: Position = (node) => {
    const { line, col } = linePos(node);
    return line === undefined ? "" : `${line}:${col}`;
  };

  if ("error" in doc) {
    const pos = offsetPos(text, doc.error.offset);
    const reason = `invalid YAML: ${yamlReason(doc.error.reason)}`;
    return { ok: false, errors: [new ConfigError({ file, ...pos }, "", reason)] };
  }

  const root = doc.root;
  if (root === null || (isScalar(root) && root.value === null)) {
    at(root, "", "the file is empty; it needs at least a `backends:` list");
    return { ok: false, errors };
  }
  if (!isMap(root)) {
    at(root, "", `expected a mapping of settings, got ${describeNode(root)}`);
    return { ok: false, errors };
  }
  const notes: Notes = {
    warnings: [],
    places: new Map(),
    backendAt: new Map(),
    locate: (node) => ({ file, ...linePos(node) }),
    dir: file.slice(0, file.lastIndexOf("/") + 1),
    pems: [],
  };
  const config = configOf(root, file, at, position, notes);
  if (errors.length > 0) return { ok: false, errors: unique(errors).sort(byPosition) };
  const { warnings, places, pems } = notes;
  return { ok: true, config: deepFreeze(config), warnings, places, text, pems };
}

function configOf(
  root: Node,
  file: string,
  at: Report,
  position: Position,
  notes: Notes,
): Config {
  const fields = mapFields(root, "", TOP_KEYS, at, {
    ignore: LEGACY_KEYS,
    misplaced: (name) => RUNTIME_KEYS.includes(name) ? "; it belongs under `runtime:`" : "",
  });
  const log_level = enumField(
    fields.get("log_level"),
    "log_level",
    LOG_LEVELS,
    DEFAULTS.log_level,
    at,
  );
  const workers = workersField(fields.get("workers"), at);
  const engine = enumField(fields.get("engine"), "engine", ENGINES, DEFAULTS.engine, at);
  const resolver = resolverOf(fields.get("resolver"), at);
  const global = runtimeLayer(fields.get("runtime"), "runtime", at, atTopLevel);
  const servicesField = fields.get("services");
  let services: Service[];
  if (servicesField) {
    for (const key of SERVICE_FORM_KEYS) {
      const f = fields.get(key);
      if (f) at(f.key, key, MIXED_FORMS);
    }
    services = servicesOf(servicesField, global, at, position, notes, (k) => TOP_KEYS.includes(k));
  } else {
    const single = serviceOf(fields, "", DEFAULTS.service, global, root, at, notes);
    services = single ? [single] : [];
  }
  selfLoops(services, !servicesField, notes, at);
  const total = services.reduce((n, s) => n + s.backends.length, 0);
  // The global settings are reported (and validated) once, here; services got their own merge.
  const runtime = mergeRuntime(total, [global], servicesField ? at : () => {});
  const admin = adminOf(fields.get("admin"), at);
  adminClash(admin, services, fields.get("admin"), at);
  const access_log_path = accessLogPath(fields.get("access_log_path"), file, at);
  notes.places.set("access_log_path", notes.locate(fields.get("access_log_path")?.value));
  if (servicesField && fields.get("access_log")) {
    at(
      fields.get("access_log")!.key,
      "access_log",
      MIXED_FORMS.replace("port, bind_address, method and backends", "access_log"),
    );
  }
  return {
    admin,
    access_log_path,
    log_level,
    workers,
    engine,
    resolver,
    runtime,
    services,
    single: !servicesField,
  };
}

/** An admin endpoint on a service's listen address: `start` would fail to open one of them. */
function adminClash(
  admin: Config["admin"],
  services: Service[],
  field: Field | undefined,
  at: Report,
): void {
  const listen = admin.listen;
  if (!listen) return;
  const asListener = { bind_address: listen.host, port: listen.port };
  const clash = services.find((s) => s.protocol === "tcp" && listenersOverlap(s, asListener));
  if (!clash) return;
  const node = isMap(field?.value)
    ? field.value.items.find((p) => isScalar(p.key) && p.key.value === "listen")?.value
    : undefined;
  at(
    node ?? field?.key ?? null,
    "admin.listen",
    `${formatAddress(listen.host, listen.port)} collides with service "${clash.name}" on ${
      formatAddress(clash.bind_address, clash.port)
    }; give the admin endpoint a port of its own`,
  );
}

/**
 * Backends that are bal's own listener: every client sent to one would be
 * accepted again and dialed again, without end (one client became 27,000
 * connections in two seconds).
 */
function selfLoops(services: Service[], single: boolean, notes: Notes, at: Report): void {
  for (const service of services) {
    for (const b of service.backends) {
      const target = services.find((t) => t.protocol === service.protocol && reachesListener(b, t));
      if (!target) continue;
      const where = notes.backendAt.get(b);
      const whose = single ? "bal's own" : `service "${target.name}"'s`;
      at(
        where?.node ?? null,
        where?.path ?? "backends",
        `${b.address} is ${whose} listen address, so every client would loop back into bal without end; point it at the server behind bal`,
      );
    }
  }
}

/** `access_log_path`, made absolute against the config file's directory. */
function accessLogPath(field: Field | undefined, file: string, at: Report): string | null {
  if (!field) return null;
  const v = isScalar(field.value) ? field.value.value : undefined;
  if (typeof v !== "string" || v.trim() === "" || v.endsWith("/")) {
    at(
      field.value ?? field.key,
      "access_log_path",
      `expected a file path, got ${describeNode(field.value)}`,
    );
    return null;
  }
  return v.startsWith("/") ? v : `${file.slice(0, file.lastIndexOf("/") + 1)}${v}`;
}

const MIXED_FORMS =
  "cannot stand beside `services:`; move port, bind_address, method and backends into an entry of services:, e.g. `services: [{name: default, port: 9295, backends: [...]}]`, or remove services: to keep the single-service form";

const atTopLevel = (name: string) =>
  TOP_KEYS.includes(name) && name !== "runtime" ? "; it belongs at the top level" : "";

function workersField(field: Field | undefined, at: Report): Workers {
  if (!field) return DEFAULTS.workers;
  const value = isScalar(field.value) ? field.value.value : undefined;
  if (value === "auto") return "auto";
  if (typeof value === "number" && Number.isInteger(value) && value >= 1 && value <= MAX_WORKERS) {
    return value;
  }
  at(
    field.value ?? field.key,
    "workers",
    `expected "auto" or an integer from 1 to ${MAX_WORKERS}, got ${describeNode(field.value)}`,
  );
  return DEFAULTS.workers;
}

/** Parses and validates a config text, throwing the first {@link ConfigError}. */
export function parseConfig(text: string, file: string): Config {
  const result = checkConfig(text, file);
  if (!result.ok) throw result.errors[0];
  return result.config;
}

/** Reads a config file and checks it; a file that cannot be read is one error. */
export async function readConfig(file: string): Promise<ConfigCheck> {
  let text: string;
  try {
    const info = await Deno.stat(file);
    if (!info.isFile) return fileError(file, "is not a regular file");
    if (info.size > MAX_CONFIG_BYTES) {
      return fileError(file, `is ${info.size} bytes; a config may be at most ${MAX_CONFIG_BYTES}`);
    }
    text = await Deno.readTextFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      return fileError(
        file,
        `not found (give another with -c, or write the commented default there with \`bal init -c ${file}\`)`,
      );
    }
    return fileError(file, `cannot be read: ${ioReason(err)}`);
  }
  const checked = checkConfig(text, file);
  if (!checked.ok) return checked;
  const certified = await checkCertificates(checked);
  return certified.ok ? await withWritableAccessLog(certified) : certified;
}

/**
 * The config, or the error `start` would meet opening its access log: a
 * directory in the way, no permission, a missing parent. A file this
 * creates to find out is removed again.
 */
async function withWritableAccessLog(check: Extract<ConfigCheck, { ok: true }>) {
  const path = check.config.access_log_path;
  if (path === null) return check;
  const existed = await Deno.stat(path).then(() => true, () => false);
  try {
    (await Deno.open(path, { append: true, create: true })).close();
    if (!existed) await Deno.remove(path);
    return check;
  } catch (err) {
    const error = new ConfigError(
      check.places.get("access_log_path")!,
      "access_log_path",
      `cannot write ${path}: ${
        err instanceof Deno.errors.NotFound ? "its directory does not exist" : ioReason(err)
      }`,
    );
    return { ok: false as const, errors: [error] };
  }
}

/** Each error once: a global setting is checked again for every service it applies to. */
function unique(errors: ConfigError[]): ConfigError[] {
  const seen = new Set<string>();
  return errors.filter((e) => !seen.has(e.message) && seen.add(e.message));
}

function byPosition(a: ConfigError, b: ConfigError): number {
  const { line: la = 0, col: ca = 0 } = a.location;
  const { line: lb = 0, col: cb = 0 } = b.location;
  return la - lb || ca - cb;
}

function fileError(file: string, reason: string): ConfigCheck {
  return { ok: false, errors: [new ConfigError({ file }, "", reason)] };
}

/** js-yaml's reason in our words where they are unclear (the position is printed apart). */
function yamlReason(reason: string): string {
  // The parser recurses per nesting level and reports its own stack overflow.
  if (reason.includes("call stack")) return "nested too deeply";
  if (reason.includes("single document")) {
    return "the file holds several YAML documents (a second `---`); a config is one document";
  }
  if (reason.includes("duplicated mapping key")) return "the same key twice in one mapping";
  const line = reason.split("\n")[0];
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}
