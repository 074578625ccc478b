/**
 * Freed memory goes back to the system once a burst is over (src/instance/heap_trim.ts):
 * bal trims after start-up, and again once a burst of connections has ended.
 */
import assert from "node:assert/strict";
import { closeQuietly, echoBackend, echoing, startBal, waitFor } from "../helpers.ts";

type Line = Record<string, unknown>;
const trims = (log: Line[]) => log.filter((l) => l.event === "heap_trimmed");
/** The trims logged at epoch ms `t` or later. */
const trimsSince = (log: Line[], t: number) =>
  trims(log).filter((l) => Date.parse(l.timestamp as string) >= t);

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
      () => trimsSince(d.log(), ended)[0],
    );
    assert.equal(typeof (after.fields as Line).kib, "number");
    // Two more ticks with nothing coming or going: no second trim for the same quiet spell.
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(trimsSince(d.log(), ended).length, 1, "one trim per quiet spell");
  } finally {
    await d.stop();
    await echo.close();
  }
});
