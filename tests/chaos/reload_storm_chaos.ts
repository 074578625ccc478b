/**
 * Reload storm under load: clients stream random data both ways (some
 * half-closing) while the config is reloaded again and again, one reload
 * invalid. Every byte must arrive intact and in order, no connection may be
 * cut, the status counters must match what the clients saw, and memory must
 * come back down.
 */
import assert from "node:assert/strict";
import { bal, echoBackend, freePort, startDaemon, tempHome, waitFor } from "../helpers.ts";
import {
  between,
  pick,
  PROFILE,
  randomBytes,
  record,
  rssKiB,
  sleep,
  streamEcho,
  type StreamResult,
} from "./chaos.ts";

const CLIENTS = pick(50, 200);
const RELOADS = pick(15, 50);
const MAX_SIZE = pick(256, 1024) * 1024;

function configText(port: number, backends: number[], runtime: Record<string, number>): string {
  return [
    `port: ${port}`,
    "bind_address: 127.0.0.1",
    "log_level: info",
    "workers: 2",
    "backends:",
    ...backends.map((p) => `  - 127.0.0.1:${p}`),
    "runtime:",
    ...Object.entries(runtime).map(([k, v]) => `  ${k}: ${v}`),
  ].join("\n") + "\n";
}

/** A random non-empty subset of `items`, in random order. */
function shuffledSubset<T>(items: T[]): T[] {
  const shuffled = [...items].sort(() => Math.random() - 0.5);
  return shuffled.slice(0, between(1, items.length));
}

Deno.test("chaos: a reload storm under streaming load loses no byte and cuts no connection", async () => {
  const echoes = Array.from({ length: 4 }, () => echoBackend());
  const ports = echoes.map((e) => e.port);
  const home = tempHome();
  const port = freePort();
  const path = `${home}/storm.yaml`;
  const base = { health_check_interval_ms: 300, health_check_timeout_ms: 200 };
  Deno.writeTextFileSync(path, configText(port, ports, base));
  const d = await startDaemon(home, path, port);
  const data = randomBytes(MAX_SIZE);
  const results: StreamResult[] = [];
  let running = true;
  const started = Date.now();
  try {
    const idleRss = rssKiB(d.pid);
    const clients = Array.from({ length: CLIENTS }, async () => {
      while (running) {
        const size = between(1, MAX_SIZE);
        const offset = between(0, MAX_SIZE - size);
        results.push(
          await streamEcho(port, data.subarray(offset, offset + size), {
            halfClose: Math.random() < 0.3,
            chunk: between(512, 64 * 1024),
          }),
        );
      }
    });
    await sleep(1000);
    const warmRss = rssKiB(d.pid);
    const stateReloads = () =>
      JSON.parse(Deno.readTextFileSync(`${home}/bal.state.json`)).reloads as number;
    // Odd: sent as a raw SIGHUP, since `bal graceful` refuses an invalid config itself.
    const invalidAt = Math.floor(RELOADS / 2) | 1;
    for (let i = 1; i <= RELOADS; i++) {
      if (i === invalidAt) {
        Deno.writeTextFileSync(
          path,
          configText(port, ports, base).replace("workers: 2", "workers: two"),
        );
      } else {
        const runtime = {
          ...base,
          health_check_interval_ms: between(200, 600),
          backend_connect_timeout_ms: between(300, 1000),
          max_concurrent_connections: between(2000, 8000),
          connection_idle_timeout_ms: pick(60_000, 120_000),
          failover_backoff_initial_ms: between(50, 300),
          protection_trigger_threshold: between(10, 20),
        };
        Deno.writeTextFileSync(path, configText(port, shuffledSubset(ports), runtime));
      }
      // Half through the CLI as an operator would, half as raw signals.
      if (i % 2 === 0) {
        const r = await bal(home, "graceful");
        assert.equal(r.code, i === invalidAt ? 1 : 0, r.stderr);
      } else {
        Deno.kill(d.pid, "SIGHUP");
        await waitFor(`reload ${i}`, () => stateReloads() >= i, 10_000);
      }
      await sleep(between(50, 200));
    }
    // The last config has every backend, so status shows every backend's counters.
    Deno.writeTextFileSync(path, configText(port, ports, base));
    assert.equal((await bal(home, "graceful")).code, 0);
    await sleep(500);
    running = false;
    await Promise.all(clients);
    const seconds = (Date.now() - started) / 1000;

    const broken = results.filter((r) => !r.intact);
    assert.deepEqual(broken.slice(0, 5), [], `${broken.length} of ${results.length} broken`);
    const sent = results.reduce((s, r) => s + r.sent, 0);
    const received = results.reduce((s, r) => s + r.received, 0);
    assert.equal(sent, received);

    // Workers report every second: wait for the totals to settle.
    // deno-lint-ignore no-explicit-any -- status JSON
    const status: any = await waitFor("the counters to settle", async () => {
      const s = JSON.parse((await bal(home, "status", "--json")).stdout);
      // deno-lint-ignore no-explicit-any -- status JSON
      const bytesIn = s.backends.reduce((t: number, b: any) => t + b.bytes_in, 0);
      return s.active_connections === 0 && bytesIn === sent ? s : undefined;
    }, 10_000);
    assert.equal(status.connections_served, results.length);
    // deno-lint-ignore no-explicit-any -- status JSON
    assert.equal(status.backends.reduce((t: number, b: any) => t + b.bytes_out, 0), received);
    assert.equal(status.reloads.count, RELOADS + 1);
    assert.equal(status.rejected_connections, 0);
    const failed = d.log().filter((l) => l.event === "reload_failed");
    assert.equal(failed.length, 1, "exactly the one invalid config failed");

    // V8 keeps the heap it grew, so RSS does not fall back to idle. What must not happen is
    // growth with the work done: the same load again, without reloads, must not add to it.
    await sleep(2000);
    const endRss = rssKiB(d.pid);
    running = true;
    const again: StreamResult[] = [];
    const second = Array.from({ length: CLIENTS }, async () => {
      while (running) {
        const size = between(1, MAX_SIZE);
        const offset = between(0, MAX_SIZE - size);
        again.push(await streamEcho(port, data.subarray(offset, offset + size)));
      }
    });
    await sleep(pick(4000, 10_000));
    running = false;
    await Promise.all(second);
    assert.equal(again.filter((r) => !r.intact).length, 0);
    await sleep(2000);
    const againRss = rssKiB(d.pid);
    // Judged on the full profile only: a few seconds of the short one can catch the old
    // generation still growing towards its first full collection (see exhaustion_chaos.ts).
    if (PROFILE === "full") {
      assert.ok(
        againRss <= endRss * 1.1 + 16 * 1024,
        `RSS grew from ${endRss} to ${againRss} KiB over ${again.length} more connections`,
      );
    }
    record("reload_storm", {
      clients: CLIENTS,
      connections: results.length,
      bytes_each_way: sent,
      reloads: RELOADS + 1,
      invalid_reloads: 1,
      broken_connections: broken.length,
      seconds: Math.round(seconds),
      rss_idle_kib: idleRss,
      rss_under_load_kib: warmRss,
      rss_after_kib: endRss,
      rss_after_as_many_again_kib: againRss,
      connections_again: again.length,
    });
  } finally {
    running = false;
    await d.stop();
    await Promise.all(echoes.map((e) => e.close()));
  }
});
