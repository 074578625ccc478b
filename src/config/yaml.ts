/**
 * YAML to a small syntax tree with positions, so every config error can say
 * line and column. Parsing is js-yaml's (pure ESM: about 2 ms and 4 MB at
 * start-up, where the `yaml` package cost 39 ms and 14 MB through Deno's
 * Node compatibility layer); js-yaml gives values without positions, so the
 * tree is rebuilt from its listener, which hears each node open (at its
 * offset) and close (with its value).
 *
 * @module
 */
// @ts-types="@types/js-yaml"
import { CORE_SCHEMA, load, type State } from "js-yaml";

/** A scalar: string, number, boolean or null. */
export interface Scalar {
  readonly kind: "scalar";
  readonly value: unknown;
  /** Offsets of its first character and past its end. */
  readonly range: readonly [number, number];
}

/** One key of a mapping and its value (null: nothing after the colon). */
export interface Pair {
  readonly kind: "pair";
  readonly key: Node;
  readonly value: Node | null;
}

/** A mapping, its pairs in file order. */
export interface YamlMap {
  readonly kind: "map";
  readonly items: readonly Pair[];
  readonly range: readonly [number, number];
}

/** A sequence, its items in file order. */
export interface YamlSeq {
  readonly kind: "seq";
  readonly items: readonly Node[];
  readonly range: readonly [number, number];
}

/** A node of the tree. */
export type Node = Scalar | YamlMap | YamlSeq;

/** Whether `n` is a mapping. */
export function isMap(n: unknown): n is YamlMap {
  return (n as Node | null)?.kind === "map";
}

/** Whether `n` is a sequence. */
export function isSeq(n: unknown): n is YamlSeq {
  return (n as Node | null)?.kind === "seq";
}

/** Whether `n` is a scalar. */
export function isScalar(n: unknown): n is Scalar {
  return (n as Node | null)?.kind === "scalar";
}

/** Whether `n` is a key/value pair. */
export function isPair(n: unknown): n is Pair {
  return (n as Pair | null)?.kind === "pair";
}

/** A document that did not parse: the offset of the problem and js-yaml's reason. */
export interface YamlError {
  offset: number;
  reason: string;
}

/** The tree of one YAML document (null when it holds nothing), or why it does not parse. */
export function parseYaml(text: string): { root: Node | null } | { error: YamlError } {
  const frames: Frame[] = [{ start: 0, children: [] }];
  const listener = (event: "open" | "close", state: State) => {
    if (event === "open") return void frames.push({ start: state.position, children: [] });
    const frame = frames.pop()!;
    const node = nodeOf(text, frame, state);
    frames[frames.length - 1].children.push({ node, result: state.result });
  };
  try {
    load(text, { schema: CORE_SCHEMA, listener, json: false });
  } catch (e) {
    const mark = (e as { mark?: { position: number } }).mark;
    const reason = (e as { reason?: string }).reason ?? (e as Error).message ?? String(e);
    return { error: { offset: mark?.position ?? 0, reason } };
  }
  const root = frames[0].children.at(-1)?.node ?? null;
  // Nothing but blanks and comments.
  return { root: isScalar(root) && root.value === null ? null : root };
}

/** A node being read: where it opened, and the nodes closed inside it with their values. */
interface Frame {
  start: number;
  children: { node: Node; result: unknown }[];
}

/** The node a frame closed as: its children paired or listed, or a scalar. */
function nodeOf(text: string, frame: Frame, state: State): Node {
  // A node composed through another (a block sequence's entry, a tagged one)
  // closes with the very value of the one inside: it is that node.
  const only = frame.children.length === 1 ? frame.children[0] : null;
  if (only && only.result === state.result) return only.node;
  const children = frame.children.map((c) => c.node);
  const start = skipBlank(text, frame.start, state.result !== null);
  const range = [start, state.position] as const;
  if (state.kind === "mapping") {
    const items: Pair[] = [];
    for (let i = 0; i + 1 < children.length; i += 2) {
      items.push({ kind: "pair", key: children[i], value: children[i + 1] });
    }
    return { kind: "map", items, range };
  }
  if (state.kind === "sequence") return { kind: "seq", items: children, range };
  return { kind: "scalar", value: state.result ?? null, range };
}

/**
 * Where a node's text starts: js-yaml opens a node before the blanks and
 * comments ahead of it. An empty node stays put (on its key's line).
 */
function skipBlank(text: string, at: number, hasValue: boolean): number {
  let i = at;
  for (;;) {
    const c = text[i];
    if (c === " " || c === "\t" || (hasValue && (c === "\n" || c === "\r"))) i++;
    else if (hasValue && c === "#") { while (i < text.length && text[i] !== "\n") i++; }
    else return i;
  }
}

/** 1-based line and column of an offset. */
export function linePos(text: string, offset: number): { line: number; col: number } {
  let line = 1;
  let start = 0;
  for (let i = text.indexOf("\n"); i >= 0 && i < offset; i = text.indexOf("\n", i + 1)) {
    line++;
    start = i + 1;
  }
  return { line, col: offset - start + 1 };
}

/** The plain value of a YAML text (no positions), as the config checker reads it; throws on bad YAML. */
export function plainYaml(text: string): unknown {
  return load(text, { schema: CORE_SCHEMA, json: false });
}
