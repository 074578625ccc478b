/**
 * The layer order of src/ (docs/architecture.md, "Layers") holds: no module
 * imports from a layer below its own in that list, and no two files import
 * each other, directly or around a loop (issue 23).
 */
import assert from "node:assert/strict";
import { ROOT } from "../helpers.ts";

/** Layers from the bottom up, each with the paths (folders end in /) it holds. */
function readLayers(): { name: string; paths: string[] }[] {
  const doc = Deno.readTextFileSync(`${ROOT}docs/architecture.md`);
  const block = /```layers\n([\s\S]*?)```/.exec(doc);
  assert.ok(block, "docs/architecture.md has a ```layers block");
  return block[1].trim().split("\n").map((line) => {
    const [name, ...paths] = line.trim().split(/\s+/);
    return { name, paths };
  });
}

/** The layer index of `file` (relative to the repository): its longest matching path. */
function layerOf(layers: { paths: string[] }[], file: string): number {
  let best = -1;
  let length = -1;
  layers.forEach((layer, i) => {
    for (const p of layer.paths) {
      const hit = p.endsWith("/") ? file.startsWith(p) : file === p;
      if (hit && p.length > length) [best, length] = [i, p.length];
    }
  });
  return best;
}

/** Every .ts file under src/, relative to the repository. */
function sources(dir = "src"): string[] {
  return [...Deno.readDirSync(`${ROOT}${dir}`)].flatMap((e) =>
    e.isDirectory ? sources(`${dir}/${e.name}`) : e.name.endsWith(".ts") ? [`${dir}/${e.name}`] : []
  );
}

/**
 * The relative imports (static, re-exports and, unless `loaded`, dynamic
 * ones and types) of `file`, resolved. `loaded`: only what loading the file
 * loads at once (no `import type`, no `import()`), bare specifiers too.
 */
function importsOf(file: string, loaded = false): string[] {
  const text = Deno.readTextFileSync(`${ROOT}${file}`);
  const statics = loaded
    ? /^(?:import|export)\s(?!type\b)[^;]*?from\s+"([^"]+)"/gms
    : /^(?:import|export)\s[^;]*?from\s+"(\.[^"]+)"/gms;
  const specs = [
    ...text.matchAll(statics),
    ...(loaded ? [] : text.matchAll(/import\(\s*"(\.[^"]+)"\s*\)/g)),
  ].map((m) => m[1]);
  if (loaded) {
    const dir = file.slice(0, file.lastIndexOf("/"));
    return specs.map((s) =>
      s.startsWith(".") ? new URL(s, `file:///${dir}/`).pathname.slice(1) : s
    );
  }
  const dir = file.slice(0, file.lastIndexOf("/"));
  return specs.filter((s) => s.endsWith(".ts")).map((s) =>
    new URL(s, `file:///${dir}/`).pathname.slice(1)
  );
}

/** Imports that go down the layer list: "from (layer) -> to (layer)". */
function violations(
  layers: { name: string; paths: string[] }[],
  edges: [string, string][],
): string[] {
  return edges.flatMap(([from, to]) => {
    const [a, b] = [layerOf(layers, from), layerOf(layers, to)];
    return b > a ? [`${from} (${layers[a].name}) imports ${to} (${layers[b].name})`] : [];
  });
}

/** Files on an import cycle (Tarjan's strongly connected components of more than one file). */
function cycles(edges: [string, string][]): string[][] {
  const next = new Map<string, string[]>();
  for (const [a, b] of edges) next.set(a, [...(next.get(a) ?? []), b]);
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const found: string[][] = [];
  let counter = 0;
  const visit = (v: string) => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    on.add(v);
    for (const w of next.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const group: string[] = [];
      for (let w = stack.pop()!;; w = stack.pop()!) {
        on.delete(w);
        group.push(w);
        if (w === v) break;
      }
      if (group.length > 1) found.push(group.sort());
    }
  };
  for (const v of next.keys()) if (!index.has(v)) visit(v);
  return found;
}

Deno.test("layers: every file of src/ has a layer, no import goes down the list, no import cycle", () => {
  const layers = readLayers();
  const files = sources();
  assert.deepEqual(files.filter((f) => layerOf(layers, f) < 0), [], "files with no layer");
  const edges = files.flatMap((f) => importsOf(f).map((t): [string, string] => [f, t]));
  assert.deepEqual(violations(layers, edges), []);
  assert.deepEqual(cycles(edges), []);
});

Deno.test("layers: the check itself catches an import that goes down, and a loop", () => {
  const layers = readLayers();
  assert.deepEqual(violations(layers, [["src/text.ts", "src/cli/commands.ts"]]), [
    "src/text.ts (base) imports src/cli/commands.ts (cli)",
  ]);
  assert.deepEqual(violations(layers, [["src/cli/commands.ts", "src/text.ts"]]), []);
  assert.deepEqual(cycles([["a", "b"], ["b", "c"], ["c", "a"], ["c", "d"]]), [["a", "b", "c"]]);
});

/** Every module loading `starts` loads at once, following static imports. */
function loadedBy(...starts: string[]): Set<string> {
  const seen = new Set<string>();
  const queue = [...starts];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    if (file.startsWith("src/")) queue.push(...importsOf(file, true));
  }
  return seen;
}

Deno.test("layers: bal status loads no YAML parser or config checker; a data-plane worker neither", () => {
  // cli/commands.ts loads a command's module when the command runs: status brings src/cli/status.ts.
  const status = loadedBy("src/main.ts", "src/cli/status.ts");
  const worker = loadedBy("src/engine/workers/dataplane.ts");
  for (const [what, modules] of [["bal status", status], ["a worker", worker]] as const) {
    assert.ok(!modules.has("js-yaml"), `${what} loads js-yaml`);
    assert.ok(!modules.has("src/config/check.ts"), `${what} loads the config checker`);
  }
  // Before the layers were fixed: 40 modules for bal status, 55 for a worker (js-yaml in both);
  // a worker since holds all three engines (56 modules), to start whichever it is told, and
  // traffic shaping's four small modules (buckets, gates, the mirror and its choice: 64), and
  // the epoll engine's TLS on OpenSSL (the FFI module and the handshake step: 67).
  assert.ok(status.size < 30, `bal status loads ${status.size} modules`);
  assert.ok(worker.size < 68, `a worker loads ${worker.size} modules`);
});

/**
 * File names shared on purpose (docs/architecture.md, "Names"): a folder's
 * exports, each engine's own parts (one per engine folder, beside the
 * interface), and a command in cli/ named for the module it runs.
 */
const ENGINE_PARTS = ["engine.ts", "relay.ts", "preface_read.ts", "loop.ts", "self_check.ts"];

function sharedOnPurpose(name: string, paths: string[]): boolean {
  if (name === "mod.ts") return true;
  if (ENGINE_PARTS.includes(name)) {
    return paths.every((p) => p.startsWith("src/engine/"));
  }
  return paths.filter((p) => !p.startsWith("src/cli/")).length === 1;
}

Deno.test("names: a file name means one thing across src/", () => {
  const byName = Map.groupBy(sources(), (f) => f.slice(f.lastIndexOf("/") + 1));
  const reused = [...byName].filter(([name, paths]) =>
    paths.length > 1 && !sharedOnPurpose(name, paths)
  );
  assert.deepEqual(reused, []);
  assert.equal(sharedOnPurpose("http.ts", ["src/admin/http.ts", "src/health/http.ts"]), false);
});
