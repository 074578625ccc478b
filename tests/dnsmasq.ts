/**
 * A real DNS server for tests: Debian's dnsmasq on a loopback port,
 * answering for test.lan from a hosts file (TTL 1 s) and SRV records.
 *
 * @module
 */
import { waitFor } from "./helpers.ts";

/** dnsmasq answering for test.lan from a hosts file (TTL 1 s) and `srv` records, until stopped. */
export async function dnsmasq(dir: string, port: number, hosts: string, srv: string[] = []) {
  Deno.writeTextFileSync(`${dir}/hosts`, hosts);
  const child = new Deno.Command("dnsmasq", {
    args: [
      "-k",
      "--conf-file=/dev/null",
      `--port=${port}`,
      "--listen-address=127.0.0.1",
      "--bind-interfaces",
      "--no-resolv",
      "--no-hosts",
      "--local=/test.lan/",
      `--addn-hosts=${dir}/hosts`,
      "--local-ttl=1",
      "--user=root",
      `--pid-file=${dir}/dnsmasq.pid`,
      ...srv.map((s) => `--srv-host=${s}`),
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await waitFor("dnsmasq", async () => {
    try {
      const r = await Deno.resolveDns("ready.test.lan", "A", {
        nameServer: { ipAddr: "127.0.0.1", port },
      }).catch((e) => e instanceof Deno.errors.NotFound);
      return r !== undefined;
    } catch {
      return false;
    }
  });
  return {
    /** New hosts file contents, read again on SIGHUP. */
    hosts(contents: string) {
      Deno.writeTextFileSync(`${dir}/hosts`, contents);
      child.kill("SIGHUP");
    },
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}
