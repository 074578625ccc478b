/**
 * 10,000 backends on one bal (issue 24, item 8): every backend is checked
 * and each check reaches its real verdict (a closed port is "refused", not a
 * timeout of a saturated loop), `bal status` answers, and `/metrics` answers
 * with a line per backend (it answered 500 at 10,000 before).
 */
import assert from "node:assert/strict";
import { bal, freePort, startDaemon, tempHome, waitFor } from "../helpers.ts";

const COUNT = 10_000;

/** `count` loopback addresses where nothing listens: 127.X.Y.1-250, port 9. */
function closedBackends(count: number): string[] {
  return Array.from({ length: count }, (_, i) => {
    const net = Math.floor(i / 250);
    return `"127.${1 + (net >> 8)}.${net & 255}.${(i % 250) + 1}:9"`;
  });
}

interface Checked {
  last_check_time: string | null;
  last_error: string | null;
}

Deno.test("scale: 10,000 backends are all checked to their real verdict; status and /metrics answer", async () => {
  const home = tempHome();
  const port = freePort();
  const admin = freePort();
  const config = `${home}/many.yaml`;
  Deno.writeTextFileSync(
    config,
    `bind_address: 127.0.0.1\nport: ${port}\nlog_level: warn\nadmin: {listen: "127.0.0.1:${admin}"}\nbackends: [${
      closedBackends(COUNT).join(", ")
    }]\n`,
  );
  const d = await startDaemon(home, config, port);
  try {
    // Asked every half second: a `bal status` run back to back (a Deno process starting, and
    // 10,000 backends' status built) took the 2 cores the daemon's first checks needed, and
    // hundreds of them timed out.
    const backends = await waitFor("every backend checked", async () => {
      await new Promise((r) => setTimeout(r, 500));
      const r = await bal(home, "status", "--json");
      if (r.code !== 0) return false;
      const all = JSON.parse(r.stdout).backends as Checked[];
      return all.every((b) => b.last_check_time !== null) && all;
    }, 60_000);
    assert.equal(backends.length, COUNT);
    const refused = backends.filter((b) => /refused/.test(b.last_error ?? "")).length;
    const other = backends.find((b) => !/refused/.test(b.last_error ?? ""));
    // A saturated loop reported closed ports as timeouts; a few stragglers are tolerated.
    assert.ok(
      refused >= COUNT * 0.99,
      `${refused} of ${COUNT} refused; e.g. ${other?.last_error}`,
    );
    const text = await bal(home, "status");
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /, [\d,]+\/10,000 backends reachable/);
    assert.match(text.stdout, /… 9,990 more backends \(/);
    const metrics = await fetch(`http://127.0.0.1:${admin}/metrics`);
    assert.equal(metrics.status, 200);
    const body = await metrics.text();
    assert.equal(body.match(/^bal_backend_up\{/gm)?.length, COUNT);
  } finally {
    await d.stop();
  }
});
