/**
 * A data plane driven by a mechanism that moves no bytes: the tests of the
 * session's steps (session.ts, admission.ts, inspect.ts, plane.ts) decide
 * by hand what each connect, first read and relay does, and read back what
 * the policy made of it. No socket is opened.
 */
import assert from "node:assert/strict";
import { checkConfig } from "../../../src/config/mod.ts";
import type { Backend } from "../../../src/config/schema.ts";
import { admit } from "../../../src/engine/admission.ts";
import {
  createPlane,
  type Peer,
  type Plane,
  type Relayed,
  type SessionBase,
} from "../../../src/engine/plane.ts";
import type { Preface, PrefaceReader } from "../../../src/route/preface.ts";
import { inspector } from "../../../src/engine/inspect.ts";
import {
  begun,
  type DialOutcome,
  finish,
  type Mechanism,
  serve,
} from "../../../src/engine/session.ts";
import type { Observation } from "../../../src/health/state.ts";
import { createRuntime } from "../../../src/snapshot.ts";

/** A connect the test has not answered yet. */
export interface PendingDial {
  backend: Backend;
  done(outcome: DialOutcome<string>): void;
}

/** A relay the test ends by hand. */
export interface RunningRelay {
  backend: string;
  header: Uint8Array | null;
  progress: Relayed;
  done(): void;
}

/** The plane, its mechanism, and everything the mechanism and the hooks were asked. */
export interface FakeEngine {
  plane: Plane<SessionBase>;
  mech: Mechanism<SessionBase, string>;
  /** What the mechanism was asked, in order: `inspect`, `connect HOST:PORT`, `relay HOST:PORT`, `close`. */
  calls: string[];
  dials: PendingDial[];
  relays: RunningRelay[];
  /** First reads under way, in the order they began (feed them with {@link send}). */
  inspections: { reader: PrefaceReader; then: (read: Preface | string) => void }[];
  results: { backend: string; obs: Observation }[];
  noBackend: string[];
  /** A client of `service` from `peer`: admitted and served, or null when admission refused it. */
  client(peer?: Peer, service?: string): SessionBase | null;
}

/** A fake plane on `yaml` (a checked config); backends are never reached. */
export function fakeEngine(yaml: string): FakeEngine {
  const checked = checkConfig(yaml, "fake.yaml");
  assert.ok(checked.ok, checked.ok ? "" : checked.errors[0].message);
  const runtime = createRuntime(checked.config, "fake.yaml");
  const f: FakeEngine = {
    plane: null!,
    mech: null!,
    calls: [],
    dials: [],
    relays: [],
    inspections: [],
    results: [],
    noBackend: [],
    client(peer = { hostname: "192.0.2.7", port: 40000 }, service = "default") {
      const counters = admit(f.plane, service, peer);
      if (!counters) return null;
      const s = begun(service, peer, counters, Date.now());
      serve(f.plane, f.mech, s);
      return s;
    },
  };
  f.plane = createPlane<SessionBase>(runtime, {
    id: 0,
    reusePort: false,
    claimPort: false,
    planes: 1,
    onResult: (backend, obs) => f.results.push({ backend: backend.address, obs }),
    onNoBackend: (service) => f.noBackend.push(service),
  }, (s) => finish(f.plane, f.mech, s));
  f.mech = {
    inspect(s, service, then) {
      f.calls.push("inspect");
      f.inspections.push({ reader: inspector(f.plane, s, service), then });
      return true;
    },
    connect(_s, backend, _timeoutMs, done) {
      f.calls.push(`connect ${backend.address}`);
      f.dials.push({ backend, done });
    },
    relay(_s, conn, header, early, _counters, done) {
      f.calls.push(`relay ${conn}`);
      const progress = { aToB: early, bToA: 0, failed: false, firstEnd: null, done: false };
      f.relays.push({ backend: conn, header, progress, done });
      return progress;
    },
    localEnd: () => ({ hostname: "198.51.100.1", port: 7000 }),
    close() {
      f.calls.push("close");
    },
  };
  return f;
}

/** Answers the oldest pending connect: connected (`conn` is its backend's address) or failed. */
export function answer(f: FakeEngine, outcome: "ok" | "refused" | "timeout" | "local"): void {
  const dial = f.dials.shift();
  assert.ok(dial, "no connect is pending");
  if (outcome === "ok") return dial.done({ ok: true, conn: dial.backend.address, ms: 2 });
  dial.done({ ok: false, kind: outcome, message: `fake ${outcome}` });
}

/** The oldest first read under way hears `bytes` from its client (or its end: "closed", "timeout"). */
export function send(f: FakeEngine, bytes: Uint8Array | string | "closed" | "timeout"): void {
  const inspection = f.inspections[0];
  assert.ok(inspection, "no first read is under way");
  const step = bytes === "closed" || bytes === "timeout"
    ? inspection.reader.end(bytes)
    : inspection.reader.feed(
      typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes,
      Date.now(),
    );
  if (step === null) return;
  f.inspections.shift();
  inspection.then(step);
}
