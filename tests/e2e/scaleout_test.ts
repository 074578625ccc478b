/**
 * Two bal hosts behind one keepalived (VRRP) virtual IP, built for real with
 * network namespaces: hosts h1 and h2 each run bal and keepalived, a client
 * namespace and a backend namespace, all on one bridge (10.99.0.0/24, the
 * VIP 10.99.0.100). bal sends the PROXY protocol, so the backend sees the
 * client's address, and the connection's source says which bal carried it.
 *
 * It checks that clients reach the backend through the VIP, that killing
 * the active bal moves the VIP and new connections succeed within seconds,
 * that the same holds when the active host's link goes down, and that a
 * connection held to the survivor is never disturbed. Every namespace and
 * process it makes, it removes; it is skipped, saying why, where network
 * namespaces cannot be made.
 */
import assert from "node:assert/strict";
import { alive, missingTool, readPid, ROOT, runCommand, tempHome } from "../helpers.ts";

/** Why this machine cannot run the test, or null. */
function unsupported(): string | null {
  if (Deno.build.os !== "linux") return "network namespaces are Linux only";
  if (missingTool("keepalived")) return "keepalived is not installed";
  const probe = `balprobe${Deno.pid % 100000}`;
  const made = new Deno.Command("ip", { args: ["netns", "add", probe], stderr: "null" })
    .outputSync();
  if (!made.success) return "cannot create network namespaces here (needs root and ip netns)";
  new Deno.Command("ip", { args: ["netns", "del", probe], stderr: "null" }).outputSync();
  return null;
}
const why = unsupported();
if (why) console.log(`scale-out test skipped: ${why}`);

const NET = "10.99.0";
const VIP = `${NET}.100`;
const HOSTS = { h1: `${NET}.11`, h2: `${NET}.12`, cl: `${NET}.21`, be: `${NET}.31` };
type Host = keyof typeof HOSTS;

async function sh(cmd: string, ...args: string[]): Promise<string> {
  const r = await runCommand(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** A bridge namespace and one namespace per host, each with a veth on the bridge. */
async function network(tag: string) {
  const ns = (h: string) => `${tag}${h}`;
  const made: string[] = [];
  const teardown = async () => {
    for (const n of made.reverse()) await runCommand("ip", ["netns", "del", n]);
  };
  try {
    for (const n of ["sw", ...Object.keys(HOSTS)]) {
      await sh("ip", "netns", "add", ns(n));
      made.push(ns(n));
    }
    await sh("ip", "-n", ns("sw"), "link", "add", "br0", "type", "bridge", "mcast_snooping", "0");
    await sh("ip", "-n", ns("sw"), "link", "set", "br0", "up");
    for (const [h, address] of Object.entries(HOSTS)) {
      await sh(
        "ip",
        "link",
        "add",
        ns(h),
        "netns",
        ns(h),
        "type",
        "veth",
        "peer",
        "name",
        `${tag}p${h}`,
        "netns",
        ns("sw"),
      );
      await sh("ip", "-n", ns("sw"), "link", "set", `${tag}p${h}`, "master", "br0", "up");
      await sh("ip", "-n", ns(h), "link", "set", "lo", "up");
      await sh("ip", "-n", ns(h), "addr", "add", `${address}/24`, "dev", ns(h));
      await sh("ip", "-n", ns(h), "link", "set", ns(h), "up");
    }
  } catch (err) {
    await teardown();
    throw err;
  }
  return { ns, teardown };
}

/** Spawns `args` in namespace `ns`; killed at teardown. */
function spawnIn(ns: string, args: string[], env: Record<string, string> = {}) {
  return new Deno.Command("ip", {
    args: ["netns", "exec", ns, ...args],
    cwd: ROOT,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
}

const BACKEND = `
// Reads bal's PROXY v1 line, answers with the client it names and the bal that carried it, then echoes.
const l = Deno.listen({ hostname: "0.0.0.0", port: 9000 });
for await (const c of l) {
  (async () => {
    const buf = new Uint8Array(4096);
    let got = "";
    while (!got.includes("\\r\\n")) {
      const n = await c.read(buf);
      if (n === null) return c.close();
      got += new TextDecoder().decode(buf.subarray(0, n));
    }
    const client = got.split(" ")[2];
    const via = (c.remoteAddr as Deno.NetAddr).hostname;
    await c.write(new TextEncoder().encode("client " + client + " via " + via + "\\n"));
    for (;;) {
      const n = await c.read(buf).catch(() => null);
      if (n === null) break;
      await c.write(buf.subarray(0, n));
    }
    c.close();
  })().catch(() => {});
}
`;

const CLIENT = `
// Every 200 ms: a new connection to the VIP (which bal answered), and a byte
// echoed over one connection held to h2 itself. One line per result.
const [vip, held, secs] = [Deno.args[0], Deno.args[1], Number(Deno.args[2])];
const line = (s) => console.log(Date.now() + " " + s);
const first = async (c) => {
  const buf = new Uint8Array(128);
  const n = await c.read(buf);
  return n === null ? "" : new TextDecoder().decode(buf.subarray(0, n)).trim();
};
const keep = await Deno.connect({ hostname: held, port: 8080 });
line("held " + await first(keep));
const end = Date.now() + secs * 1000;
while (Date.now() < end) {
  try {
    const c = await Promise.race([
      Deno.connect({ hostname: vip, port: 8080 }),
      new Promise((_, no) => setTimeout(() => no(new Error("connect timeout")), 500)),
    ]);
    line("vip ok " + await first(c));
    c.close();
  } catch (e) {
    line("vip fail " + e.message);
  }
  try {
    await keep.write(new TextEncoder().encode("x"));
    const buf = new Uint8Array(1);
    line((await keep.read(buf)) === 1 ? "held ok" : "held fail closed");
  } catch (e) {
    line("held fail " + e.message);
  }
  await new Promise((r) => setTimeout(r, 200));
}
keep.close();
`;

/** keepalived's config for host `h`: VIP with priority `priority`, given up when bal stops answering. */
function keepalivedConf(dir: string, h: Host, iface: string, priority: number): string {
  const check = `${dir}/check-${h}.sh`;
  Deno.writeTextFileSync(check, "#!/bin/bash\nexec 3<>/dev/tcp/127.0.0.1/8080\n");
  Deno.chmodSync(check, 0o755);
  const conf = `${dir}/keepalived-${h}.conf`;
  Deno.writeTextFileSync(
    conf,
    `global_defs {
  router_id ${h}
  script_user root
}
vrrp_script bal_up {
  script "${check}"
  interval 1
  fall 1
  rise 2
}
vrrp_instance bal {
  state BACKUP
  interface ${iface}
  virtual_router_id 51
  priority ${priority}
  advert_int 1
  virtual_ipaddress {
    ${VIP}/24
  }
  track_script {
    bal_up
  }
}
`,
  );
  return conf;
}

/** The lines a long-running client prints, awaited one condition at a time. */
function lines(child: Deno.ChildProcess) {
  const seen: string[] = [];
  const reading = (async () => {
    let rest = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      rest += chunk;
      const parts = rest.split("\n");
      rest = parts.pop()!;
      seen.push(...parts);
    }
  })();
  return {
    seen,
    reading,
    async until(what: string, test: (l: string) => boolean, from = 0, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const i = seen.findIndex((l, j) => j >= from && test(l));
        if (i >= 0) return { index: i, at: Number(seen[i].split(" ")[0]) };
        if (Date.now() > deadline) {
          throw new Error(
            `no "${what}" within ${timeoutMs} ms; last lines: ${seen.slice(-5).join(" | ")}`,
          );
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

const startBal = (ns: string, home: string, config: string) =>
  sh(
    "ip",
    "netns",
    "exec",
    ns,
    "env",
    `BAL_HOME=${home}`,
    Deno.execPath(),
    "task",
    "-q",
    "bal",
    "start",
    "-d",
    "-c",
    config,
  );

Deno.test({
  name:
    "scale-out: two bal hosts behind a keepalived VIP; the VIP moves when the active bal or its link dies, the survivor's connections untouched",
  ignore: why !== null,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const tag = `b${Deno.pid % 100000}`;
    const dir = tempHome();
    const net = await network(tag);
    const children: Deno.ChildProcess[] = [];
    const homes: Record<"h1" | "h2", string> = { h1: `${dir}/h1`, h2: `${dir}/h2` };
    try {
      Deno.writeTextFileSync(`${dir}/backend.ts`, BACKEND);
      Deno.writeTextFileSync(`${dir}/client.js`, CLIENT);
      children.push(
        spawnIn(net.ns("be"), [Deno.execPath(), "run", "--allow-net", `${dir}/backend.ts`]),
      );
      for (const h of ["h1", "h2"] as const) {
        Deno.mkdirSync(homes[h]);
        const config = `${homes[h]}/config.yaml`;
        Deno.writeTextFileSync(
          config,
          `port: 8080\nbind_address: 0.0.0.0\nsend_proxy: v1\nbackends: ["${HOSTS.be}:9000"]\n`,
        );
        await startBal(net.ns(h), homes[h], config);
        const conf = keepalivedConf(dir, h, net.ns(h), h === "h1" ? 150 : 100);
        children.push(spawnIn(net.ns(h), [
          "keepalived",
          "-n",
          "-l",
          "-f",
          conf,
          "-p",
          `${dir}/${h}.pid`,
          "-r",
          `${dir}/${h}.vrrp.pid`,
          "-c",
          `${dir}/${h}.check.pid`,
        ]));
      }
      const vipOn = async (h: string) =>
        (await sh("ip", "-n", net.ns(h), "-4", "addr", "show")).includes(`${VIP}/`);
      for (let i = 0; i < 100 && !(await vipOn("h1")); i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(await vipOn("h1"), "h1 (priority 150) holds the VIP");

      const client = spawnIn(net.ns("cl"), [
        Deno.execPath(),
        "run",
        "--allow-net",
        `${dir}/client.js`,
        VIP,
        HOSTS.h2,
        "40",
      ]);
      children.push(client);
      const out = lines(client);
      await out.until("held", (l) => l.includes(`held client ${HOSTS.cl} via ${HOSTS.h2}`));
      const viaH1 = `vip ok client ${HOSTS.cl} via ${HOSTS.h1}`;
      const viaH2 = `vip ok client ${HOSTS.cl} via ${HOSTS.h2}`;
      let mark = await out.until("the VIP through h1", (l) => l.endsWith(viaH1));

      // The active bal dies: the VIP moves to h2.
      const pid1 = readPid(homes.h1)!;
      Deno.kill(pid1, "SIGKILL");
      const killedAt = Date.now();
      const moved = await out.until("the VIP through h2", (l) => l.endsWith(viaH2), mark.index);
      assert.ok(moved.at - killedAt < 10_000, `new connections waited ${moved.at - killedAt} ms`);
      assert.ok(await vipOn("h2"));

      // h1's bal is back: h1 takes the VIP again (higher priority); then its link goes down.
      await startBal(net.ns("h1"), homes.h1, `${homes.h1}/config.yaml`);
      mark = await out.until("the VIP back on h1", (l) => l.endsWith(viaH1), moved.index, 20_000);
      await sh("ip", "-n", net.ns("h1"), "link", "set", net.ns("h1"), "down");
      const downAt = Date.now();
      const again = await out.until(
        "the VIP through h2 again",
        (l) => l.endsWith(viaH2),
        mark.index,
      );
      assert.ok(again.at - downAt < 10_000, `new connections waited ${again.at - downAt} ms`);

      // The connection held to h2 all along was never disturbed.
      const held = out.seen.filter((l) => / held (ok|fail)/.test(l));
      console.log(
        `VIP failover: bal killed ${moved.at - killedAt} ms, link down ${
          again.at - downAt
        } ms; ${held.length} held checks`,
      );
      assert.ok(held.length > 20, `${held.length} held checks`);
      assert.deepEqual(held.filter((l) => !l.endsWith("held ok")), []);
    } finally {
      for (const h of ["h1", "h2"] as const) {
        const pid = readPid(homes[h]);
        if (pid && alive(pid)) Deno.kill(pid, "SIGKILL");
      }
      // keepalived ends the processes it forked on SIGTERM; SIGKILL would orphan them.
      for (const c of children) {
        try {
          c.kill("SIGTERM");
        } catch { /* gone */ }
        const t = setTimeout(() => {
          try {
            c.kill("SIGKILL");
          } catch { /* gone */ }
        }, 5000);
        await c.status;
        clearTimeout(t);
      }
      await net.teardown();
    }
  },
});
