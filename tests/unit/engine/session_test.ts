import assert from "node:assert/strict";
import { answer, fakeEngine, send } from "./fake_engine.ts";
import { serviceCounters } from "../../../src/engine/plane.ts";

const TWO = `backends: ["127.0.0.1:9001", "127.0.0.1:9002"]
runtime: {max_failover_attempts: 3}
`;
const text = (b: Uint8Array | null) => b === null ? null : new TextDecoder().decode(b);

Deno.test("session: a refused backend fails over to the next, which is relayed; the end gives everything back", () => {
  const f = fakeEngine(TWO);
  const s = f.client()!;
  answer(f, "refused");
  answer(f, "ok");
  assert.deepEqual(f.calls, [
    "connect 127.0.0.1:9001",
    "connect 127.0.0.1:9002",
    "relay 127.0.0.1:9002",
  ]);
  const first = f.plane.perBackend.get("default/127.0.0.1:9001")!;
  const second = f.plane.perBackend.get("default/127.0.0.1:9002")!;
  assert.equal(first.refused, 1);
  assert.equal(first.active, 0);
  assert.equal(second.active, 1);
  assert.equal(second.served, 1);
  assert.equal(f.results[0].obs.ok, false);
  assert.equal(s.to?.address, "127.0.0.1:9002");
  const relay = f.relays[0];
  relay.progress.aToB = 10;
  relay.progress.bToA = 20;
  relay.progress.firstEnd = "a";
  relay.progress.done = true;
  relay.done();
  assert.deepEqual(f.calls.slice(3), ["close"]);
  assert.equal(second.active, 0);
  assert.equal(f.plane.sessions.size, 0);
  const counters = serviceCounters(f.plane, "default");
  assert.deepEqual([counters.accepted, counters.served, counters.active], [1, 1, 0]);
});

Deno.test("session: when every backend fails the client is closed once, counted no_backend, and health hears it", () => {
  const f = fakeEngine(TWO);
  const s = f.client()!;
  answer(f, "timeout");
  answer(f, "refused");
  assert.deepEqual(f.calls.at(-1), "close");
  assert.equal(f.calls.filter((c) => c === "close").length, 1);
  assert.equal(s.closing, "no_backend");
  assert.deepEqual(f.noBackend, ["default"]);
  assert.equal(serviceCounters(f.plane, "default").no_backend, 1);
  for (const c of f.plane.perBackend.values()) assert.equal(c.active, 0);
  f.plane.close(s, "killed");
  assert.equal(f.calls.filter((c) => c === "close").length, 1, "a finished session ends once");
});

Deno.test("session: a failure of this machine (no descriptors) tries no other backend", () => {
  const f = fakeEngine(TWO);
  f.client();
  answer(f, "local");
  assert.deepEqual(f.calls, ["connect 127.0.0.1:9001", "close"]);
  assert.equal(f.results.length, 0, "the backend is not blamed");
});

Deno.test("session: max_failover_attempts bounds the backends tried", () => {
  const f = fakeEngine(`backends: ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
runtime: {max_failover_attempts: 2}
`);
  f.client();
  answer(f, "refused");
  answer(f, "refused");
  assert.deepEqual(f.calls, ["connect 127.0.0.1:9001", "connect 127.0.0.1:9002", "close"]);
});

Deno.test("session: closed by bal while a connect is under way, the backend's count is given back", () => {
  const f = fakeEngine(TWO);
  const s = f.client()!;
  const pending = f.plane.perBackend.get("default/127.0.0.1:9001")!;
  assert.equal(pending.active, 1);
  f.plane.close(s, "drain_timeout");
  assert.equal(pending.active, 0);
  assert.deepEqual(f.calls, ["connect 127.0.0.1:9001", "close"]);
  assert.equal(s.closing, "drain_timeout");
  assert.equal(f.plane.sessions.size, 0);
});

Deno.test("session: a backend that hangs up on a waiting client is reported; one that answered is not", () => {
  const f = fakeEngine(TWO);
  f.client();
  answer(f, "ok");
  const hung = f.relays[0];
  hung.progress.firstEnd = "b";
  hung.progress.done = true;
  hung.done();
  assert.equal(f.results.at(-1)?.obs.ok, false);
  assert.equal(f.plane.perBackend.get("default/127.0.0.1:9001")!.other, 1);
  const reports = f.results.length;
  f.client();
  answer(f, "ok");
  const answered = f.relays[1];
  answered.progress.bToA = 5;
  answered.progress.firstEnd = "b";
  answered.progress.done = true;
  answered.done();
  assert.equal(f.results.length, reports);
});

Deno.test("session: a PROXY header is read first; the backend gets its own header with the client's bytes after it", () => {
  const f = fakeEngine(`accept_proxy: true
proxy_trusted: ["192.0.2.0/24"]
backends: [{host: 127.0.0.1, port: 9001, send_proxy: v1}]
`);
  const s = f.client()!;
  send(f, "PROXY TCP4 203.0.113.9 203.0.113.1 5555");
  assert.deepEqual(f.calls, ["inspect"], "a partial header decides nothing");
  send(f, " 443\r\nhello");
  assert.deepEqual(s.peer, { hostname: "203.0.113.9", port: 5555 });
  answer(f, "ok");
  assert.equal(
    text(f.relays[0].header),
    "PROXY TCP4 203.0.113.9 203.0.113.1 5555 443\r\nhello",
  );
  assert.equal(f.relays[0].progress.aToB, 5, "the early bytes count as the client's");
  assert.equal(f.plane.perBackend.get(s.to!.id)!.bytes_in, 5);
});

Deno.test("session: without a destination from the client, the PROXY header names bal's own end", () => {
  const f = fakeEngine(`backends: [{host: 127.0.0.1, port: 9001, send_proxy: v1}]\n`);
  f.client({ hostname: "192.0.2.7", port: 40000 });
  answer(f, "ok");
  assert.equal(text(f.relays[0].header), "PROXY TCP4 192.0.2.7 198.51.100.1 40000 7000\r\n");
});

Deno.test("session: a refused first read goes no further and says why", () => {
  const f = fakeEngine(`accept_proxy: true
proxy_trusted: ["192.0.2.0/24"]
backends: ["127.0.0.1:9001"]
`);
  const s = f.client()!;
  send(f, "GET / HTTP/1.1\r\n\r\n");
  assert.deepEqual(f.calls, ["inspect", "close"]);
  assert.equal(s.closing, "proxy_refused");
  assert.equal(serviceCounters(f.plane, "default").proxy_refused, 1);
});

Deno.test("session: kill closes the sessions relayed to one backend only", () => {
  const f = fakeEngine(TWO);
  f.client();
  answer(f, "ok");
  f.client();
  answer(f, "ok");
  const one = f.relays.find((r) => r.backend === "127.0.0.1:9001")!;
  let closed = 0;
  for (const s of [...f.plane.sessions]) {
    if (s.to?.address === one.backend) {
      f.plane.close(s, "killed");
      closed++;
    }
  }
  assert.equal(closed, 1);
  assert.equal(f.plane.sessions.size, 1);
});
