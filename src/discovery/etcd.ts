/**
 * Backends from etcd: every key under a service's prefix is a backend
 * (value `{"host": ..., "port": ..., "weight": ...}`), read once and then
 * watched, so every bal watching the same prefix converges on the same set
 * as soon as etcd says so. Through etcd's HTTP/JSON gateway with `fetch`:
 * measured here, the gRPC client from npm (`etcd3`) took 480 ms and 74 MB
 * to start and list a prefix, `fetch` 110 ms and 34 MB (a bare Deno: 60 ms,
 * 28 MB). This module is loaded only when a config uses etcd.
 *
 * etcd unreachable, or the prefix emptied: the last known set stays (unless
 * `discovery: {allow_empty: true}`, the same rule as DNS), bal reconnects with
 * backoff (trying each endpoint in turn), status says `failing` and the log
 * says it once per episode. Every change the watch brings moves status's
 * "as of" time.
 *
 * @module
 */
import type { Config, Discovered } from "../config/mod.ts";
import { logger } from "../log.ts";
import {
  byAddress,
  type DiscoverySource,
  emptyRefused,
  type EntryState,
  entryStatus,
  lookupAnswered,
  lookupFailed,
} from "./entry.ts";
import { entryKey, type Target } from "./expand.ts";

const log = logger("discovery");

/** Backoff between reconnections: doubling from the first to the last. */
const RETRY_MS = [200, 5000] as const;

/** One prefix being watched. */
interface Watch extends EntryState {
  /** Keys under the prefix and the target each names. */
  keys: Map<string, Target>;
  /** The set last put in force, or null before the first. */
  published: Target[] | null;
  abort: AbortController;
}

/** Watches `config`'s etcd prefixes; targets go into `known`, `changed` hears of each change. */
export function startEtcdDiscovery(
  config: Config,
  known: Map<string, readonly Target[]>,
  changed: () => void,
): DiscoverySource {
  const watches = new Map<string, Watch>();
  const discovery: DiscoverySource = {
    follow(next) {
      const wanted = new Map(
        next.services.flatMap((s) =>
          s.discovered.filter((d) => d.kind === "etcd").map((d) => [entryKey(d.template), d])
        ),
      );
      for (const [key, w] of watches) {
        if (wanted.has(key) && sameSource(wanted.get(key)!, w.entry)) continue;
        w.abort.abort();
        watches.delete(key);
        known.delete(key);
      }
      for (const [key, entry] of wanted) {
        const had = watches.get(key);
        if (had) {
          had.entry = entry;
          continue;
        }
        const w: Watch = {
          entry,
          keys: new Map(),
          published: null,
          error: null,
          resolvedAt: null,
          abort: new AbortController(),
        };
        watches.set(key, w);
        follow(w, () => publish(w, known, key, changed));
      }
    },
    status: () => [...watches.values()].map((w) => entryStatus(w, w.published?.length ?? null)),
    stop() {
      for (const w of watches.values()) w.abort.abort();
    },
  };
  discovery.follow(config);
  return discovery;
}

function sameSource(a: Discovered, b: Discovered): boolean {
  return a.name === b.name && JSON.stringify(a.etcd) === JSON.stringify(b.etcd);
}

/**
 * The targets of a watch, sorted, put where expansion finds them; told when
 * they changed. No keys at all keeps the last set unless `allow_empty`.
 */
function publish(
  w: Watch,
  known: Map<string, readonly Target[]>,
  key: string,
  changed: () => void,
): void {
  const targets = [...w.keys.values()].sort(byAddress);
  if (targets.length === 0 && !w.entry.allow_empty) {
    const why = emptyRefused(`no keys under ${w.entry.etcd!.prefix}`);
    return lookupFailed(w, why, w.published?.length ?? null);
  }
  lookupAnswered(w);
  if (JSON.stringify(targets) === JSON.stringify(w.published)) return;
  w.published = targets;
  known.set(key, targets);
  changed();
}

/** Reads and watches one prefix until aborted, reconnecting with backoff. */
async function follow(w: Watch, publishNow: () => void): Promise<void> {
  let delay: number = RETRY_MS[0];
  for (let attempt = 0; !w.abort.signal.aborted; attempt++) {
    const endpoints = w.entry.etcd!.endpoints;
    const endpoint = endpoints[attempt % endpoints.length];
    const outcome = await session(w, endpoint, publishNow).catch((e) => describe(e));
    if (w.abort.signal.aborted) return;
    if (outcome === "ok") delay = RETRY_MS[0];
    else {
      lookupFailed(w, `${endpoint}: ${outcome}`, w.published?.length ?? null);
      delay = Math.min(RETRY_MS[1], delay * 2);
    }
    await sleep(delay, w.abort.signal);
  }
}

/** One connection: a full read of the prefix, then its watch until the stream ends. */
async function session(w: Watch, endpoint: string, publishNow: () => void): Promise<string> {
  const prefix = new TextEncoder().encode(w.entry.etcd!.prefix);
  const range = { key: b64(prefix), range_end: b64(prefixEnd(prefix)) };
  const read = await post(endpoint, "/v3/kv/range", range, w.abort.signal);
  const body = await read.json() as { header?: { revision?: string }; kvs?: Kv[] };
  if (!read.ok) return `range answered ${read.status}`;
  w.keys.clear();
  for (const kv of body.kvs ?? []) put(w, kv);
  publishNow();
  const watch = await post(endpoint, "/v3/watch", {
    create_request: { ...range, start_revision: String(Number(body.header?.revision ?? 0) + 1) },
  }, w.abort.signal);
  if (!watch.ok || !watch.body) return `watch answered ${watch.status}`;
  for await (const message of lines(watch.body)) {
    const result = (JSON.parse(message) as { result?: WatchResult }).result;
    if (!result) continue;
    if (result.canceled) return `watch canceled: ${result.cancel_reason ?? "no reason given"}`;
    for (const ev of result.events ?? []) {
      if (ev.type === "DELETE") w.keys.delete(ev.kv.key);
      else put(w, ev.kv);
    }
    if (result.events?.length) publishNow();
  }
  return "the watch ended";
}

interface Kv {
  key: string;
  value?: string;
}

interface WatchResult {
  events?: { type?: "PUT" | "DELETE"; kv: Kv }[];
  canceled?: boolean;
  cancel_reason?: string;
}

/** A key's value as a target; a value that is not one is said and left out. */
function put(w: Watch, kv: Kv): void {
  const target = targetOf(kv.value ? atob(kv.value) : "");
  if (typeof target !== "string") return void w.keys.set(kv.key, target);
  w.keys.delete(kv.key);
  log.warn("etcd key {key} under {name} is not a backend: {error}", {
    event: "discovery_bad_value",
    service: w.entry.template.service,
    name: w.entry.name,
    key: atob(kv.key),
    error: target,
  });
}

/** `{"host": "10.0.0.1", "port": 8080, "weight": 2}` as a target, or why it is not one. */
export function targetOf(value: string): Target | string {
  let v: unknown;
  try {
    v = JSON.parse(value);
  } catch {
    return `not JSON: ${value.slice(0, 80)}`;
  }
  const { host, port, weight } = (v ?? {}) as Record<string, unknown>;
  if (typeof host !== "string" || host.trim() === "") return "no host";
  if (!Number.isInteger(port) || (port as number) < 1 || (port as number) > 65535) {
    return "port must be an integer from 1 to 65535";
  }
  if (
    weight !== undefined &&
    (!Number.isInteger(weight) || (weight as number) < 0 || (weight as number) > 256)
  ) {
    return "weight must be an integer from 0 to 256";
  }
  const bare = host.trim().replace(/^\[(.*)\]$/, "$1");
  return {
    host: bare,
    port: port as number,
    weight: (weight as number | undefined) ?? null,
    backup: false,
  };
}

function post(endpoint: string, path: string, body: unknown, signal: AbortSignal) {
  return fetch(`${endpoint.replace(/\/$/, "")}${path}`, {
    method: "POST",
    body: JSON.stringify(body),
    signal,
  });
}

/** The first key after every key that starts with `prefix` (etcd's range_end for a prefix). */
function prefixEnd(prefix: Uint8Array): Uint8Array {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i] < 0xff) {
      const end = prefix.slice(0, i + 1);
      end[i]++;
      return end;
    }
  }
  return new Uint8Array([0]);
}

function b64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

/** The JSON messages of a watch stream, one per line. */
async function* lines(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let rest = "";
  for await (const chunk of body) {
    rest += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = rest.indexOf("\n")) >= 0) {
      const line = rest.slice(0, nl).trim();
      rest = rest.slice(nl + 1);
      if (line) yield line;
    }
  }
  if (rest.trim()) yield rest.trim();
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    Deno.unrefTimer(timer);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
