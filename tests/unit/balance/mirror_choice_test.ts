/** Which connections a mirror copies: none, all, a share drawn per connection, or by client IP. */
import assert from "node:assert/strict";
import { mirrored } from "../../../src/balance/mirror_choice.ts";
import type { Mirror } from "../../../src/config/schema.ts";

const mirror = (percent: number): Mirror => ({
  host: "127.0.0.1",
  port: 9100,
  address: "127.0.0.1:9100",
  percent,
  send_proxy: null,
  buffer_bytes: 1 << 20,
});

Deno.test("mirror choice: 0 and 100 percent, and no mirror", () => {
  assert.equal(mirrored(null, "round_robin", "10.0.0.1", () => 0), false);
  assert.equal(mirrored(mirror(0), "round_robin", "10.0.0.1", () => 0), false);
  assert.equal(mirrored(mirror(100), "round_robin", "10.0.0.1", () => 0.999), true);
});

Deno.test("mirror choice: a share drawn per connection", () => {
  assert.equal(mirrored(mirror(10), "round_robin", "10.0.0.1", () => 0.09), true);
  assert.equal(mirrored(mirror(10), "round_robin", "10.0.0.1", () => 0.1), false);
});

Deno.test("mirror choice: with source_hash a client is mirrored every time or never, about percent of clients", () => {
  let chosen = 0;
  for (let i = 0; i < 2000; i++) {
    const ip = `10.${i >> 8}.${i & 255}.7`;
    const first = mirrored(mirror(25), "source_hash", ip, Math.random);
    for (let k = 0; k < 3; k++) {
      assert.equal(mirrored(mirror(25), "source_hash", ip, Math.random), first);
    }
    if (first) chosen++;
  }
  assert.ok(chosen > 400 && chosen < 600, `${chosen} of 2,000 clients`);
});
