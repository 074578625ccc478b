/**
 * UDP services end to end (issue 27), with real clients and servers:
 * dnsmasq backends asked through bal by dig and dnsperf, syslog lines sent
 * by logger, and datagram backends of the test's own for sessions, PROXY
 * v2 headers and datagram sizes.
 */
import assert from "node:assert/strict";
import {
  bal,
  dom,
  freePort,
  missingTool,
  runCommand,
  sha256,
  startDaemon,
  tempHome,
  waitFor,
} from "../helpers.ts";
import { dnsmasq } from "../dnsmasq.ts";
import { parseProxyHeader } from "../../src/route/proxy_protocol.ts";

const noDns = missingTool("dnsmasq") || missingTool("dig");

/** Writes `yaml` as the config and starts bal on it; `port` is a UDP port bal listens on. */
async function balWith(yaml: string, port: number) {
  const home = tempHome();
  const config = `${home}/udp.yaml`;
  Deno.writeTextFileSync(
    config,
    `runtime: {health_check_interval_ms: 200, health_check_timeout_ms: 300, health_check_fail_threshold: 2}\n${yaml}`,
  );
  return { ...(await startDaemon(home, config, port)), config };
}

/** Two dnsmasq servers answering www.test.lan with 10.0.0.1 and 10.0.0.2. */
async function twoDns() {
  const ports = [freePort(), freePort()];
  const servers = await Promise.all(ports.map(async (port, i) => {
    const dir = tempHome();
    return await dnsmasq(dir, port, `10.0.0.${i + 1} www.test.lan\n`);
  }));
  return { ports, stop: () => Promise.all(servers.map((s) => s.stop())) };
}

/** What dig through bal answers for www.test.lan ("" when nothing came back). */
async function ask(port: number, tcp = false): Promise<string> {
  const args = ["+short", "+time=1", "+tries=1", "-p", String(port), "@127.0.0.1", "www.test.lan"];
  const r = await runCommand("dig", tcp ? ["+tcp", ...args] : args);
  return r.code === 0 ? r.stdout.trim() : "";
}

/** dnsperf through `port` for `secs` at `qps` (started now, resolved when done): queries sent and lost. */
async function dnsperf(home: string, port: number, secs: number, qps: number) {
  const queries = `${home}/queries.txt`;
  Deno.writeTextFileSync(queries, "www.test.lan A\n".repeat(100));
  const args = ["-s", "127.0.0.1", "-p", String(port), "-d", queries, "-l", String(secs)];
  const out = (await runCommand("dnsperf", [...args, "-Q", String(qps), "-t", "2"])).stdout;
  const count = (what: string) => Number(new RegExp(`Queries ${what}:\\s+(\\d+)`).exec(out)?.[1]);
  return { sent: count("sent"), lost: count("lost"), out };
}

async function udpStatus(home: string, service: string) {
  const s = JSON.parse((await bal(home, "status", "--json")).stdout);
  return s.services.find((x: { name: string }) => x.name === service);
}

Deno.test({
  name:
    "udp: DNS through bal in request mode: answers follow the weights; a dead server is taken out by the dns check; TCP and UDP share the port",
  ignore: noDns,
  fn: async () => {
    const dns = await twoDns();
    const port = freePort();
    const d = await balWith(
      `services:
  - name: dns
    protocol: udp
    bind_address: 127.0.0.1
    port: ${port}
    udp: {mode: request}
    health_check: {type: dns, name: www.test.lan}
    backends: ["127.0.0.1:${dns.ports[0]}", {host: 127.0.0.1, port: ${dns.ports[1]}, weight: 3}]
  - name: dns-tcp
    bind_address: 127.0.0.1
    port: ${port}
    backends: ["127.0.0.1:${dns.ports[0]}"]
`,
      port,
    );
    try {
      const answers: string[] = [];
      for (let i = 0; i < 8; i++) answers.push(await ask(port));
      assert.deepEqual(answers.toSorted(), [
        ...Array(2).fill("10.0.0.1"),
        ...Array(6).fill("10.0.0.2"),
      ]);
      assert.equal(
        await ask(port, true),
        "10.0.0.1",
        "dig +tcp through the TCP service on the same port",
      );
      const s = await udpStatus(d.home, "dns");
      assert.equal(s.protocol, "udp");
      assert.equal(s.udp.datagrams_in, 8);
      assert.equal(s.udp.datagrams_out, 8);
      assert.equal(s.udp.flows_created, 8);
      assert.equal(s.udp.flows_active, 0, "each request's flow ends with its answer");
      assert.deepEqual(s.backends.map((b: { check_type: string }) => b.check_type), ["dns", "dns"]);
      await dns.stop();
      const survivor = await dnsmasq(tempHome(), dns.ports[0], "10.0.0.1 www.test.lan\n");
      try {
        await waitFor("the dns check to take the dead server out", async () => {
          const now = await udpStatus(d.home, "dns");
          return now.backends[1].reachable === false && now.backends[0].reachable === true;
        });
        for (let i = 0; i < 10; i++) assert.equal(await ask(port), "10.0.0.1");
      } finally {
        await survivor.stop();
      }
    } finally {
      await d.stop();
      await dns.stop().catch(() => {});
    }
  },
});

Deno.test({
  name:
    "udp: dnsperf at a fixed rate for 10 s with a reload that adds a backend halfway: no query lost",
  ignore: noDns || missingTool("dnsperf"),
  fn: async () => {
    const dns = await twoDns();
    const port = freePort();
    const service = (backends: number[]) =>
      `services:
  - name: dns
    protocol: udp
    bind_address: 127.0.0.1
    port: ${port}
    udp: {mode: request}
    health_check: {type: dns, name: www.test.lan}
    backends: [${backends.map((p) => `"127.0.0.1:${p}"`).join(", ")}]
`;
    const d = await balWith(service([dns.ports[0]]), port);
    try {
      const perf = dnsperf(d.home, port, 10, 500);
      await new Promise((r) => setTimeout(r, 5000));
      Deno.writeTextFileSync(
        d.config,
        Deno.readTextFileSync(d.config).replace(/^services:[^]*$/m, service(dns.ports)),
      );
      const reload = await bal(d.home, "graceful");
      assert.equal(reload.code, 0, reload.stderr);
      const { sent, lost, out } = await perf;
      assert.ok(sent >= 4000, out);
      assert.equal(lost, 0, out);
      const s = await udpStatus(d.home, "dns");
      assert.ok(s.backends[1].connections_served > 0, "the added backend answered some");
    } finally {
      await d.stop();
      await dns.stop();
    }
  },
});

Deno.test({
  name: "udp: bal upgrade under dnsperf load loses no query (the new bal joins the port)",
  ignore: noDns || missingTool("dnsperf"),
  fn: async () => {
    const dns = await twoDns();
    const port = freePort();
    const d = await balWith(
      `protocol: udp
bind_address: 127.0.0.1
port: ${port}
udp: {mode: request}
backends: ["127.0.0.1:${dns.ports[0]}", "127.0.0.1:${dns.ports[1]}"]
`,
      port,
    );
    try {
      const perf = dnsperf(d.home, port, 6, 500);
      await new Promise((r) => setTimeout(r, 2000));
      const upgraded = await bal(d.home, "upgrade", "--wait");
      assert.equal(upgraded.code, 0, upgraded.stderr);
      const { sent, lost, out } = await perf;
      assert.equal(lost, 0, out);
      assert.ok(sent >= 2500, out);
    } finally {
      await d.stop();
      await dns.stop();
    }
  },
});

/** A UDP backend that records what it receives and, unless `silent`, echoes it with `tag` first. */
function udpBackend(tag = "", silent = false) {
  const conn = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  const received: { data: Uint8Array; from: Deno.NetAddr }[] = [];
  const done = (async () => {
    for (;;) {
      let got: [Uint8Array, Deno.Addr];
      try {
        got = await conn.receive();
      } catch {
        return;
      }
      const [data, from] = got;
      received.push({ data, from: from as Deno.NetAddr });
      if (silent) continue;
      const reply = new Uint8Array(tag.length + data.length);
      reply.set(new TextEncoder().encode(tag));
      reply.set(data, tag.length);
      await conn.send(reply, from).catch(() => {});
    }
  })();
  return {
    port: (conn.addr as Deno.NetAddr).port,
    received,
    async close() {
      conn.close();
      await done;
    },
  };
}

/** A client socket on `hostname` (any port unless given) that asks and waits for one reply. */
function udpClient(hostname = "127.0.0.1", port = 0) {
  const conn = Deno.listenDatagram({ hostname, port, transport: "udp" });
  return {
    port: (conn.addr as Deno.NetAddr).port,
    async ask(to: number, data: Uint8Array, timeoutMs = 2000): Promise<Uint8Array | null> {
      await conn.send(data, { transport: "udp", hostname: "127.0.0.1", port: to });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<null>((r) => timer = setTimeout(() => r(null), timeoutMs));
      const reply = conn.receive().then(([d]) => d);
      const got = await Promise.race([reply, timeout]);
      clearTimeout(timer);
      return got;
    },
    send: (to: number, data: Uint8Array) =>
      conn.send(data, { transport: "udp", hostname: "127.0.0.1", port: to }),
    close: () => conn.close(),
  };
}

const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array | null) => b === null ? null : new TextDecoder().decode(b);

Deno.test("udp: sessions keep their backend for every datagram, and end after idle_timeout_ms", async () => {
  const a = udpBackend("A:"), b = udpBackend("B:");
  const port = freePort(), admin = freePort();
  const d = await balWith(
    `protocol: udp
admin: {listen: "127.0.0.1:${admin}"}
access_log: true
bind_address: 127.0.0.1
port: ${port}
udp: {mode: session, idle_timeout_ms: 4000}
backends: ["127.0.0.1:${a.port}", "127.0.0.1:${b.port}"]
`,
    port,
  );
  // Long enough that B's flow outlives the status, metrics and CLI calls below (a bal CLI
  // starts in 200-500 ms on a slow machine: with 600 ms it had idled out before the count).
  const clients = [udpClient(), udpClient()];
  try {
    const first = await Promise.all(clients.map((c) => c.ask(port, text("hello"))));
    const tags = first.map((r) => str(r)!.slice(0, 2));
    assert.deepEqual(tags.toSorted(), ["A:", "B:"], "round robin puts the two clients apart");
    for (let i = 0; i < 5; i++) {
      for (const [n, c] of clients.entries()) {
        assert.equal(str(await c.ask(port, text(`m${i}`))), `${tags[n]}m${i}`);
      }
    }
    const live = await udpStatus(d.home, "default");
    assert.equal(live.udp.flows_active, 2);
    assert.equal(live.udp.flows_created, 2);
    // The backend sees one source per session: the flow's own socket.
    assert.equal(new Set(a.received.map((r) => r.from.port)).size, 1);
    const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
    assert.match(metrics, /^bal_udp_flows_active\{service="default"\} 2$/m);
    assert.match(metrics, /^bal_udp_datagrams_total\{service="default",direction="out"\} 12$/m);
    if (!missingTool("promtool")) {
      const file = `${d.home}/metrics.txt`;
      Deno.writeTextFileSync(file, metrics);
      const check = await runCommand("sh", ["-c", `promtool check metrics < ${file}`]);
      assert.equal(check.code, 0, check.stdout + check.stderr);
    }
    // disable --kill ends A's flow at once; B's idles out.
    const killed = await bal(
      d.home,
      "backend",
      "disable",
      "default",
      `127.0.0.1:${a.port}`,
      "--kill",
    );
    assert.match(killed.stdout, /closed 1 live connections/);
    assert.equal((await udpStatus(d.home, "default")).udp.flows_active, 1);
    await waitFor("the other flow to idle out", async () => {
      const s = await udpStatus(d.home, "default");
      return s.udp.flows_active === 0 && s.udp.flows_expired === 1;
    });
    // One access line per flow, saying how it ended.
    const ended = await waitFor("both access lines", () => {
      const lines = d.log().filter((l) => l.event === "access");
      return lines.length === 2 ? lines.map((l) => (l.fields as { ended: string }).ended) : null;
    });
    assert.deepEqual(ended.toSorted(), ["idle", "killed"]);
    if (!missingTool("chromium")) {
      // The dashboard shows the UDP words.
      const page = await dom(`http://127.0.0.1:${admin}/`);
      assert.match(
        page,
        /data-udp="default"><span class="tag">udp (native|deno)<\/span> datagrams 12 in, 12 out · flows \d active, 2 created/,
      );
    }
  } finally {
    clients.forEach((c) => c.close());
    await d.stop();
    await Promise.all([a.close(), b.close()]);
  }
});

Deno.test({
  name:
    "udp: an ICMP port unreachable on a flow's socket cools its backend down (native mechanism)",
  ignore: Deno.env.get("BAL_ENGINE") === "deno",
  fn: async () => {
    const live = udpBackend("up:");
    const closed = freePort();
    const port = freePort();
    const d = await balWith(
      `protocol: udp
bind_address: 127.0.0.1
port: ${port}
udp: {mode: request}
backends: ["127.0.0.1:${closed}", "127.0.0.1:${live.port}"]
`,
      port,
    );
    const client = udpClient();
    try {
      const answers: (string | null)[] = [];
      for (let i = 0; i < 20; i++) answers.push(str(await client.ask(port, text(`q${i}`), 300)));
      // The closed port refuses the first tries; from then on every query is answered.
      assert.ok(answers.slice(-10).every((a, i) => a === `up:q${i + 10}`), JSON.stringify(answers));
      const s = await udpStatus(d.home, "default");
      assert.equal(s.udp.engine, "native");
      const refused = s.backends.find((b: { address: string }) => b.address.endsWith(`:${closed}`));
      assert.equal(refused.last_error, "port unreachable (ICMP)");
    } finally {
      client.close();
      await d.stop();
      await live.close();
    }
  },
});

Deno.test("udp: datagrams of 0, 1, 1472 and 65507 bytes pass intact; a larger one than max_datagram_bytes is dropped and counted", async () => {
  const echo = udpBackend();
  const port = freePort(), small = freePort();
  const d = await balWith(
    `services:
  - {name: big, protocol: udp, bind_address: 127.0.0.1, port: ${port}, backends: ["127.0.0.1:${echo.port}"]}
  - {name: small, protocol: udp, bind_address: 127.0.0.1, port: ${small}, udp: {max_datagram_bytes: 100}, backends: ["127.0.0.1:${echo.port}"]}
`,
    port,
  );
  const client = udpClient();
  try {
    for (const size of [0, 1, 1472, 65507]) {
      const payload = new Uint8Array(size);
      for (let at = 0; at < size; at += 65536) {
        crypto.getRandomValues(payload.subarray(at, at + 65536));
      }
      const back = await client.ask(port, payload);
      assert.ok(back !== null, `${size} bytes came back`);
      assert.equal(sha256(back), sha256(payload), `${size} bytes intact`);
    }
    assert.equal((await client.ask(small, new Uint8Array(100)))?.length, 100);
    assert.equal(await client.ask(small, new Uint8Array(101), 500), null, "101 bytes dropped");
    const s = await udpStatus(d.home, "small");
    assert.equal(s.udp.drops.oversize, 1);
  } finally {
    client.close();
    await d.stop();
    await echo.close();
  }
});

Deno.test("udp: PROXY v2 on every datagram names the client; a header from an untrusted sender is dropped and counted", async () => {
  const recorder = udpBackend("", true);
  const port = freePort();
  const d = await balWith(
    `protocol: udp
bind_address: 127.0.0.1
port: ${port}
udp: {mode: request, responses: 0}
send_proxy: v2
accept_proxy: true
proxy_trusted: ["127.0.0.2"]
backends: ["127.0.0.1:${recorder.port}"]
`,
    port,
  );
  const direct = udpClient("127.0.0.1");
  const proxy = udpClient("127.0.0.2");
  try {
    await direct.send(port, text("plain"));
    await waitFor("the datagram at the backend", () => recorder.received.length === 1);
    const header = parseProxyHeader(recorder.received[0].data, "dgram");
    assert.ok(header.kind === "header" && header.version === 2);
    assert.deepEqual(header.source, { hostname: "127.0.0.1", port: direct.port });
    assert.equal(recorder.received[0].data[13], 0x12, "v2, IPv4 over datagrams");
    assert.equal(str(recorder.received[0].data.subarray(header.length)), "plain");
    // A header from a trusted proxy is honoured: the backend hears of the client it names.
    const { writeProxyHeader } = await import("../../src/route/proxy_protocol.ts");
    const named = writeProxyHeader("v2", { hostname: "192.0.2.7", port: 4242 }, {
      hostname: "127.0.0.1",
      port,
    }, "dgram");
    const withHeader = new Uint8Array([...named, ...text("relayed")]);
    await proxy.send(port, withHeader);
    await waitFor("the relayed datagram", () => recorder.received.length === 2);
    const second = parseProxyHeader(recorder.received[1].data, "dgram");
    assert.ok(second.kind === "header");
    assert.deepEqual(second.source, { hostname: "192.0.2.7", port: 4242 });
    assert.equal(str(recorder.received[1].data.subarray(second.length)), "relayed");
    // The same from a sender not in proxy_trusted: dropped.
    await direct.send(port, withHeader);
    await waitFor(
      "the drop counted",
      async () => (await udpStatus(d.home, "default")).udp.drops.proxy === 1,
    );
    assert.equal(recorder.received.length, 2);
  } finally {
    direct.close();
    proxy.close();
    await d.stop();
    await recorder.close();
  }
});

Deno.test({
  name: "udp: logger sends 10,000 numbered syslog lines through bal (responses: 0); all arrive",
  ignore: missingTool("logger"),
  fn: async () => {
    const recorder = udpBackend("", true);
    const port = freePort();
    const d = await balWith(
      `protocol: udp
bind_address: 127.0.0.1
port: ${port}
udp: {mode: request, responses: 0}
backends: ["127.0.0.1:${recorder.port}"]
`,
      port,
    );
    try {
      // In batches of 100: logger -f sends a file's lines within microseconds, and a burst
      // larger than a socket's receive buffer (about 270 such datagrams by default) is lost in
      // the kernel before any receiver sees it.
      for (let from = 0; from < 10_000; from += 100) {
        const part = `${d.home}/part.txt`;
        Deno.writeTextFileSync(
          part,
          Array.from({ length: 100 }, (_, i) => `line ${from + i}`).join("\n") + "\n",
        );
        const r = await runCommand("logger", [
          "--udp",
          "-n",
          "127.0.0.1",
          "-P",
          String(port),
          "-t",
          "t",
          "-f",
          part,
        ]);
        assert.equal(r.code, 0, r.stderr);
        await waitFor(
          "the batch at the backend",
          () => recorder.received.length >= from + 100 || undefined,
        );
      }
      const seen = new Set(recorder.received.map((r) => /line (\d+)/.exec(str(r.data)!)?.[1]));
      assert.equal(seen.size, 10_000);
      const s = await udpStatus(d.home, "default");
      assert.equal(s.udp.datagrams_in, 10_000);
      assert.equal(s.udp.flows_active, 0);
    } finally {
      await d.stop();
      await recorder.close();
    }
  },
});
