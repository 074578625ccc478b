/**
 * Backends from etcd against a real etcd (Debian's etcd-server) started on
 * loopback: two bal instances watching one prefix converge on the same
 * backends within a second of each `etcdctl put` and `del`, a key put with
 * a lease goes when the lease expires, and etcd restarting while bal runs
 * keeps the last known set (said once) until it answers again.
 */
import assert from "node:assert/strict";
import {
  askName,
  bal,
  freePort,
  missingTool,
  nameBackend,
  startDaemon,
  tempHome,
  waitFor,
} from "../helpers.ts";

const noEtcd = missingTool("etcd") || missingTool("etcdctl");

/** etcd with its data in `dir`, listening on loopback `ports` (clients, peers). */
async function etcd(dir: string, ports: [number, number]) {
  const client = `http://127.0.0.1:${ports[0]}`;
  const peer = `http://127.0.0.1:${ports[1]}`;
  const child = new Deno.Command("etcd", {
    args: [
      `--data-dir=${dir}/etcd`,
      "--name=test",
      `--listen-client-urls=${client}`,
      `--advertise-client-urls=${client}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=test=${peer}`,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await waitFor("etcd", async () => {
    try {
      return (await fetch(`${client}/health`).then((r) => r.text())).includes("true");
    } catch {
      return false;
    }
  }, 20_000);
  return {
    endpoint: client,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

/** `etcdctl ARGS` against `endpoint`; its output. */
async function etcdctl(endpoint: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command("etcdctl", {
    args: [`--endpoints=${endpoint}`, ...args],
    env: { ETCDCTL_API: "3" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.ok(out.success, `etcdctl ${args.join(" ")}: ${said}`);
  return said;
}

function config(home: string, port: number, endpoint: string, allowEmpty = false) {
  const path = `${home}/etcd.yaml`;
  Deno.writeTextFileSync(
    path,
    `log_level: debug
services:
  - name: web
    port: ${port}
    bind_address: 127.0.0.1
    discovery:
      etcd:
        endpoints: ["${endpoint}"]
        prefix: /bal/web/${allowEmpty ? "\n      allow_empty: true" : ""}
    runtime:
      health_check_interval_ms: 200
      health_check_timeout_ms: 150
      backend_connect_timeout_ms: 300
`,
  );
  return path;
}

const addresses = async (home: string, path: string): Promise<string[]> => {
  const s = JSON.parse((await bal(home, "status", "--json", "-c", path)).stdout);
  return (s.backends ?? []).map((b: { address: string }) => b.address).sort();
};

const discovery = async (home: string, path: string) =>
  JSON.parse((await bal(home, "status", "--json", "-c", path)).stdout).services[0].discovery[0];

Deno.test({
  name:
    "etcd backends: two bal instances converge on each put and del within a second; a lease's key goes with it; an emptied prefix keeps the last set unless allow_empty",
  ignore: noEtcd,
  fn: async () => {
    const dir = tempHome();
    const store = await etcd(dir, [freePort(), freePort()]);
    const [pa, pb] = [freePort(), freePort()];
    const backends = [nameBackend("A", pa, "127.0.0.2"), nameBackend("B", pb, "127.0.0.3")];
    const homes = [tempHome(), tempHome()];
    const ports = [freePort(), freePort()];
    // The second opts in to an empty pool when the prefix empties; the first keeps its last set.
    const paths = homes.map((h, i) => config(h, ports[i], store.endpoint, i === 1));
    const daemons = [
      await startDaemon(homes[0], paths[0], ports[0]),
      await startDaemon(homes[1], paths[1], ports[1]),
    ];
    const converged = async (what: string, want: string[]) => {
      const begun = Date.now();
      for (const [i, home] of homes.entries()) {
        await waitFor(
          `${what} on bal ${i + 1}`,
          async () =>
            JSON.stringify(await addresses(home, paths[i])) === JSON.stringify(want) || undefined,
        );
      }
      return Date.now() - begun;
    };
    try {
      assert.deepEqual(await addresses(homes[0], paths[0]), [], "no keys yet: no backends");
      await etcdctl(store.endpoint, "put", "/bal/web/a", `{"host":"127.0.0.2","port":${pa}}`);
      const first = await converged("a", [`127.0.0.2:${pa}`]);
      assert.ok(first < 1000, `took ${first} ms`);
      await waitFor(
        "A through both",
        async () =>
          (await askName(ports[0])) === "A" && (await askName(ports[1])) === "A" || undefined,
      );
      await etcdctl(
        store.endpoint,
        "put",
        "/bal/web/b",
        `{"host":"127.0.0.3","port":${pb},"weight":3}`,
      );
      assert.ok(await converged("a and b", [`127.0.0.2:${pa}`, `127.0.0.3:${pb}`]) < 1000);
      const s = JSON.parse((await bal(homes[1], "status", "--json", "-c", paths[1])).stdout);
      const b = s.backends.find((x: { address: string }) => x.address === `127.0.0.3:${pb}`);
      assert.deepEqual([b.source, b.origin, b.weight], ["etcd", "/bal/web/", 3]);
      await etcdctl(store.endpoint, "del", "/bal/web/a");
      assert.ok(await converged("b only", [`127.0.0.3:${pb}`]) < 1000);

      // A backend that registers with a lease and stops renewing it disappears.
      const lease =
        /lease ([0-9a-f]+) granted/.exec(await etcdctl(store.endpoint, "lease", "grant", "2"))![1];
      await etcdctl(
        store.endpoint,
        "put",
        "--lease",
        lease,
        "/bal/web/a",
        `{"host":"127.0.0.2","port":${pa}}`,
      );
      await converged("a is back", [`127.0.0.2:${pa}`, `127.0.0.3:${pb}`]);
      const asOf = async () => (await discovery(homes[0], paths[0])).resolved_at;
      const before = await asOf();
      await converged("the lease expired", [`127.0.0.3:${pb}`]);
      assert.ok(await asOf() > before, 'status\'s "as of" moves with the watch');

      // The prefix emptied: the first keeps its last set and says why; the second opts in to none.
      await etcdctl(store.endpoint, "del", "--prefix", "/bal/web/");
      await waitFor("bal 2 empty", async () => (await addresses(homes[1], paths[1])).length === 0);
      const kept = await discovery(homes[0], paths[0]);
      assert.deepEqual(await addresses(homes[0], paths[0]), [`127.0.0.3:${pb}`]);
      assert.equal(kept.state, "failing");
      assert.match(
        kept.last_error,
        /^no keys under \/bal\/web\/ \(an empty answer keeps the last set; discovery.allow_empty: true lets it empty the pool\)$/,
      );
      assert.equal((await discovery(homes[1], paths[1])).state, "ok");
      assert.equal(await askName(ports[0]), "B");
    } finally {
      for (const d of daemons) await d.stop();
      for (const b of backends) await b.close();
      await store.stop();
    }
  },
});

Deno.test({
  name: "etcd backends: etcd restarting keeps the last set, said once, and the watch resumes",
  ignore: noEtcd,
  fn: async () => {
    const dir = tempHome();
    const etcdPorts: [number, number] = [freePort(), freePort()];
    let store = await etcd(dir, etcdPorts);
    const pa = freePort();
    const a = nameBackend("A", pa, "127.0.0.4");
    const b = nameBackend("B", pa, "127.0.0.5");
    const home = tempHome();
    const port = freePort();
    const path = config(home, port, store.endpoint);
    await etcdctl(store.endpoint, "put", "/bal/web/a", `{"host":"127.0.0.4","port":${pa}}`);
    const d = await startDaemon(home, path, port);
    try {
      await waitFor("A", async () => (await askName(port)) === "A" || undefined);
      await store.stop();
      await waitFor("the outage said", () => d.log().some((l) => l.event === "discovery_failed"));
      const said = d.log().find((l) => l.event === "discovery_failed")!;
      assert.match(String(said.message), /; keeping the last address$/);
      assert.equal(await askName(port), "A", "the last known set keeps serving");
      const s = JSON.parse((await bal(home, "status", "--json", "-c", path)).stdout);
      assert.equal(s.services[0].discovery[0].state, "failing");
      store = await etcd(dir, etcdPorts);
      await waitFor(
        "recovered",
        () => d.log().some((l) => l.event === "discovery_recovered"),
        20_000,
      );
      await etcdctl(store.endpoint, "put", "/bal/web/b", `{"host":"127.0.0.5","port":${pa}}`);
      await waitFor("b too", async () => (await addresses(home, path)).length === 2 || undefined);
      assert.equal(
        d.log().filter((l) => l.event === "discovery_failed").length,
        1,
        "once per outage",
      );
    } finally {
      await d.stop();
      await a.close();
      await b.close();
      await store.stop();
    }
  },
});
