/**
 * Who may connect: allow/deny lists and per-client limits, as pure
 * functions, as config, and end to end with clients on 127.0.0.2,
 * 127.0.0.3 and 127.0.0.4 (every 127/8 address is this machine's loopback).
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { checkConfig, configWarnings, parseConfig } from "../../src/config/mod.ts";
import { aclAllows, addressBytes, contains, parseCidr } from "../../src/route/acl.ts";
import {
  checkClient,
  clientLeft,
  clientTable,
  countClient,
  pruneBuckets,
} from "../../src/route/client_limits.ts";
import {
  bal,
  freePort,
  nameBackend,
  startDaemon,
  talkFrom,
  tempHome,
  waitFor,
  writeConfig,
} from "../helpers.ts";

const F = "/etc/bal/a.yaml";

function cidr(text: string) {
  const c = parseCidr(text);
  if (typeof c === "string") throw new Error(`${text} ${c}`);
  return c;
}

Deno.test("acl: CIDR blocks match IPv4, IPv6 and IPv4-mapped clients; deny wins; no allow list means everyone", () => {
  const ip = (a: string) => addressBytes(a)!;
  assert.ok(contains(cidr("10.0.0.0/8"), ip("10.200.3.4")));
  assert.ok(!contains(cidr("10.0.0.0/8"), ip("11.0.0.1")));
  assert.ok(contains(cidr("192.168.1.128/25"), ip("192.168.1.200")));
  assert.ok(!contains(cidr("192.168.1.128/25"), ip("192.168.1.127")));
  assert.ok(contains(cidr("0.0.0.0/0"), ip("8.8.8.8")));
  assert.ok(contains(cidr("127.0.0.2"), ip("::ffff:127.0.0.2")), "a mapped client is its IPv4");
  assert.ok(contains(cidr("2001:db8::/32"), ip("2001:db8:ffff::1")));
  assert.ok(!contains(cidr("2001:db8::/33"), ip("2001:db8:8000::1")));
  assert.ok(!contains(cidr("::/0"), ip("10.0.0.1")), "families never match each other");
  for (const bad of ["10.0.0.0/33", "::/129", "10.0.0/8", "x", "10.0.0.1/8/8", "10.0.0.0/-1", ""]) {
    assert.equal(typeof parseCidr(bad), "string", bad);
  }
  const acl = { allow: [cidr("127.0.0.0/8")], deny: [cidr("127.0.0.3")] };
  assert.ok(aclAllows(acl, "127.0.0.2"));
  assert.ok(!aclAllows(acl, "127.0.0.3"), "deny wins over allow");
  assert.ok(!aclAllows(acl, "10.0.0.1"), "not in the allow list");
  assert.ok(!aclAllows(acl, "not an address"));
  assert.ok(aclAllows({ allow: null, deny: [cidr("::1")] }, "10.0.0.1"));
  assert.ok(!aclAllows({ allow: null, deny: [cidr("::1")] }, "::1"));
});

Deno.test("client limits: open connections per client, a token bucket per client, and pruning", () => {
  const t = clientTable();
  const limits = { maxConnections: 2, ratePerSecond: 0 };
  for (let i = 0; i < 2; i++) {
    assert.equal(checkClient(t, "a", limits, 0), null);
    countClient(t, "a");
  }
  assert.equal(checkClient(t, "a", limits, 0), "client_limit");
  assert.equal(checkClient(t, "b", limits, 0), null, "another client has its own count");
  clientLeft(t, "a");
  assert.equal(checkClient(t, "a", limits, 0), null);
  clientLeft(t, "a");
  clientLeft(t, "a");
  assert.equal(t.active.size, 0, "a client with nothing open is forgotten");

  const rate = { maxConnections: 0, ratePerSecond: 5 };
  const at0 = Array.from({ length: 8 }, () => checkClient(t, "c", rate, 1000));
  assert.deepEqual(at0.filter((r) => r === null).length, 5, "a burst of one second's worth");
  assert.equal(at0[7], "client_rate");
  assert.equal(checkClient(t, "c", rate, 1100), "client_rate", "0.5 token after 100 ms");
  assert.equal(checkClient(t, "c", rate, 1200), null, "one token after 200 ms");
  assert.equal(checkClient(t, "d", rate, 1200), null, "another client has its own bucket");
  pruneBuckets(t, 5, 1300);
  assert.ok(t.buckets.has("c") && t.buckets.has("d"), "partly spent buckets stay");
  pruneBuckets(t, 5, 5000);
  assert.equal(t.buckets.size, 0, "refilled buckets are forgotten");
});

Deno.test("config: allow, deny and the per-client limits, with positions for what is wrong", () => {
  const c = parseConfig(
    `port: 80\nbackends: ["10.0.0.1:80"]\nallow: ["10.0.0.0/8", "::1"]\ndeny: [10.0.0.66]\nruntime: {max_connections_per_client: 10, connection_rate_per_client: 20}\n`,
    F,
  );
  const s = c.services[0];
  assert.deepEqual(s.acl.allow?.map((x) => x.text), ["10.0.0.0/8", "::1"]);
  assert.deepEqual(s.acl.deny.map((x) => x.text), ["10.0.0.66"]);
  assert.equal(s.runtime.max_connections_per_client, 10);
  assert.equal(s.runtime.connection_rate_per_client, 20);
  assert.equal(parseConfig(`port: 80\nbackends: ["10.0.0.1:80"]\n`, F).services[0].acl.allow, null);
  const r = checkConfig(
    `services:\n  - name: a\n    port: 80\n    backends: ["10.0.0.1:80"]\n    allow: ["10.0.0.0/33", 7]\n    deny: 10.0.0.1\n`,
    F,
  );
  assert.equal(r.ok, false);
  assert.deepEqual(r.ok ? [] : r.errors.map((e) => e.message), [
    `${F}:5:13: services[0].allow[0]: the text "10.0.0.0/33" has a prefix length outside 0-32`,
    `${F}:5:28: services[0].allow[1]: 7 is not text`,
    `${F}:6:11: services[0].deny: expected a list of addresses or CIDR blocks, e.g. ["10.0.0.0/8", "::1"], got the text "10.0.0.1"`,
  ]);
});

/** Connects from `local` (a loopback address) and reads what the backend says, "" when closed. */
const askFrom = (local: string, port: number) => talkFrom("127.0.0.1", port, local);

/** Opens a connection from `local` and resolves once the backend's name arrived; the socket stays open. */
function holdFrom(local: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress: local });
    socket.once("data", () => resolve(socket));
    socket.once("close", () => reject(new Error(`${local} was closed`)));
    socket.on("error", () => {});
  });
}

Deno.test("acl: allowed clients are served, denied and unlisted ones closed at once, counted and logged once a second", async () => {
  const a = nameBackend("A");
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, {
    port,
    backends: [a.port],
    extra: `allow: ["127.0.0.0/30"]\ndeny: ["127.0.0.3"]\naccess_log: true`,
  });
  const d = await startDaemon(home, config, port);
  try {
    const check = await bal(home, "check", "--verbose", "-c", config);
    assert.match(check.stdout, /allow: 127\.0\.0\.0\/30\n.*deny: 127\.0\.0\.3\n/);
    assert.equal(await askFrom("127.0.0.2", port), "A");
    assert.equal(await askFrom("127.0.0.3", port), "", "denied");
    assert.equal(await askFrom("127.0.0.4", port), "", "not in the allow list");
    assert.equal(await askFrom("127.0.0.3", port), "");
    const status = JSON.parse((await bal(home, "status", "--json")).stdout);
    assert.deepEqual(status.services[0].refused_by_cause, {
      limit: 0,
      acl: 3,
      client_limit: 0,
      client_rate: 0,
      proxy: 0,
      route: 0,
      tls_handshake: 0,
      loop: 0,
    });
    assert.equal(status.connections_accepted, 4);
    assert.match((await bal(home, "status")).stdout, /3 denied by allow\/deny/);
    const log = await waitFor("the access lines", () => {
      const lines = d.log();
      return lines.filter((l) => l.event === "access").length >= 4 && lines;
    });
    const denied = log.filter((l) => l.event === "client_denied");
    assert.equal(denied.length, 1, "said once within the second");
    assert.match(String(denied[0].message), /127\.0\.0\.3 refused by default: not allowed/);
    const ended = log.filter((l) => l.event === "access").map((l) =>
      (l.fields as { ended: string }).ended
    );
    assert.deepEqual(ended.sort(), ["backend_closed", "denied", "denied", "denied"]);
  } finally {
    await d.stop();
    await a.close();
  }
});

Deno.test("client limits: one client's connections and rate are capped, another client is not", async () => {
  const a = nameBackend("A");
  const hold = nameBackendHolding("H");
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, {
    port,
    backends: [hold.port],
    runtime: { max_connections_per_client: 2 },
  });
  const d = await startDaemon(home, config, port);
  const open: net.Socket[] = [];
  try {
    open.push(await holdFrom("127.0.0.2", port), await holdFrom("127.0.0.2", port));
    assert.equal(await askFrom("127.0.0.2", port), "", "a third at once is refused");
    open.push(await holdFrom("127.0.0.3", port));
    open.shift()!.destroy();
    await waitFor("a slot back", async () => (await askStays("127.0.0.2", port)) === "H");
    const status = JSON.parse((await bal(home, "status", "--json")).stdout);
    assert.ok(status.services[0].refused_by_cause.client_limit >= 1);
  } finally {
    for (const s of open) s.destroy();
    await d.stop();
  }
  // The rate: 5 a second, so of 12 quick connections about 5 get through.
  const rateHome = tempHome();
  const ratePort = freePort();
  const rateConfig = writeConfig(rateHome, {
    port: ratePort,
    backends: [a.port],
    runtime: { connection_rate_per_client: 5 },
  });
  const r = await startDaemon(rateHome, rateConfig, ratePort);
  try {
    const answers = await Promise.all(
      Array.from({ length: 12 }, () => askFrom("127.0.0.2", ratePort)),
    );
    const served = answers.filter((x) => x === "A").length;
    assert.ok(served >= 5 && served <= 7, `${served} of 12 served at 5 a second`);
    assert.equal(await askFrom("127.0.0.3", ratePort), "A", "another client has its own rate");
    const status = JSON.parse((await bal(rateHome, "status", "--json")).stdout);
    assert.equal(status.services[0].refused_by_cause.client_rate, 12 - served);
  } finally {
    await r.stop();
    await a.close();
    await hold.close();
  }
});

/** A backend that says its name and keeps the connection open until the client closes it. */
function nameBackendHolding(name: string) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  (async () => {
    for await (const c of listener) {
      conns.push(c);
      c.write(new TextEncoder().encode(name)).then(() => c.read(new Uint8Array(16))).catch(
        () => {},
      ).finally(() => {
        try {
          c.close();
        } catch { /* closed */ }
      });
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await Promise.resolve();
    },
  };
}

/** Like {@link holdFrom}, but closes at once: what the backend said, "" when refused. */
async function askStays(local: string, port: number): Promise<string> {
  try {
    const s = await holdFrom(local, port);
    s.destroy();
    return "H";
  } catch {
    return "";
  }
}

Deno.test("config: warns of an empty allow list and of proxy_trusted without accept_proxy", () => {
  const c = parseConfig(
    `port: 80\nbind_address: 0.0.0.0\nbackends: ["10.0.0.1:80"]\nallow: []\nproxy_trusted: [10.0.0.5]\n`,
    F,
  );
  assert.deepEqual(configWarnings(c), [
    "allow: an empty list refuses every client; remove it to let in everyone not denied",
    "proxy_trusted: has no effect without accept_proxy: true (no PROXY header is read)",
  ]);
  const fine = parseConfig(
    `port: 80\nbind_address: 0.0.0.0\nbackends: ["10.0.0.1:80"]\nallow: [10.0.0.0/8]\naccept_proxy: true\nproxy_trusted: [10.0.0.5]\n`,
    F,
  );
  assert.deepEqual(configWarnings(fine), []);
});
