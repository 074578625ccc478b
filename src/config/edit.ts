/**
 * Changes to the config file made in place: a backend or a service added,
 * replaced or removed, a backend's weight set. Only the lines a change
 * touches are rewritten: comments, key order, quoting and blank lines
 * elsewhere stay byte for byte. The `yaml` package finds each node and its
 * offsets and writes the new nodes; this module splices them into the text.
 * Pure: text in, text out. It is loaded only when a change is asked for:
 * the `yaml` package costs about 80 ms and 11 MB (Deno's Node compatibility
 * layer) the first time, which start-up and the other commands never pay.
 *
 * @module
 */
import {
  isMap,
  isScalar,
  isSeq,
  type Node,
  type Pair,
  parseDocument,
  stringify,
  type YAMLMap,
  type YAMLSeq,
} from "yaml";
import { addressKey, normalizeHost } from "../net/address.ts";
import { PORT_RULE } from "./backends.ts";

/** One change to the file. Backends are named `HOST:PORT`. */
export type ConfigEdit =
  | { op: "add_backend"; service: string; backend: Record<string, unknown> }
  | { op: "remove_backend"; service: string; backend: string }
  | { op: "set_weight"; service: string; backend: string; weight: number }
  | { op: "add_service"; service: Record<string, unknown> }
  | { op: "replace_service"; name: string; service: Record<string, unknown> }
  | { op: "remove_service"; name: string };

/**
 * The edit a request asks for (`{op, ...}` as {@link ConfigEdit} spells
 * it), or why it is not one. Names are checked here; values are left to
 * the config's own check.
 */
export function editOf(value: unknown): ConfigEdit | string {
  const v = (typeof value === "object" && value !== null ? value : {}) as Record<string, unknown>;
  const str = (k: string) => typeof v[k] === "string" && (v[k] as string).length > 0;
  const obj = (k: string) => typeof v[k] === "object" && v[k] !== null && !Array.isArray(v[k]);
  const need: Record<string, () => boolean> = {
    add_backend: () => str("service") && obj("backend"),
    remove_backend: () => str("service") && str("backend"),
    set_weight: () => str("service") && str("backend") && Number.isInteger(v.weight),
    add_service: () => obj("service"),
    replace_service: () => str("name") && obj("service"),
    remove_service: () => str("name"),
  };
  const op = typeof v.op === "string" ? v.op : "";
  if (!(op in need)) {
    return `unknown op ${JSON.stringify(v.op)}; known: ${Object.keys(need).join(", ")}`;
  }
  if (!need[op]()) return `${op}: missing or mistyped fields in ${JSON.stringify(value)}`;
  return v as unknown as ConfigEdit;
}

/** Why a change cannot be made, with the HTTP status that says so. */
export class EditError extends Error {
  /** 400: the request is wrong; 404: what it names is not there; 409: the file's form forbids it. */
  readonly status: 400 | 404 | 409;
  constructor(status: 400 | 404 | 409, message: string) {
    super(message);
    this.name = "EditError";
    this.status = status;
  }
}

/** The text with `edit` made; throws {@link EditError}. */
export function editConfig(text: string, edit: ConfigEdit): string {
  const doc = parseDocument(text);
  if (doc.errors.length > 0 || !isMap(doc.contents)) {
    throw new EditError(409, "the config file is not a valid YAML mapping; fix it and reload");
  }
  const root = doc.contents;
  switch (edit.op) {
    case "add_backend":
      return addBackend(text, serviceIn(root, edit.service).map, edit.backend);
    case "remove_backend": {
      const { seq, index } = backendIn(serviceIn(root, edit.service).map, edit);
      return removeItem(text, seq, index);
    }
    case "set_weight":
      return setWeight(text, backendIn(serviceIn(root, edit.service).map, edit), edit.weight);
    case "add_service":
      return addService(text, root, edit.service);
    case "replace_service": {
      const { seq, index } = serviceIn(root, edit.name);
      if (!seq) throw singleForm();
      return replaceItem(text, seq, index, edit.service);
    }
    case "remove_service": {
      const { seq, index } = serviceIn(root, edit.name);
      if (!seq) throw singleForm();
      if (seq.items.length === 1) throw new EditError(409, `${edit.name} is the only service`);
      return removeItem(text, seq, index);
    }
  }
}

function singleForm(): EditError {
  return new EditError(
    409,
    "the file uses the single-service form (top-level port and backends); write it as a `services:` list to add or remove services",
  );
}

/** A service's mapping, and where it sits in `services:` (absent in the single-service form). */
interface Located {
  map: YAMLMap;
  seq?: YAMLSeq;
  index: number;
}

function serviceIn(root: YAMLMap, name: string): Located {
  const list = root.get("services", true);
  if (!isSeq(list)) {
    if (name === "default") return { map: root, index: 0 };
    throw new EditError(
      404,
      `no service ${JSON.stringify(name)}; this file's one service is default`,
    );
  }
  const index = list.items.findIndex((s) => isMap(s) && s.get("name") === name);
  if (index < 0) {
    const known = list.items.map((s) => (isMap(s) ? s.get("name") : "?")).join(", ");
    throw new EditError(404, `no service ${JSON.stringify(name)}; known: ${known}`);
  }
  return { map: list.items[index] as YAMLMap, seq: list, index };
}

/** The address a `backends:` entry names, or null for one that discovery fills in. */
function entryKey(item: unknown): string | null {
  if (isScalar(item)) return typeof item.value === "string" ? addressKey(item.value) : null;
  if (!isMap(item) || typeof item.get("host") !== "string") return null;
  const port = item.get("port") ?? PORT_RULE.default;
  return `${normalizeHost(item.get("host") as string)}|${Number(port)}`;
}

function backendIn(
  service: YAMLMap,
  edit: { service: string; backend: string },
): { seq: YAMLSeq; index: number } {
  const key = addressKey(edit.backend);
  if (key === null) {
    throw new EditError(400, `expected HOST:PORT, got ${JSON.stringify(edit.backend)}`);
  }
  const seq = service.get("backends", true);
  const index = isSeq(seq) ? seq.items.findIndex((item) => entryKey(item) === key) : -1;
  if (!isSeq(seq) || index < 0) {
    throw new EditError(
      404,
      `service ${edit.service} has no backend ${edit.backend} in its backends: list`,
    );
  }
  return { seq, index };
}

function addBackend(text: string, service: YAMLMap, backend: Record<string, unknown>): string {
  const host = backend.host, port = backend.port ?? PORT_RULE.default;
  const key = typeof host === "string" ? addressKey(`${host}:${port}`) : null;
  const seq = service.get("backends", true);
  if (key !== null && isSeq(seq) && seq.items.some((item) => entryKey(item) === key)) {
    throw new EditError(400, `backends: ${host}:${port} is already a backend of this service`);
  }
  if (isSeq(seq)) return appendItem(text, seq, backend);
  return addKey(text, service, "backends", [backend]);
}

function addService(text: string, root: YAMLMap, service: Record<string, unknown>): string {
  const list = root.get("services", true);
  if (!isSeq(list)) throw singleForm();
  if (list.items.some((s) => isMap(s) && s.get("name") === service.name)) {
    throw new EditError(400, `services: a service named ${JSON.stringify(service.name)} exists`);
  }
  return appendItem(text, list, service);
}

/** The text of `value` as a flow collection on one line. */
function flowText(value: unknown): string {
  return stringify(value, { collectionStyle: "flow", lineWidth: 0 }).trimEnd();
}

/** The text of `value` in block style, its later lines indented by `indent` columns. */
function blockText(value: unknown, indent: number): string {
  const lines = stringify(value, { lineWidth: 0 }).trimEnd().split("\n");
  return lines.join(`\n${" ".repeat(indent)}`);
}

/** Where a node's own text ends: block collections end with their last value, not the comments after. */
function endOf(node: unknown): number {
  if (isSeq(node) && !node.flow && node.items.length > 0) return endOf(node.items.at(-1));
  if (isMap(node) && !node.flow && node.items.length > 0) {
    const last = node.items.at(-1) as Pair;
    return endOf(last.value ?? last.key);
  }
  return (node as Node).range![1];
}

function startOf(node: unknown): number {
  return (node as Node).range![0];
}

function lineStart(text: string, at: number): number {
  return text.lastIndexOf("\n", at - 1) + 1;
}

/** Past the newline that ends the line holding `at - 1` (the text's end if none). */
function lineEnd(text: string, at: number): number {
  const nl = text.indexOf("\n", Math.max(at - 1, 0));
  return nl < 0 ? text.length : nl + 1;
}

function splice(text: string, at: number, end: number, insert: string): string {
  return text.slice(0, at) + insert + text.slice(end);
}

/** Inserts whole lines at `at` (a line start, or the end of a text without a final newline). */
function insertLines(text: string, at: number, lines: string): string {
  const lead = at > 0 && text[at - 1] !== "\n" ? "\n" : "";
  return splice(text, at, at, `${lead}${lines}\n`);
}

function appendItem(text: string, seq: YAMLSeq, value: unknown): string {
  if (seq.flow) {
    const last = seq.items.at(-1);
    if (last) return splice(text, endOf(last), endOf(last), `, ${flowText(value)}`);
    const open = text.indexOf("[", startOf(seq));
    return splice(text, open + 1, open + 1, flowText(value));
  }
  const last = seq.items.at(-1)!;
  const dash = text.lastIndexOf("-", startOf(last));
  const indent = dash - lineStart(text, dash);
  const item = isMap(last) && !last.flow ? blockText(value, indent + 2) : flowText(value);
  return insertLines(text, lineEnd(text, endOf(last)), `${" ".repeat(indent)}- ${item}`);
}

function removeItem(text: string, seq: YAMLSeq, index: number): string {
  const item = seq.items[index];
  if (seq.flow) {
    const next = seq.items[index + 1], prev = seq.items[index - 1];
    if (next) return splice(text, startOf(item), startOf(next), "");
    return splice(text, prev ? endOf(prev) : startOf(item), endOf(item), "");
  }
  return splice(text, lineStart(text, startOf(item)), lineEnd(text, endOf(item)), "");
}

function replaceItem(text: string, seq: YAMLSeq, index: number, value: unknown): string {
  const item = seq.items[index];
  const at = startOf(item);
  if (seq.flow || (isMap(item) && item.flow)) return splice(text, at, endOf(item), flowText(value));
  // A comment after the item's last line went with the item.
  const end = lineEnd(text, endOf(item));
  const newline = text[end - 1] === "\n" ? 1 : 0;
  return splice(text, at, end - newline, blockText(value, at - lineStart(text, at)));
}

/** Adds `key: value` to a mapping that lacks it. */
function addKey(text: string, map: YAMLMap, key: string, value: unknown): string {
  if (map.flow) {
    const last = map.items.at(-1);
    const at = last ? endOf(last.value ?? last.key) : text.indexOf("{", startOf(map)) + 1;
    return splice(text, at, at, `${last ? ", " : ""}${key}: ${flowText(value)}`);
  }
  const at = startOf(map);
  const indent = at - lineStart(text, at);
  const body = blockText({ [key]: value }, indent);
  return insertLines(text, lineEnd(text, endOf(map)), `${" ".repeat(indent)}${body}`);
}

function setWeight(text: string, found: { seq: YAMLSeq; index: number }, weight: number): string {
  const item = found.seq.items[found.index];
  if (isScalar(item)) {
    const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(String(item.value).trim())!;
    const host = m[1].startsWith("[") ? m[1].slice(1, -1) : m[1];
    const entry = flowText({ host, port: Number(m[2]), weight });
    return splice(text, startOf(item), endOf(item), entry);
  }
  const map = item as YAMLMap;
  const pair = map.items.find((p) => isScalar(p.key) && p.key.value === "weight");
  if (pair?.value) return splice(text, startOf(pair.value), endOf(pair.value), String(weight));
  return addKey(text, map, "weight", weight);
}
