/** Who may go on (admission.ts) and what their first bytes decide (inspect.ts), on a fake plane. */
import assert from "node:assert/strict";
import { answer, fakeEngine, send } from "./fake_engine.ts";
import { serviceCounters } from "../../../src/engine/plane.ts";

const client = (hostname: string, port = 40000) => ({ hostname, port });
const hello = (name: string) =>
  Uint8Array.from(
    Deno.readTextFileSync(new URL(`../../fixtures/client_hello/${name}.hex`, import.meta.url))
      .trim().match(/../g)!,
    (h) => parseInt(h, 16),
  );

Deno.test("admission: deny and allow lists refuse before any backend is tried, and count it", () => {
  const f = fakeEngine(`backends: ["127.0.0.1:9001"]\ndeny: ["192.0.2.0/24"]\n`);
  assert.equal(f.client(client("192.0.2.7")), null);
  assert.ok(f.client(client("198.51.100.7")));
  const c = serviceCounters(f.plane, "default");
  assert.deepEqual([c.accepted, c.denied, c.active], [2, 1, 1]);
  assert.deepEqual(f.calls, ["connect 127.0.0.1:9001"]);
});

Deno.test("admission: max_concurrent_connections closes the client over it; one ending frees its place", () => {
  const f = fakeEngine(`backends: ["127.0.0.1:9001"]\nruntime: {max_concurrent_connections: 1}\n`);
  const first = f.client()!;
  assert.equal(f.client(), null);
  assert.equal(serviceCounters(f.plane, "default").rejected, 1);
  f.plane.close(first, "killed");
  assert.ok(f.client());
});

Deno.test("admission: max_connections_per_client counts one address's live clients", () => {
  const f = fakeEngine(`backends: ["127.0.0.1:9001"]\nruntime: {max_connections_per_client: 2}\n`);
  const a = f.client(client("192.0.2.7", 1))!;
  assert.ok(f.client(client("192.0.2.7", 2)));
  assert.equal(f.client(client("192.0.2.7", 3)), null);
  assert.ok(f.client(client("192.0.2.8", 1)), "another address has its own count");
  f.plane.close(a, "killed");
  assert.ok(f.client(client("192.0.2.7", 4)));
  assert.equal(serviceCounters(f.plane, "default").client_limited, 1);
});

Deno.test("admission: with accept_proxy only proxy_trusted may connect, and the ACL judges the address in the header", () => {
  const f = fakeEngine(`accept_proxy: true
proxy_trusted: ["127.0.0.1"]
deny: ["203.0.113.0/24"]
backends: ["127.0.0.1:9001"]
`);
  assert.equal(f.client(client("192.0.2.7")), null, "not a trusted proxy");
  const denied = f.client(client("127.0.0.1"))!;
  send(f, "PROXY TCP4 203.0.113.9 203.0.113.1 5555 443\r\n");
  assert.equal(denied.closing, "denied");
  const allowed = f.client(client("127.0.0.1"))!;
  send(f, "PROXY TCP4 198.51.100.9 203.0.113.1 5555 443\r\n");
  assert.equal(allowed.closing, null);
  const c = serviceCounters(f.plane, "default");
  assert.deepEqual([c.proxy_refused, c.denied], [1, 1]);
  assert.deepEqual(f.calls.filter((x) => x.startsWith("connect")), ["connect 127.0.0.1:9001"]);
});

const ROUTES = `routes:
  - {name: app, sni: [app.example.com], backends: ["127.0.0.1:9001"]}
  - {name: api, sni: [api.example.com], backends: ["127.0.0.1:9002"]}
`;

Deno.test("inspect: the ClientHello's server name picks the route, and the hello goes to its backend first", () => {
  const f = fakeEngine(ROUTES);
  const s = f.client()!;
  const bytes = hello("tls12_sni");
  send(f, bytes.subarray(0, 20));
  assert.deepEqual(f.calls, ["inspect"], "a partial hello decides nothing");
  send(f, bytes.subarray(20));
  assert.equal(s.route, "api");
  answer(f, "ok");
  assert.deepEqual(f.relays[0].header, bytes);
});

Deno.test("inspect: a name no route takes, without default_route, is refused as no_route", () => {
  const f = fakeEngine(ROUTES);
  const s = f.client()!;
  send(f, hello("node_sni"));
  assert.equal(s.closing, "no_route");
  assert.equal(serviceCounters(f.plane, "default").no_route, 1);
  assert.deepEqual(f.calls, ["inspect", "close"]);
});

Deno.test("inspect: with default_route, a client that is not TLS goes there with what it sent", () => {
  const f = fakeEngine(
    `${ROUTES}  - {name: other, backends: ["127.0.0.1:9009"]}\ndefault_route: other\n`,
  );
  const s = f.client()!;
  send(f, "SSH-2.0-OpenSSH_9.6\r\n");
  assert.equal(s.route, "other");
  answer(f, "ok");
  assert.equal(new TextDecoder().decode(f.relays[0].header!), "SSH-2.0-OpenSSH_9.6\r\n");
});
