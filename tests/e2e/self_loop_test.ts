/**
 * A backend that is bal itself (issue 24, item 3): the certain cases are
 * refused by `check` (cli and config tests); the rest is caught as it
 * happens. Here the backend is bal's listener spelled as an IPv4-mapped
 * IPv6 address, which `check` cannot know is bal: before the guard, one
 * client became thousands of connections in a second.
 */
import assert from "node:assert/strict";
import { bal, freePort, startDaemon, tempHome, waitFor } from "../helpers.ts";
import { reachesListener } from "../../src/net/address.ts";
import {
  clientArrived,
  dialedFrom,
  forgetSession,
  isOwnDial,
  loopGuard,
  mayLoop,
} from "../../src/engine/self_loop.ts";

Deno.test("self loop: which backends certainly reach a listener", () => {
  const at = (bind_address: string) => ({ bind_address, port: 80 });
  assert.ok(reachesListener({ host: "10.0.0.1", port: 80 }, at("10.0.0.1")));
  assert.ok(reachesListener({ host: "127.0.0.5", port: 80 }, at("0.0.0.0")));
  assert.ok(reachesListener({ host: "::1", port: 80 }, at("::")));
  assert.ok(reachesListener({ host: "127.0.0.1", port: 80 }, at("localhost")));
  assert.ok(reachesListener({ host: "localhost", port: 80 }, at("127.0.0.1")));
  assert.ok(!reachesListener({ host: "127.0.0.2", port: 80 }, at("127.0.0.1")));
  assert.ok(!reachesListener({ host: "127.0.0.1", port: 81 }, at("0.0.0.0")));
  assert.ok(!reachesListener({ host: "10.0.0.2", port: 80 }, at("0.0.0.0")));
});

Deno.test("self loop: the guard knows bal's own connects, however the address is written", () => {
  const services = new Map([["a", { port: 443 }]]);
  assert.ok(mayLoop(services, { port: 443 }));
  assert.ok(!mayLoop(services, { port: 8443 }));
  const guard = loopGuard<{ ownDial?: string; socketPeer?: string }>(true);
  const dialer = {};
  assert.equal(dialedFrom(guard, dialer, { hostname: "::ffff:127.0.0.1", port: 40000 }), null);
  assert.ok(isOwnDial(guard, { hostname: "127.0.0.1", port: 40000 }));
  assert.ok(!isOwnDial(guard, { hostname: "127.0.0.1", port: 40001 }));
  // An accept seen before its connect's local end: the connect finds it.
  const early = {};
  clientArrived(guard, early, { hostname: "127.0.0.1", port: 40002 });
  assert.equal(dialedFrom(guard, {}, { hostname: "127.0.0.1", port: 40002 }), early);
  forgetSession(guard, dialer);
  assert.ok(!isOwnDial(guard, { hostname: "127.0.0.1", port: 40000 }));
});

Deno.test("self loop: a backend that turns out to be bal is refused at its first turn, counted and said", async () => {
  const home = tempHome();
  const port = freePort();
  const config = `${home}/loop.yaml`;
  Deno.writeTextFileSync(
    config,
    `port: ${port}\nbind_address: 127.0.0.1\nlog_level: info\naccess_log: true\nbackends:\n  - "[::ffff:127.0.0.1]:${port}"\nruntime:\n  health_check_interval_ms: 60000\n`,
  );
  const d = await startDaemon(home, config, port);
  try {
    const clients = 20;
    for (let i = 0; i < clients; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(new TextEncoder().encode("hello"));
      // bal closes it: its backend hung up (it was bal, which refused its own connect).
      const n = await conn.read(new Uint8Array(16)).catch(() => null);
      assert.equal(n, null);
      conn.close();
    }
    const svc = await waitFor("every loop refused", async () => {
      const s = JSON.parse((await bal(home, "status", "--json")).stdout).services[0];
      return s.refused_by_cause.loop >= clients ? s : null;
    });
    // Each client and the first health check: accepted once, and once more as bal's own connect.
    assert.ok(
      svc.connections_accepted <= 2 * (clients + 1),
      `${svc.connections_accepted} accepted`,
    );
    assert.equal(svc.refused_by_cause.loop, svc.connections_accepted / 2);
    assert.ok(d.log().some((l) => l.event === "self_loop"));
    await waitFor(
      "an access line that says loop",
      () => d.log().some((l) => (l.fields as { ended?: string })?.ended === "loop"),
    );
  } finally {
    await d.stop();
  }
});
