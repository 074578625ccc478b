/**
 * What an engine must do, as one list of cases run in process against
 * every engine this machine has (today uring, epoll and deno; a UDP
 * engine adds itself to ENGINES). Each case drives the engine through
 * its interface only (src/engine/engine.ts): apply a config, move bytes,
 * fail over, refuse, kill, drain, stop accepting, count.
 */
import assert from "node:assert/strict";
import { checkConfig } from "../../src/config/mod.ts";
import type { Backend } from "../../src/config/schema.ts";
import { createEngine } from "../../src/engine/choose.ts";
import type { Engine, EngineName } from "../../src/engine/engine.ts";
import { nativeSelfCheck } from "../../src/engine/epoll/self_check.ts";
import { uringSelfCheck } from "../../src/engine/uring/self_check.ts";
import type { Observation } from "../../src/health/state.ts";
import { createRuntime, type Runtime, swapSnapshot } from "../../src/snapshot.ts";
import { echoBackend, freePort, readAll, readN, str, text, waitFor, writeAll } from "../helpers.ts";

/** Every engine that can run here. */
const ENGINES: EngineName[] = [
  ...(uringSelfCheck() === null ? ["uring" as const] : []),
  ...(nativeSelfCheck() === null ? ["epoll" as const] : []),
  "deno",
];

/** An engine on its own runtime, with what it reported through its hooks. */
interface Harness {
  engine: Engine;
  runtime: Runtime;
  results: { backend: Backend; obs: Observation }[];
  noBackend: string[];
  port: number;
  close(): Promise<void>;
}

/** Starts `name` on a single-service config of `backends` (ports on 127.0.0.1). */
function start(name: EngineName, backends: number[], runtime = ""): Harness {
  const port = freePort();
  const yaml = `port: ${port}\nbind_address: 127.0.0.1\nbackends: [${
    backends.map((p) => `"127.0.0.1:${p}"`).join(", ")
  }]\nruntime: {backend_connect_timeout_ms: 500${runtime}}\n`;
  const checked = checkConfig(yaml, "conformance.yaml");
  assert.ok(checked.ok, checked.ok ? "" : checked.errors[0].message);
  const rt = createRuntime(checked.config, "conformance.yaml");
  const h: Harness = {
    engine: null!,
    runtime: rt,
    results: [],
    noBackend: [],
    port,
    async close() {
      await h.engine.stopAccepting();
      await h.engine.drain(0);
    },
  };
  h.engine = createEngine(name, rt, {
    id: 0,
    reusePort: false,
    claimPort: false,
    planes: 1,
    onResult: (backend, obs) => h.results.push({ backend, obs }),
    onNoBackend: (service) => h.noBackend.push(service),
  });
  h.engine.apply(checked.config);
  return h;
}

/** A port nothing listens on. */
function deadPort(): number {
  return freePort();
}

const connect = (port: number) => Deno.connect({ hostname: "127.0.0.1", port });

/** `p`, or a failure naming `what` after 5 s: an engine that loses an event must not hang the suite. */
async function within<T>(what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) =>
    timer = setTimeout(() => reject(new Error(`${what}: nothing within 5 s`)), 5000)
  );
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A client through `h` whose first byte came back: a live, relayed connection. */
async function relayed(h: Harness): Promise<Deno.Conn> {
  const c = await connect(h.port);
  await writeAll(c, text("x"));
  await within("the echo", readN(c, 1));
  return c;
}

/** Reads to the end (or a reset), within 5 s. */
const readToEnd = (c: Deno.Conn, what: string) =>
  within(what, readAll(c).catch(() => new Uint8Array()));

/** Each case, run once per engine; the engines' sockets and timers outlive a case by design. */
function conformance(what: string, fn: (engine: EngineName) => Promise<void>): void {
  for (const engine of ENGINES) {
    Deno.test({
      name: `engine ${engine}: ${what}`,
      sanitizeOps: false,
      sanitizeResources: false,
      fn: () => fn(engine),
    });
  }
}

conformance(
  "listens where the config says; moves a MiB each way in order; passes a half-close on",
  async (name) => {
    const echo = echoBackend();
    const h = start(name, [echo.port]);
    try {
      assert.deepEqual(h.engine.listening(), { default: `127.0.0.1:${h.port}` });
      assert.ok(h.engine.backlog("default") > 0);
      const c = await connect(h.port);
      const data = new Uint8Array(1 << 20).map((_, i) => (i * 7) & 0xff);
      const [, back] = await within(
        "the echo",
        Promise.all([writeAll(c, data), readN(c, data.length)]),
      );
      assert.deepEqual(back, data, "every byte back, in order");
      await c.closeWrite();
      assert.equal((await readToEnd(c, "the half-close")).length, 0, "the backend's end follows");
      c.close();
      await waitFor(
        "the connection counted",
        () => h.engine.stats().accepted === 1 && h.engine.stats().active === 0,
      );
      const s = h.engine.stats();
      assert.equal(s.served, 1);
    } finally {
      await h.close();
      await echo.close();
    }
  },
);

conformance("a dead backend is reported and the next one takes the client", async (name) => {
  const echo = echoBackend();
  const dead = deadPort();
  const h = start(name, [dead, echo.port]);
  try {
    // Round robin starts with the first: the dead one is tried, then the live one.
    const c = await connect(h.port);
    await writeAll(c, text("hi"));
    assert.equal(str(await within("the failover", readN(c, 2))), "hi");
    c.close();
    await waitFor(
      "the failure reported",
      () => h.results.some((r) => r.backend.port === dead && r.obs.ok === false),
    );
  } finally {
    await h.close();
    await echo.close();
  }
});

conformance("with no backend left the client is closed and the hook hears it", async (name) => {
  const h = start(name, [deadPort()]);
  try {
    const c = await connect(h.port);
    assert.equal((await readToEnd(c, "the close")).length, 0);
    c.close();
    await waitFor("no_backend heard", () => h.noBackend.length === 1);
    await waitFor("and counted", () => h.engine.stats().no_backend === 1);
  } finally {
    await h.close();
  }
});

conformance("kill closes a backend's live connections and says how many", async (name) => {
  const echo = echoBackend();
  const h = start(name, [echo.port]);
  try {
    const c = await relayed(h);
    const id = [...h.runtime.snapshot.backends.keys()][0];
    assert.equal(h.engine.kill(id), 1);
    assert.equal((await readToEnd(c, "the kill")).length, 0);
    c.close();
  } finally {
    await h.close();
    await echo.close();
  }
});

conformance(
  "drain waits for live connections, then closes the rest and counts them",
  async (name) => {
    const echo = echoBackend();
    const h = start(name, [echo.port]);
    try {
      const c = await relayed(h);
      await h.engine.stopAccepting();
      await assert.rejects(connect(h.port), "no new clients once it stops accepting");
      assert.equal(await h.engine.drain(200), 1, "the silent connection, closed at the timeout");
      assert.equal((await readToEnd(c, "the drain's close")).length, 0);
      c.close();
      assert.equal(await h.engine.drain(200), 0, "nothing left");
    } finally {
      await h.close();
      await echo.close();
    }
  },
);

conformance(
  "a config without the service closes its listener; its live connection goes on",
  async (name) => {
    const echo = echoBackend();
    const h = start(name, [echo.port]);
    try {
      const c = await relayed(h);
      const other = freePort();
      const next = checkConfig(
        `services:\n  - {name: other, port: ${other}, bind_address: 127.0.0.1, backends: ["127.0.0.1:${echo.port}"]}\n`,
        "conformance.yaml",
      );
      assert.ok(next.ok);
      h.engine.apply(next.config);
      swapSnapshot(h.runtime, next.config);
      assert.deepEqual(h.engine.listening(), { other: `127.0.0.1:${other}` });
      await assert.rejects(connect(h.port), "the removed service's port is closed");
      await writeAll(c, text("b"));
      assert.equal(
        str(await within("bytes after the reload", readN(c, 1))),
        "b",
        "it still moves bytes",
      );
      c.close();
    } finally {
      await h.close();
      await echo.close();
    }
  },
);
