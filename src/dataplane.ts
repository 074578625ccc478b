/**
 * A worker thread's data plane (see workers.ts): the same proxy as the main
 * thread's, on its own SO_REUSEPORT listener, fed config and health by the
 * control plane. It logs through the control plane and holds no config of
 * its own beyond the snapshot it was sent.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { describeError } from "./errors.ts";
import { setLogLevel, setupLogging } from "./log.ts";
import { createProxy, planeStats, type Proxy } from "./proxy.ts";
import { createRuntime, type Runtime, swapSnapshot } from "./snapshot.ts";
import type { FromWorker, ToWorker } from "./workers.ts";

/** How often counters go to the control plane. */
const STATS_INTERVAL_MS = 1000;

const post = (m: FromWorker) => self.postMessage(m);
let id = 0;
let runtime: Runtime;
let proxy: Proxy;
let statsTimer: ReturnType<typeof setInterval> | undefined;

const sendStats = () => post({ type: "stats", ...planeStats(id, proxy) });

self.addEventListener("unhandledrejection", (e) => {
  e.preventDefault();
  post({
    type: "log",
    record: {
      category: ["bal", "worker"],
      level: "error",
      message: [`worker ${id}: unexpected error, still serving: ${describeError(e.reason)}`],
      rawMessage: "unexpected error",
      timestamp: Date.now(),
      properties: { event: "internal_error", worker: id },
    },
  });
});

self.onmessage = async (e: MessageEvent<ToWorker>) => {
  const m = e.data;
  switch (m.type) {
    case "start": {
      id = m.id;
      setupLogging({
        level: m.config.log_level,
        format: "json",
        forward: (record) => post({ type: "log", record }),
      });
      runtime = createRuntime(m.config, m.configPath);
      for (const [address, state] of m.health) runtime.health.set(address, state);
      runtime.protection = m.protection;
      proxy = createProxy(runtime, {
        reusePort: true,
        claimPort: false,
        planes: m.planes,
        onResult: (backend, obs) => post({ type: "result", address: backend.address, obs }),
        onNoBackend: (at) => post({ type: "no_backend", at }),
      });
      try {
        proxy.listen(m.config);
      } catch (err) {
        return post({ type: "failed", id, error: describeError(err) });
      }
      statsTimer = setInterval(sendStats, STATS_INTERVAL_MS);
      return post({ type: "ready", id });
    }
    case "config":
      swapSnapshot(runtime, m.config);
      setLogLevel(m.config.log_level);
      // The control plane bound this address already, so with SO_REUSEPORT this succeeds.
      return proxy.listen(m.config);
    case "health":
      runtime.health.set(m.address, m.state);
      return;
    case "protection":
      runtime.protection = m.state;
      return;
    case "stats":
      return sendStats();
    case "stop": {
      await proxy.stopAccepting();
      clearInterval(statsTimer);
      const forced = await proxy.drain(m.drainMs);
      sendStats();
      return post({ type: "drained", id, forced });
    }
    case "force":
      await proxy.drain(0);
      return;
  }
};
