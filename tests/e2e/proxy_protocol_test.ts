/**
 * The PROXY protocol against a real peer (Debian's HAProxy), both ways,
 * v1 and v2, IPv4 and IPv6: HAProxy behind bal with `accept-proxy` answers
 * with the client address it was told; HAProxy in front of bal with
 * `send-proxy`/`send-proxy-v2` tells bal who the client is, and bal passes
 * it on. Clients come from 127.0.0.2-4 (all loopback) to be told apart.
 */
import assert from "node:assert/strict";
import {
  bal,
  freePort,
  missingTool,
  startDaemon,
  talkFrom,
  tempHome,
  waitFor,
  writeConfig,
} from "../helpers.ts";

const noHaproxy = missingTool("haproxy");

/** HAProxy run with `config` (its global and defaults added) until `stop`. */
async function haproxy(config: string, ports: number[]): Promise<{ stop(): Promise<void> }> {
  const dir = Deno.makeTempDirSync({ prefix: "bal-haproxy-" });
  Deno.writeTextFileSync(
    `${dir}/haproxy.cfg`,
    `global\n  nbthread 1\ndefaults\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n${config}`,
  );
  const child = new Deno.Command("haproxy", {
    args: ["-db", "-f", `${dir}/haproxy.cfg`],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  for (const port of ports) {
    await waitFor(`haproxy on ${port}`, async () => {
      try {
        (await Deno.connect({ hostname: port < 0 ? "::1" : "127.0.0.1", port: Math.abs(port) }))
          .close();
        return true;
      } catch {
        return false;
      }
    });
  }
  return {
    async stop() {
      child.kill("SIGTERM");
      await child.stderr.cancel();
      await child.status;
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

/** An HTTP GET from `local` to `host:port`; resolves to the response body ("" when closed). */
async function get(host: string, port: number, local: string): Promise<string> {
  const got = await talkFrom(
    host,
    port,
    local,
    "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
  );
  return got.split("\r\n\r\n").slice(1).join("\r\n\r\n");
}

/** Makes a test config listen on `host` instead of 127.0.0.1. */
function listenOn(config: string, host: string): void {
  Deno.writeTextFileSync(
    config,
    Deno.readTextFileSync(config).replace("bind_address: 127.0.0.1", `bind_address: "${host}"`),
  );
}

/** The local port of a connection `get` would make is not known in advance: match it loosely. */
const ADDRESS_AND_PORT = (host: string) =>
  new RegExp(`^${host.replaceAll(".", "\\.").replaceAll(":", "\\:")}:\\d+$`);

for (const version of ["v1", "v2"] as const) {
  for (const family of ["IPv4", "IPv6"] as const) {
    const host = family === "IPv4" ? "127.0.0.1" : "::1";
    const client = family === "IPv4" ? "127.0.0.2" : "::1";
    Deno.test({
      name:
        `proxy protocol ${version} ${family}: HAProxy behind bal (accept-proxy) sees the client`,
      ignore: noHaproxy,
      fn: async () => {
        const hPort = freePort();
        const h = await haproxy(
          `frontend f\n  mode http\n  bind ${
            family === "IPv4" ? host : `[${host}]`
          }:${hPort} accept-proxy\n  http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port]"\n`,
          [family === "IPv4" ? hPort : -hPort],
        );
        const home = tempHome();
        const port = freePort();
        const config = writeConfig(home, {
          port,
          backends: [family === "IPv4" ? `"${host}:${hPort}"` : `"[${host}]:${hPort}"`],
          extra: `send_proxy: ${version}`,
        });
        listenOn(config, host);
        const d = await startDaemon(home, config, port);
        try {
          const body = await get(host, port, client);
          assert.match(body, ADDRESS_AND_PORT(client), `HAProxy said ${JSON.stringify(body)}`);
        } finally {
          await d.stop();
          await h.stop();
        }
      },
    });
    Deno.test({
      name:
        `proxy protocol ${version} ${family}: HAProxy in front of bal (send-proxy) names the client, and bal passes it on`,
      ignore: noHaproxy,
      fn: async () => {
        const home = tempHome();
        const port = freePort();
        const hBack = freePort();
        const hFront = freePort();
        const bracket = (p: number) => family === "IPv4" ? `${host}:${p}` : `[${host}]:${p}`;
        // Behind bal, HAProxy again says who bal says the client is.
        const h = await haproxy(
          `frontend f\n  mode tcp\n  bind ${
            bracket(hFront)
          }\n  default_backend b\nbackend b\n  mode tcp\n  server bal ${bracket(port)} ${
            version === "v1" ? "send-proxy" : "send-proxy-v2"
          }\n` +
            `frontend back\n  mode http\n  bind ${
              bracket(hBack)
            } accept-proxy\n  http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port]"\n`,
          [family === "IPv4" ? hBack : -hBack, family === "IPv4" ? hFront : -hFront],
        );
        const config = writeConfig(home, {
          port,
          backends: [`"${bracket(hBack)}"`],
          extra: `accept_proxy: true\nproxy_trusted: ["${host}"]\nsend_proxy: ${
            version === "v1" ? "v2" : "v1"
          }\naccess_log: true`,
        });
        listenOn(config, host);
        const d = await startDaemon(home, config, port);
        try {
          const body = await get(host, hFront, client);
          assert.match(
            body,
            ADDRESS_AND_PORT(client),
            `the backend was told ${JSON.stringify(body)}`,
          );
          const line = await waitFor(
            "the access line",
            () =>
              d.log().find((l) =>
                l.event === "access" && (l.fields as { ended: string }).ended !== "proxy_refused"
              ),
          );
          const fields = line.fields as { client: string };
          assert.equal(
            fields.client,
            `${family === "IPv4" ? client : `[${client}]`}:${body.split(":").pop()}`,
          );
        } finally {
          await d.stop();
          await h.stop();
        }
      },
    });
  }
}

/** Sends `bytes` from `local` to bal and resolves to what comes back before the close. */
const exchange = (port: number, local: string, bytes: Uint8Array | null) =>
  talkFrom("127.0.0.1", port, local, bytes ?? undefined);

Deno.test("accept_proxy: an untrusted source, a malformed header and a header too late are refused, counted and said; the header's address is what allow/deny see", async () => {
  // Replies with the first line it gets: the PROXY header bal sends it.
  const echoLine = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const c of echoLine) {
      const buf = new Uint8Array(512);
      c.read(buf).then((n) => c.write(buf.subarray(0, n ?? 0))).catch(() => {}).finally(() =>
        c.close()
      );
    }
  })();
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, {
    port,
    backends: [(echoLine.addr as Deno.NetAddr).port],
    runtime: { proxy_header_timeout_ms: 300 },
    extra:
      `accept_proxy: true\nproxy_trusted: ["127.0.0.1/32", "127.0.0.2"]\ndeny: ["10.9.9.9"]\nsend_proxy: v1`,
  });
  const d = await startDaemon(home, config, port);
  const header = (src: string) =>
    new TextEncoder().encode(`PROXY TCP4 ${src} 127.0.0.1 4000 ${port}\r\n`);
  try {
    assert.equal(
      await exchange(port, "127.0.0.2", header("10.1.2.3")),
      `PROXY TCP4 10.1.2.3 127.0.0.1 4000 ${port}\r\n`,
      "the backend is told the header's client and destination",
    );
    assert.equal(await exchange(port, "127.0.0.3", header("10.1.2.3")), "", "untrusted source");
    assert.equal(
      await exchange(port, "127.0.0.2", new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n")),
      "",
    );
    assert.equal(await exchange(port, "127.0.0.2", null), "", "nothing within the timeout");
    assert.equal(
      await exchange(port, "127.0.0.2", header("10.9.9.9")),
      "",
      "denied by its header's address",
    );
    const s = JSON.parse((await bal(home, "status", "--json")).stdout);
    assert.deepEqual(s.services[0].refused_by_cause, {
      limit: 0,
      acl: 1,
      client_limit: 0,
      client_rate: 0,
      proxy: 3,
      route: 0,
      tls_handshake: 0,
      loop: 0,
    });
    const said = d.log().filter((l) => l.event === "proxy_refused");
    assert.equal(said.length, 1, "said at most once a second");
    assert.match(
      String(said[0].message),
      /127\.0\.0\.3 refused by default: PROXY protocol header refused \(not in proxy_trusted\)/,
    );
  } finally {
    await d.stop();
    echoLine.close();
  }
});

Deno.test({
  name: "health_check_send_proxy: checks of an accept-proxy backend pass with it and fail without",
  ignore: noHaproxy,
  fn: async () => {
    const hPort = freePort();
    const h = await haproxy(
      `frontend f\n  mode http\n  bind 127.0.0.1:${hPort} accept-proxy\n  http-request return status 200 content-type text/plain string ok\n`,
      [hPort],
    );
    try {
      for (const sends of [true, false]) {
        const home = tempHome();
        const port = freePort();
        const config = writeConfig(home, {
          port,
          backends: [hPort],
          extra: `health_check: {type: http, path: /}\n${
            sends ? "health_check_send_proxy: true\n" : ""
          }`,
        });
        const d = await startDaemon(home, config, port);
        try {
          await waitFor(`the check to say ${sends ? "up" : "down"}`, async () => {
            const s = JSON.parse((await bal(home, "status", "--json")).stdout);
            const b = s.backends[0];
            return sends
              ? b.consecutive_successes >= 3 && b.reachable
              : b.consecutive_failures >= 3 && !b.reachable;
          }).catch(async (err) => {
            throw new Error(`${err}: ${(await bal(home, "status", "--json")).stdout}`);
          });
        } finally {
          await d.stop();
        }
      }
    } finally {
      await h.stop();
    }
  },
});
