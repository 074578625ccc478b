/**
 * Clients that reset before bal accepts them (HAProxy's L4 checks close
 * this way, as does any client that gives up at once): each is counted as
 * accepted and accepting goes on. Before the fix the deno engine took each
 * for a failing listener and stopped accepting for 50 ms per client, so a
 * request behind 100 of them waited five seconds (issue 24, item 2).
 */
import assert from "node:assert/strict";
import { bal, echoBackend, echoing, startBal, waitFor } from "../helpers.ts";

/** Connects `n` times to `port` and closes each with SO_LINGER {1, 0}: a reset, no FIN. */
async function resetStorm(port: number, n: number): Promise<void> {
  const script = `
import socket, struct, sys
for _ in range(int(sys.argv[2])):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.connect(("127.0.0.1", int(sys.argv[1])))
    s.close()
`;
  const out = await new Deno.Command("python3", { args: ["-c", script, String(port), String(n)] })
    .output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

Deno.test("accept: 300 clients that reset before they are accepted are counted, and the next client is served at once", async () => {
  const echo = echoBackend();
  const d = await startBal({ backends: [echo.port], extra: "access_log: true" });
  try {
    const storm = 300;
    await resetStorm(d.port, storm);
    const began = Date.now();
    const conn = await echoing(d.port, "after the storm");
    const waited = Date.now() - began;
    conn.close();
    // Before the fix: 50 ms per reset client, 15 s here. A second is a stall, not a slow machine.
    assert.ok(waited < 1000, `the client after the storm waited ${waited} ms`);
    const accepted = await waitFor("every reset client counted", async () => {
      const r = await bal(d.home, "status", "--json");
      const n = JSON.parse(r.stdout).services[0].connections_accepted as number;
      return n >= storm + 1 ? n : null;
    });
    assert.ok(accepted >= storm + 1);
    const failed = d.log().filter((l) => l.event === "accept_failed");
    assert.deepEqual(failed, [], "a reset client is not a failing listener");
  } finally {
    await d.stop();
    await echo.close();
  }
});
