/**
 * Backends from DNS against a real DNS server (Debian's dnsmasq) on
 * loopback: a name's A records and SRV records become backends, a change of
 * the records applies within their TTL while traffic flows, with no
 * connection lost, and a name without records is pending, not an error.
 * Backends listen on 127.0.0.2-5 (all loopback) so that each address is
 * another server.
 */
import assert from "node:assert/strict";
import {
  bal,
  freePort,
  missingTool,
  readN,
  startDaemon,
  str,
  tempHome,
  text,
  waitFor,
  writeAll,
} from "../helpers.ts";
import { dnsmasq } from "../dnsmasq.ts";

const noDnsmasq = missingTool("dnsmasq");

/** A backend on `host:port` that answers each connection with `name` and then echoes. */
function named(name: string, host: string, port: number) {
  const listener = Deno.listen({ hostname: host, port });
  const conns = new Set<Deno.Conn>();
  (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      (async () => {
        await writeAll(conn, text(`${name}\n`));
        const buf = new Uint8Array(4096);
        for (;;) {
          const n = await conn.read(buf).catch(() => null);
          if (n === null) break;
          await writeAll(conn, buf.subarray(0, n)).catch(() => {});
        }
      })().catch(() => {}).finally(() => {
        conns.delete(conn);
        try {
          conn.close();
        } catch { /* closed */ }
      });
    }
  })().catch(() => {});
  return {
    close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

/** Which backend a fresh connection through `port` reaches (its first line). */
async function whoAnswers(port: number): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const buf = new Uint8Array(64);
    const n = await conn.read(buf);
    return n === null ? "" : str(buf.subarray(0, n)).trim();
  } finally {
    conn.close();
  }
}

function config(home: string, port: number, dnsPort: number, backends: string, extra = "") {
  const path = `${home}/dns.yaml`;
  Deno.writeTextFileSync(
    path,
    `port: ${port}
bind_address: 127.0.0.1
log_level: debug
resolver: "127.0.0.1:${dnsPort}"
backends:
${backends}
runtime:
  health_check_interval_ms: 200
  health_check_timeout_ms: 150
  backend_connect_timeout_ms: 300
  dns_min_ttl_ms: 200
  dns_max_ttl_ms: 5000
${extra}`,
  );
  return path;
}

const statusOf = async (home: string, path: string) =>
  JSON.parse((await bal(home, "status", "--json", "-c", path)).stdout);

Deno.test({
  name:
    "dns backends: the name's addresses are the backends; a changed record applies within its TTL, no connection lost; no records keep the last set unless allow_empty",
  ignore: noDnsmasq,
  fn: async () => {
    const home = tempHome();
    const [dnsPort, port, backendPort] = [freePort(), freePort(), freePort()];
    const a = named("A", "127.0.0.2", backendPort);
    const b = named("B", "127.0.0.3", backendPort);
    const dns = await dnsmasq(home, dnsPort, "127.0.0.2 web.test.lan\n");
    const path = config(home, port, dnsPort, `  - {dns: "web.test.lan:${backendPort}", weight: 2}`);
    const d = await startDaemon(home, path, port);
    try {
      await waitFor("A through bal", async () => (await whoAnswers(port)) === "A" || undefined);
      const s = await statusOf(home, path);
      assert.deepEqual(
        s.backends.map((x: Record<string, unknown>) => [x.address, x.source, x.origin, x.weight]),
        [[`127.0.0.2:${backendPort}`, "dns", "web.test.lan", 2]],
      );
      assert.equal(s.services[0].discovery[0].state, "ok");
      // A discovered backend is the source's to change, not the file's (issue 28).
      const before = Deno.readTextFileSync(path);
      const removed = await bal(home, "backend", "remove", "default", `127.0.0.2:${backendPort}`);
      assert.equal(removed.code, 1);
      assert.match(
        removed.stderr,
        /comes from dns discovery \(web\.test\.lan\): change the source instead/,
      );
      assert.equal(Deno.readTextFileSync(path), before);
      const text_ = (await bal(home, "status", "-c", path)).stdout;
      assert.match(text_, /dns web\.test\.lan: 1 address, as of \d{4}-/);
      assert.match(
        text_,
        new RegExp(`up   127\\.0\\.0\\.2:${backendPort} \\(dns web\\.test\\.lan, weight 2\\)`),
      );

      // A live connection to A, and clients arriving all along.
      const live = await Deno.connect({ hostname: "127.0.0.1", port });
      assert.equal(str(await readN(live, 2)), "A\n");
      let failures = 0;
      let served = 0;
      let stop = false;
      const traffic = (async () => {
        while (!stop) {
          const who = await whoAnswers(port).catch(() => "");
          if (who === "A" || who === "B") served++;
          else failures++;
        }
      })();
      const changedAt = Date.now();
      dns.hosts("127.0.0.3 web.test.lan\n");
      await waitFor("B through bal", async () => (await whoAnswers(port)) === "B" || undefined);
      const tookMs = Date.now() - changedAt;
      // One TTL (1 s) for the record, then a passing check before the new address gets clients.
      assert.ok(tookMs < 3000, `the new set took ${tookMs} ms`);
      await new Promise((r) => setTimeout(r, 300));
      stop = true;
      await traffic;
      assert.equal(
        failures,
        0,
        `${failures} of ${served + failures} clients failed during the change`,
      );
      // The connection opened before the change still moves bytes both ways.
      await writeAll(live, text("still here"));
      assert.equal(str(await readN(live, 10)), "still here");
      live.close();
      const after = await statusOf(home, path);
      assert.deepEqual(after.backends.map((x: { address: string }) => x.address), [
        `127.0.0.3:${backendPort}`,
      ]);
      assert.ok(d.log().some((l) => l.event === "discovery_changed"), "the change is logged");

      // The record removed: an empty answer keeps the last set, and says how to opt out.
      dns.hosts("");
      await waitFor(
        "the empty answer seen",
        async () => (await statusOf(home, path)).services[0].discovery[0].state === "failing",
      );
      const kept = await statusOf(home, path);
      assert.deepEqual(kept.backends.map((x: { address: string }) => x.address), [
        `127.0.0.3:${backendPort}`,
      ]);
      assert.match(
        kept.services[0].discovery[0].last_error,
        /^no A or AAAA records for web\.test\.lan \(an empty answer keeps the last set; discovery\.allow_empty: true/,
      );
      assert.equal(await whoAnswers(port), "B");

      // With allow_empty, the same answer empties the pool.
      Deno.writeTextFileSync(
        path,
        Deno.readTextFileSync(path) + "discovery: {allow_empty: true}\n",
      );
      assert.equal((await bal(home, "graceful", "-c", path)).code, 0);
      await waitFor(
        "the pool emptied",
        async () => (await statusOf(home, path)).backends.length === 0 || undefined,
      );
      assert.equal((await statusOf(home, path)).services[0].discovery[0].state, "ok");
    } finally {
      await d.stop();
      await dns.stop();
      a.close();
      b.close();
    }
  },
});

Deno.test({
  name:
    "srv backends: targets and ports from SRV records, weights kept, a lower priority as backup; a DNS outage keeps the last set",
  ignore: noDnsmasq,
  fn: async () => {
    const home = tempHome();
    const [dnsPort, port, p1, p2, p3] = [
      freePort(),
      freePort(),
      freePort(),
      freePort(),
      freePort(),
    ];
    const servers = [
      named("A", "127.0.0.2", p1),
      named("B", "127.0.0.3", p2),
      named("C", "127.0.0.4", p3),
    ];
    const hosts = "127.0.0.2 a.test.lan\n127.0.0.3 b.test.lan\n127.0.0.4 c.test.lan\n";
    const srv = [
      `_app._tcp.test.lan,a.test.lan,${p1},0,3`,
      `_app._tcp.test.lan,b.test.lan,${p2},0,1`,
      `_app._tcp.test.lan,c.test.lan,${p3},10,1`,
    ];
    let dns = await dnsmasq(home, dnsPort, hosts, srv);
    const path = config(home, port, dnsPort, `  - {srv: "_app._tcp.test.lan"}`);
    const d = await startDaemon(home, path, port);
    try {
      const rows = await waitFor("three SRV backends up", async () => {
        const s = await statusOf(home, path);
        return s.backends?.length === 3 &&
          s.backends.every((x: { reachable: boolean }) => x.reachable) &&
          s.backends;
      });
      assert.deepEqual(
        rows.map((x: Record<string, unknown>) => [x.address, x.source, x.weight, x.backup]).sort(),
        [
          [`127.0.0.2:${p1}`, "srv", 3, false],
          [`127.0.0.3:${p2}`, "srv", 1, false],
          [`127.0.0.4:${p3}`, "srv", 1, true],
        ],
      );
      const seen: Record<string, number> = {};
      for (let i = 0; i < 40; i++) {
        const who = await whoAnswers(port);
        seen[who] = (seen[who] ?? 0) + 1;
      }
      assert.deepEqual(seen, { A: 30, B: 10 }, "weights 3:1, the backup unused");

      // DNS down: the last set stays, said once; back with a record less: applied.
      await dns.stop();
      await waitFor("the failure said", () => d.log().some((l) => l.event === "discovery_failed"));
      assert.equal(await whoAnswers(port), "A");
      assert.equal((await statusOf(home, path)).services[0].discovery[0].state, "failing");
      dns = await dnsmasq(home, dnsPort, hosts, [srv[0], srv[2]]);
      await waitFor(
        "B gone",
        async () => (await statusOf(home, path)).backends.length === 2 || undefined,
      );
      assert.ok(d.log().some((l) => l.event === "discovery_recovered"));
      assert.equal(
        d.log().filter((l) => l.event === "discovery_failed").length,
        1,
        "once per outage",
      );
    } finally {
      await d.stop();
      await dns.stop();
      for (const s of servers) s.close();
    }
  },
});

Deno.test({
  name:
    "dns backends: a name without records is pending, not an error; its first record brings it in",
  ignore: noDnsmasq,
  fn: async () => {
    const home = tempHome();
    const [dnsPort, port, backendPort] = [freePort(), freePort(), freePort()];
    const a = named("A", "127.0.0.5", backendPort);
    const dns = await dnsmasq(home, dnsPort, "");
    const path = config(home, port, dnsPort, `  - {dns: "later.test.lan:${backendPort}"}`);
    const d = await startDaemon(home, path, port);
    try {
      const s = await statusOf(home, path);
      assert.equal(s.services[0].discovery[0].state, "pending");
      assert.match(String(s.services[0].discovery[0].last_error), /no A or AAAA records|code 3/);
      assert.equal(s.backends.length, 0);
      assert.equal(await whoAnswers(port).catch(() => ""), "", "no backend yet: closed");
      dns.hosts("127.0.0.5 later.test.lan\n");
      await waitFor(
        "A through bal",
        async () => (await whoAnswers(port).catch(() => "")) === "A" || undefined,
      );
    } finally {
      await d.stop();
      await dns.stop();
      a.close();
    }
  },
});
