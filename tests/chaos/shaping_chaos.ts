/**
 * Shaping under faults: every client mirrored to a shadow that misbehaves
 * at random (resets mid-stream, closes at once, reads slowly, never reads,
 * or is gone), while limits and the mirror's share are reloaded over and
 * over. The clients' streams come back byte for byte, none fails, bal's
 * memory stays bounded, and every mirror failure is counted by cause.
 */
import assert from "node:assert/strict";
import { bal, closeQuietly, echoBackend, freePort, startDaemon, tempHome } from "../helpers.ts";
import { between, pick, randomBytes, record, rssKiB, sleep, streamEcho } from "./chaos.ts";

/** What a shadow connection does: each is picked at random. */
const MOODS = ["reset", "close", "slow", "stall", "ok"] as const;

/** A shadow backend that misbehaves per connection; `seen` counts each mood. */
function moodyMirror() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const seen: Record<string, number> = Object.fromEntries(MOODS.map((m) => [m, 0]));
  const held = new Set<Deno.Conn>();
  const serve = async (c: Deno.Conn) => {
    const mood = MOODS[between(0, MOODS.length - 1)];
    seen[mood]++;
    held.add(c);
    const buf = new Uint8Array(4096);
    try {
      if (mood === "reset") await c.read(buf); // then close with bytes unread: a reset
      if (mood === "slow") {
        for (let i = 0; i < 40 && await c.read(buf) !== null; i++) await sleep(25);
      }
      if (mood === "stall") return; // held open, never read, until the end
      if (mood === "ok") { while (await c.read(buf) !== null) { /* drained */ } }
    } catch { /* bal closed it first */ }
    held.delete(c);
    closeQuietly(c);
  };
  (async () => {
    for await (const c of listener) serve(c);
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    seen,
    close() {
      listener.close();
      held.forEach((c) => closeQuietly(c));
    },
  };
}

Deno.test("chaos: clients stay whole while their mirror misbehaves and limits reload", async () => {
  const backend = echoBackend();
  const mirror = moodyMirror();
  const port = freePort();
  const home = tempHome();
  const config = `${home}/shaping.yaml`;
  const yaml = (i: number) =>
    `port: ${port}\nbind_address: 127.0.0.1\nbackends: ["127.0.0.1:${backend.port}"]\n` +
    `bandwidth: {upload_bytes_per_s: ${20 + i % 3 * 10}MB, download_bytes_per_s: 40MB, per: ${
      i % 2 ? "client" : "connection"
    }}\n` +
    `mirror: {backend: "127.0.0.1:${mirror.port}", percent: ${
      i % 4 === 3 ? 50 : 100
    }, buffer_bytes: 128KiB}\n`;
  Deno.writeTextFileSync(config, yaml(0));
  const d = await startDaemon(home, config, port);
  const clients = pick(60, 300);
  let reloads = 0;
  let storming = true;
  const storm = (async () => {
    for (let i = 1; storming && i < 1000; i++) {
      Deno.writeTextFileSync(config, yaml(i));
      const r = await bal(home, "reload");
      assert.equal(r.code, 0, r.stderr);
      reloads++;
      await sleep(100);
    }
  })();
  try {
    const before = rssKiB(d.pid);
    const results = [];
    // Batches go on until the storm has reloaded 3 times among them (counted, not timed).
    const more = (i: number) => i < clients || (reloads < 3 && i < clients * 10);
    for (let i = 0; more(i); i += 20) {
      results.push(
        ...await Promise.all(
          Array.from(
            { length: i < clients ? Math.min(20, clients - i) : 20 },
            // Paced, so that streams are live across the reloads.
            () =>
              streamEcho(port, randomBytes(between(1, 512 * 1024)), {
                halfClose: true,
                pauseMs: 10,
              }),
          ),
        ),
      );
    }
    storming = false;
    await storm;
    assert.ok(reloads >= 3, `${reloads} reloads while the clients streamed`);
    const broken = results.filter((r) => !r.intact);
    assert.deepEqual(broken, [], "every client's stream came back whole");
    const grown = rssKiB(d.pid) - before;
    assert.ok(grown < 128 * 1024, `bal's RSS grew by ${grown} KiB`);
    const s = JSON.parse((await bal(home, "status", "--json")).stdout).services[0];
    const dropped = s.mirror.dropped;
    assert.ok(s.mirror.mirrored >= clients / 2, `${s.mirror.mirrored} of ${clients} mirrored`);
    assert.ok(dropped.error + dropped.buffer_full > 0, JSON.stringify(dropped));
    record("shaping_mirror_faults", {
      clients: results.length,
      reloads,
      mirrored: s.mirror.mirrored,
      dropped,
      moods: mirror.seen,
      rss_growth_kib: grown,
    });
  } finally {
    storming = false;
    await storm.catch(() => {});
    await d.stop();
    mirror.close();
    await backend.close();
  }
});
