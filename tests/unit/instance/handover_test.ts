/** The hand-over's words to the operator: pure. */
import assert from "node:assert/strict";
import { refusalReason } from "../../../src/instance/handover.ts";

Deno.test("handover: a bal from before upgrades is told apart, and needs one cold restart", () => {
  assert.match(
    refusalReason('unknown cmd "handover"; known: status, reload'),
    /predates bal upgrade; restart it cold once \(bal stop, then bal start -d\)/,
  );
  const busy = "an upgrade is already under way (new bal pid 42); wait for it to finish";
  assert.equal(refusalReason(busy), busy);
});
