/**
 * Client faults: clients that connect and send nothing, reset after a few
 * bytes, half-close early, arrive 5000 at once, or trickle a byte a second.
 * Each ends as documented, nothing leaks, and other clients are served.
 */
import assert from "node:assert/strict";
import {
  bal,
  closeQuietly,
  echoBackend,
  echoing,
  freePort,
  readAll,
  readN,
  startDaemon,
  str,
  tempHome,
  text,
  waitFor,
  writeAll,
  writeConfig,
} from "../helpers.ts";
import { type AcceptedSockets, acceptedSockets, pick, record, sleep } from "./chaos.ts";

// deno-lint-ignore no-explicit-any -- status JSON
async function status(home: string): Promise<any> {
  return JSON.parse((await bal(home, "status", "--json")).stdout);
}

/** bal with a raised fd limit (5000 clients need 10000 descriptors), in front of an echo backend. */
async function startWide(runtime: Record<string, number>) {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [echo.port], runtime });
  const d = await startDaemon(home, config, port, { fdLimit: 20000 });
  return { d, echo, home, port };
}

const figures: Record<string, unknown> = {};

Deno.test("chaos: silent clients are closed by the idle timeout; resetting and half-closing ones leave nothing behind", async () => {
  const { d, echo, home, port } = await startWide({ connection_idle_timeout_ms: 1000 });
  try {
    const silent = await Promise.all(
      Array.from({ length: 100 }, () => Deno.connect({ hostname: "127.0.0.1", port })),
    );
    // Reset after a few bytes: close with the echo unread.
    for (let i = 0; i < 100; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(c, text("abcdef"));
      await sleep(2);
      c.close();
    }
    // Half-close at once: the answer still comes, then EOF.
    const halves = await Promise.all(Array.from({ length: 100 }, async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(c, text("half"));
      await c.closeWrite();
      const got = str(await readAll(c));
      c.close();
      return got;
    }));
    assert.deepEqual(new Set(halves), new Set(["half"]));
    // Others are served meanwhile.
    const other = await echoing(port, "served");
    other.close();
    // The silent ones are closed after the idle timeout.
    const closed = await Promise.all(
      silent.map((c) => c.read(new Uint8Array(1)).then((n) => n === null).catch(() => true)),
    );
    assert.ok(closed.every((x) => x));
    silent.forEach(closeQuietly);
    const s = await waitFor("nothing left open", async () => {
      const x = await status(home);
      return x.active_connections === 0 ? x : undefined;
    }, 5000);
    assert.equal(s.idle_closed_connections, 100);
    figures.silent_closed_by_idle_timeout = 100;
    figures.reset_after_few_bytes = 100;
    figures.half_closed_answered = 100;
  } finally {
    await d.stop();
    await echo.close();
  }
});

Deno.test("chaos: 5000 clients at once are all served, and every connection ends", async () => {
  const N = pick(2000, 5000);
  const IDLE_MS = 5000;
  // The echo backend's accept queue (511) overflows too: SYNs it drops are resent after 1 s.
  const { d, echo, home, port } = await startWide({
    max_concurrent_connections: 6000,
    backend_connect_timeout_ms: 5000,
    connection_idle_timeout_ms: IDLE_MS,
  });
  try {
    const started = Date.now();
    const conns = await Promise.all(
      Array.from({ length: N }, () => Deno.connect({ hostname: "127.0.0.1", port })),
    );
    const answers = await Promise.all(conns.map(async (c, i) => {
      const tag = String(i % 10);
      await writeAll(c, text(tag));
      return str(await readN(c, 1)) === tag;
    }));
    const ms = Date.now() - started;
    assert.equal(answers.filter((x) => x).length, N);
    const s = await status(home);
    assert.equal(s.active_connections, N);
    assert.equal(s.rejected_connections, 0);
    conns.forEach(closeQuietly);
    const closing = Date.now();
    // Every client closed: bal ends each of its connections as soon as it sees
    // the FIN (no CLOSE_WAIT lingers). Left are only orphans, which no FIN
    // will ever reach: under this burst the kernel answers with SYN cookies
    // and now and then makes a second socket for a connection that then ends
    // on the first. bal cannot tell one from a silent client, so its idle
    // timeout closes them, as HAProxy's `timeout client` would.
    let last: { active: number; sockets: AcceptedSockets } | null = null;
    const settled = await waitFor("every closed client's connection ended", async () => {
      const sockets = await acceptedSockets(port);
      last = { active: (await status(home)).active_connections, sockets };
      const { open, closeWait, orphans } = sockets;
      return open === 0 && closeWait === 0 && last.active === orphans ? last : undefined;
    }).catch((err) => {
      throw new Error(`${err}; last seen ${JSON.stringify(last)}`);
    });
    const endedMs = Date.now() - closing;
    const { orphans } = settled.sockets;
    const after = await waitFor("orphans closed by the idle timeout", async () => {
      const x = await status(home);
      return x.active_connections === 0 ? x : undefined;
    }, IDLE_MS + 5000);
    assert.equal(after.idle_closed_connections, orphans);
    figures.burst = {
      clients: N,
      all_answered_ms: ms,
      all_ended_ms: endedMs,
      orphan_sockets_closed_by_idle_timeout: orphans,
    };
  } finally {
    await d.stop();
    await echo.close();
  }
});

Deno.test("chaos: a client trickling a byte a second outlives the idle timeout, every byte echoed", async () => {
  const SECONDS = pick(4, 8);
  const { d, echo, port } = await startWide({ connection_idle_timeout_ms: 2000 });
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    for (let i = 0; i < SECONDS; i++) {
      await writeAll(c, text(String(i % 10)));
      assert.equal(str(await readN(c, 1)), String(i % 10));
      await sleep(1000);
    }
    c.close();
    figures.trickle_seconds = SECONDS;
  } finally {
    await d.stop();
    await echo.close();
  }
  record("client_faults", figures);
});
