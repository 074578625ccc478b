/**
 * Freed memory goes back to the system once a burst is over (src/instance/heap_trim.ts):
 * bal trims after start-up, and again once a burst of connections has ended.
 */
import assert from "node:assert/strict";
import { closeQuietly, echoBackend, echoing, startBal, waitFor } from "../helpers.ts";

const trims = (log: Record<string, unknown>[]) => log.filter((l) => l.event === "heap_trimmed");

Deno.test("heap trim: after start-up, and after a burst of connections ends", async () => {
  const echo = echoBackend();
  const d = await startBal({ backends: [echo.port] });
  try {
    await waitFor("the start-up trim", () => trims(d.log()).length === 1);
    const conns = [];
    for (let i = 0; i < 200; i++) conns.push(await echoing(d.port, `c${i}`));
    for (const c of conns) closeQuietly(c);
    const ended = Date.now();
    const after = await waitFor(
      "a trim after the burst",
      () => trims(d.log()).find((l) => Date.parse(l.timestamp as string) >= ended),
    );
    assert.equal(typeof (after.fields as Record<string, unknown>).kib, "number");
    // Two more ticks with nothing coming or going: no second trim for the same quiet spell.
    await new Promise((r) => setTimeout(r, 2500));
    const since = trims(d.log()).filter((l) => Date.parse(l.timestamp as string) >= ended);
    assert.equal(since.length, 1, "one trim per quiet spell");
  } finally {
    await d.stop();
    await echo.close();
  }
});
