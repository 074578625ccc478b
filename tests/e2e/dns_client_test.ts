/**
 * The DNS client against a UDP server that answers with broken messages:
 * each is said as a "malformed answer" at once, never left to time out.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { lookup } from "../../src/discovery/dns_client.ts";
import { name, pointer, response, rr, u16 } from "../dns_messages.ts";

Deno.test('dns client: a broken answer from the server is "malformed answer", not a timeout', async () => {
  // node:dgram, since Deno's own UDP sockets need --unstable-net, which the test task lacks.
  const server = dgram.createSocket("udp4");
  await new Promise<void>((ok) => server.bind(0, "127.0.0.1", ok));
  const port = server.address().port;
  const question = [...name("x.example"), ...u16(1), ...u16(1)];
  // Each answer carries the query's id, so only its body is wrong.
  const broken: Array<[string, (id: number) => Uint8Array]> = [
    ["DNS name pointers loop", (id) => response(id, [...pointer(12), ...u16(1), ...u16(1)], [])],
    ["DNS record longer than the response", (id) => {
      const whole = response(id, question, [rr(pointer(12), 1, 5, [1, 2, 3, 4])]);
      return whole.subarray(0, whole.length - 2);
    }],
    ["DNS record longer than the response", (id) => {
      const bad = response(id, question, [rr(pointer(12), 1, 5, [1, 2, 3, 4])]);
      bad[bad.length - 5] = 0xff; // rdlength far past the end
      return bad;
    }],
  ];
  let answered = 0;
  server.on("message", (query: Uint8Array, from: { address: string; port: number }) => {
    const make = broken[answered++ % broken.length][1];
    server.send(make((query[0] << 8) | query[1]), from.port, from.address);
  });
  try {
    for (const [reason] of broken) {
      const r = await lookup({ hostname: "127.0.0.1", port }, "x.example", "A");
      assert.equal(r, `malformed answer: ${reason}`);
    }
  } finally {
    await new Promise<void>((ok) => server.close(ok));
  }
});
