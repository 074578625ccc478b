/**
 * The UDP plane's pure decisions (src/udp/flow_policy.ts): flow keys by
 * mode, admission (ACL, per-client limits, a backend), PROXY v2 origins,
 * idle and answered flows.
 */
import assert from "node:assert/strict";
import { checkConfig, type Service } from "../../../src/config/mod.ts";
import {
  admitFlow,
  answered,
  type FlowContext,
  flowKey,
  idledOut,
  originOf,
} from "../../../src/udp/flow_policy.ts";
import { createBalancer } from "../../../src/balance/methods.ts";
import { clientTable } from "../../../src/route/client_limits.ts";
import { writeProxyHeader } from "../../../src/route/proxy_protocol.ts";

function service(yaml: string): Service {
  const r = checkConfig(`protocol: udp\nport: 5300\n${yaml}`, "/u.yaml");
  assert.ok(r.ok, r.ok ? "" : r.errors[0].message);
  return r.config.services[0];
}

const addr = (hostname: string, port: number) => ({ hostname, port });

function ctx(over: Partial<FlowContext> = {}): FlowContext {
  return {
    health: new Map(),
    admin: new Map(),
    balancer: createBalancer("round_robin"),
    clients: clientTable(),
    active: new Map(),
    now: 1_000,
    random: () => 0.5,
    ...over,
  };
}

Deno.test("udp policy: one flow per sender in session mode, one per datagram in request mode", () => {
  const session = service(`backends: ["10.0.0.1:53"]\n`);
  const request = service(`udp: {mode: request}\nbackends: ["10.0.0.1:53"]\n`);
  const o = { sender: addr("192.0.2.1", 4000), client: addr("192.0.2.1", 4000), headerLength: 0 };
  assert.equal(flowKey(session, o, 1), flowKey(session, o, 2));
  assert.notEqual(flowKey(request, o, 1), flowKey(request, o, 2));
  const other = { ...o, sender: addr("192.0.2.1", 4001), client: addr("192.0.2.1", 4001) };
  assert.notEqual(flowKey(session, o, 1), flowKey(session, other, 1));
});

Deno.test("udp policy: a new flow passes the ACL and the per-client limit, then gets a backend", () => {
  const s = service(
    `deny: ["192.0.2.66"]\nruntime: {max_connections_per_client: 1}\nbackends: ["10.0.0.1:53", "10.0.0.2:53"]\n`,
  );
  const c = ctx();
  assert.equal(admitFlow(s, "192.0.2.66", c), "acl");
  const first = admitFlow(s, "192.0.2.1", c);
  assert.ok(typeof first !== "string");
  c.clients.active.set("192.0.2.1", 1);
  assert.equal(admitFlow(s, "192.0.2.1", c), "limit");
  const down = new Map(s.backends.map((b) => [b.id, { state: "disabled" as const, weight: null }]));
  assert.equal(admitFlow(s, "192.0.2.2", ctx({ admin: down })), "no_backend");
});

Deno.test("udp policy: a PROXY v2 header counts only from a trusted sender", () => {
  const s = service(`accept_proxy: true\nproxy_trusted: ["10.9.0.1"]\nbackends: ["10.0.0.1:53"]\n`);
  const header = writeProxyHeader("v2", { hostname: "192.0.2.7", port: 99 }, {
    hostname: "10.0.0.9",
    port: 53,
  }, "dgram");
  const data = new Uint8Array([...header, 1, 2, 3]);
  const trusted = originOf(s, addr("10.9.0.1", 5000), data);
  assert.ok(trusted !== "proxy");
  assert.deepEqual(trusted.client, addr("192.0.2.7", 99));
  assert.equal(trusted.headerLength, header.length);
  assert.equal(originOf(s, addr("10.9.0.2", 5000), data), "proxy", "a header from anyone else");
  assert.equal(
    originOf(s, addr("10.9.0.1", 5000), new Uint8Array([1])),
    "proxy",
    "a trusted sender without one",
  );
  const plain = originOf(s, addr("10.9.0.2", 5000), new Uint8Array([1]));
  assert.ok(plain !== "proxy" && plain.client.hostname === "10.9.0.2");
});

Deno.test("udp policy: flows end when idle past the timeout, or answered as often as asked", () => {
  const s = service(
    `udp: {mode: request, responses: 2, idle_timeout_ms: 100}\nbackends: ["10.0.0.1:53"]\n`,
  );
  assert.equal(idledOut(s, 1_000, 1_099), false);
  assert.equal(idledOut(s, 1_000, 1_100), true);
  assert.equal(answered(s, 1), false);
  assert.equal(answered(s, 2), true);
  assert.equal(
    answered(service(`backends: ["10.0.0.1:53"]\n`), 5),
    false,
    "sessions end by idling",
  );
});
