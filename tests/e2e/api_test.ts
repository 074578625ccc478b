/**
 * Changing a running bal from code (issue 28), end to end: the admin API
 * driven with curl, the CLI verbs, the config file edited in place, and
 * conflicts, tokens, bad input and crashes.
 */
import assert from "node:assert/strict";
import {
  askName,
  type Backend,
  bal,
  echoBackend,
  freePort,
  nameBackend,
  readN,
  runCommand,
  sha256,
  startDaemon,
  tempHome,
  waitFor,
  writeAll,
} from "../helpers.ts";

const WRITE = "write-token-0123456789";
const READ = "read-token-01234567890";

/** bal started by {@link balWithApi}. */
type Api = Awaited<ReturnType<typeof balWithApi>>;

/** A services-form config with an admin endpoint and two tokens, and bal started on it. */
async function balWithApi(backends: number[], services = "") {
  const home = tempHome();
  const port = freePort(), admin = freePort();
  const config = `${home}/config.yaml`;
  Deno.writeTextFileSync(
    config,
    `# written by hand
admin:
  listen: "127.0.0.1:${admin}"
  tokens:
    - {name: deploy, token: "${WRITE}", role: write}
    - {name: grafana, token: "${READ}", role: read}
runtime:
  health_check_interval_ms: 200
  shutdown_drain_timeout_ms: 10000
services:
  - name: api
    bind_address: 127.0.0.1
    port: ${port}
    backends:
${backends.map((p) => `      - "127.0.0.1:${p}"`).join("\n")}
${services}`,
  );
  const daemon = await startDaemon(home, config, port);
  return { ...daemon, config, api: `http://127.0.0.1:${admin}/api` };
}

/** A test against bal with the API on, one name backend "A" behind service `api`; both stopped after. */
function apiTest(name: string, fn: (d: Api, a: Backend) => Promise<void>): void {
  Deno.test(name, async () => {
    const a = nameBackend("A");
    const d = await balWithApi([a.port]);
    try {
      await fn(d, a);
    } finally {
      await d.stop();
      await a.close();
    }
  });
}

/** curl with a method, a token and a JSON body; the status and the parsed answer. */
async function curl(
  method: string,
  url: string,
  options: { token?: string; body?: unknown } = {},
): Promise<{ status: number; json: Record<string, unknown> }> {
  const args = ["-s", "-X", method, "-w", "\n%{http_code}", url];
  if (options.token) args.push("-H", `Authorization: Bearer ${options.token}`);
  if (options.body !== undefined) {
    args.push("-H", "content-type: application/json", "-d", JSON.stringify(options.body));
  }
  const r = await runCommand("curl", args);
  const at = r.stdout.lastIndexOf("\n");
  const body = r.stdout.slice(0, at);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(body);
  } catch {
    json = { text: body };
  }
  return { status: Number(r.stdout.slice(at + 1)), json };
}

async function statusOf(home: string): Promise<Record<string, unknown>> {
  return JSON.parse((await bal(home, "status", "--json")).stdout);
}

function addressesOf(status: Record<string, unknown>, service: string): string[] {
  const services = status.services as { name: string; backends: { address: string }[] }[];
  return services.find((s) => s.name === service)?.backends.map((b) => b.address) ?? [];
}

Deno.test("api: a backend added with curl takes clients; removed mid-stream, its stream completes and it gets no new client; both survive bal restart", async () => {
  const a = nameBackend("A");
  const b = echoBackend();
  const d = await balWithApi([a.port]);
  try {
    const added = await curl("POST", `${d.api}/services/api/backends`, {
      token: WRITE,
      body: { host: "127.0.0.1", port: b.port, weight: 1 },
    });
    assert.equal(added.status, 201, JSON.stringify(added.json));
    assert.equal(added.json.change, `added backend 127.0.0.1:${b.port} to api`);
    assert.equal(added.json.saved, d.config);
    assert.match(Deno.readTextFileSync(d.config), new RegExp(`port: ${b.port}`));
    // A client that lands on B hears its own bytes back.
    const stream = await waitFor("a client reaches the added backend", async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: d.port });
      await writeAll(c, new Uint8Array([1]));
      const first = await readN(c, 1);
      if (first[0] === 1) return c;
      c.close();
      return null;
    });
    const status = await statusOf(d.home);
    assert.deepEqual(
      addressesOf(status, "api").sort(),
      [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`].sort(),
    );
    assert.equal((status.last_change as { who: string }).who, "token deploy");
    // 4 MiB through B while B is removed.
    const payload = new Uint8Array(4 * 1024 * 1024);
    for (let at = 0; at < payload.length; at += 65536) {
      crypto.getRandomValues(payload.subarray(at, at + 65536));
    }
    const echoed = readN(stream, payload.length);
    const sending = writeAll(stream, payload.subarray(0, 1024 * 1024));
    const removed = await curl("DELETE", `${d.api}/services/api/backends/127.0.0.1:${b.port}`, {
      token: WRITE,
    });
    assert.equal(removed.status, 200, JSON.stringify(removed.json));
    await sending;
    await writeAll(stream, payload.subarray(1024 * 1024));
    assert.equal(sha256(await echoed), sha256(payload), "the stream through the removed backend");
    stream.close();
    const before = b.accepted;
    for (let i = 0; i < 10; i++) assert.equal(await askName(d.port), "A");
    assert.equal(b.accepted, before, "no new client reached the removed backend");
    assert.deepEqual(addressesOf(await statusOf(d.home), "api"), [`127.0.0.1:${a.port}`]);
    // The file is the truth: after a restart the change is still there.
    const added2 = await curl("POST", `${d.api}/services/api/backends`, {
      token: WRITE,
      body: { host: "127.0.0.1", port: b.port },
    });
    assert.equal(added2.status, 201);
    const restarted = await bal(d.home, "restart");
    assert.equal(restarted.code, 0, restarted.stderr);
    await waitFor("the restarted bal answers", async () => (await statusOf(d.home)).running);
    assert.equal(addressesOf(await statusOf(d.home), "api").length, 2);
  } finally {
    await d.stop();
    await Promise.all([a.close(), b.close()]);
  }
});

apiTest(
  "api: a service created listens; deleted, its listener closes; the CLI lists it",
  async (d, a) => {
    const port = freePort();
    const created = await curl("POST", `${d.api}/services`, {
      token: WRITE,
      body: { name: "web", bind_address: "127.0.0.1", port, backends: [`127.0.0.1:${a.port}`] },
    });
    assert.equal(created.status, 201, JSON.stringify(created.json));
    assert.equal(await askName(port), "A");
    const one = await curl("GET", `${d.api}/services/web`, { token: READ });
    assert.equal(one.status, 200);
    assert.equal((one.json.config as { port: number }).port, port);
    assert.equal((one.json.live as { port: number }).port, port);
    const listed = await bal(d.home, "service", "list");
    assert.match(
      listed.stdout,
      new RegExp(`^web  127\\.0\\.0\\.1:${port}  round_robin  1/1 backends up$`, "m"),
    );
    // A PUT whose body names another service renames it; the answer shows it under its new name.
    const renamed = await curl("PUT", `${d.api}/services/web`, {
      token: WRITE,
      body: { name: "www", bind_address: "127.0.0.1", port, backends: [`127.0.0.1:${a.port}`] },
    });
    assert.equal(renamed.status, 200, JSON.stringify(renamed.json));
    assert.equal((renamed.json.service as { name: string }).name, "www");
    assert.equal(await askName(port), "A");
    const gone = await curl("DELETE", `${d.api}/services/www`, { token: WRITE });
    assert.equal(gone.status, 200);
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }), "the listener is closed");
    assert.equal((await curl("GET", `${d.api}/services/web`, { token: READ })).status, 404);
  },
);

Deno.test("api: three changes to a hand-written file touch only their lines (diff)", async () => {
  const a = nameBackend("A");
  const home = tempHome();
  const port = freePort(), admin = freePort();
  const config = `${home}/config.yaml`;
  const original = `# hand-written, odd on purpose
log_level:   info     # spaced out
admin: {listen: "127.0.0.1:${admin}", token: '${WRITE}'}

services:
    # the api, the busiest
    -   name: api
        bind_address: 127.0.0.1
        port: ${port}
        backends:
          - "127.0.0.1:${a.port}"   # first
          - {host: 127.0.0.1,   port: 1, weight: 2}

    # quiet for now
`;
  Deno.writeTextFileSync(config, original);
  Deno.writeTextFileSync(`${home}/original.yaml`, original);
  const d = await startDaemon(home, config, port);
  const api = `http://127.0.0.1:${admin}/api`;
  try {
    for (
      const [method, path, body] of [
        ["PATCH", "/services/api/backends/127.0.0.1:1", { weight: 0 }],
        ["POST", "/services/api/backends", { host: "127.0.0.1", port: 2 }],
        ["DELETE", `/services/api/backends/127.0.0.1:${a.port}`, undefined],
      ] as const
    ) {
      const r = await curl(method, `${api}${path}`, { token: WRITE, body });
      assert.ok(r.status < 300, `${method} ${path}: ${JSON.stringify(r.json)}`);
    }
    const diff = await runCommand("diff", [`${home}/original.yaml`, config]);
    assert.equal(
      diff.stdout,
      `11,12c11,12
<           - "127.0.0.1:${a.port}"   # first
<           - {host: 127.0.0.1,   port: 1, weight: 2}
---
>           - {host: 127.0.0.1,   port: 1, weight: 0}
>           - { host: 127.0.0.1, port: 2 }
`,
    );
  } finally {
    await d.stop();
    await a.close();
  }
});

apiTest(
  "api: a file edited by hand is a 409 and nothing is applied; 20 concurrent adds from two clients all land",
  async (d) => {
    const handEdited = Deno.readTextFileSync(d.config) + "# an edit not yet applied\n";
    Deno.writeTextFileSync(d.config, handEdited);
    const refused = await curl("POST", `${d.api}/services/api/backends`, {
      token: WRITE,
      body: { host: "127.0.0.1", port: 3 },
    });
    assert.equal(refused.status, 409);
    assert.match(String(refused.json.error), /changed on disk since bal loaded it/);
    assert.equal(Deno.readTextFileSync(d.config), handEdited);
    assert.equal(addressesOf(await statusOf(d.home), "api").length, 1);
    assert.equal((await bal(d.home, "graceful")).code, 0);
    // Ten through the API and ten through the CLI, all at once.
    const viaApi = Array.from(
      { length: 10 },
      (_, i) =>
        curl("POST", `${d.api}/services/api/backends`, {
          token: WRITE,
          body: { host: "127.0.0.1", port: 100 + i },
        }).then((r) => r.status),
    );
    const viaCli = Array.from(
      { length: 10 },
      (_, i) => bal(d.home, "backend", "add", "api", `127.0.0.1:${200 + i}`).then((r) => r.code),
    );
    assert.deepEqual(await Promise.all(viaApi), Array(10).fill(201));
    assert.deepEqual(await Promise.all(viaCli), Array(10).fill(0));
    const check = await bal(d.home, "check", "-c", d.config);
    assert.equal(check.code, 0, check.stderr);
    assert.equal(addressesOf(await statusOf(d.home), "api").length, 21);
    const changes = d.log().filter((l) => l.event === "config_changed");
    assert.equal(changes.length, 20);
    assert.ok(
      changes.some((l) =>
        /^uid \d+ \(control socket\)$/.test(String((l.fields as { who: string }).who))
      ),
    );
  },
);

apiTest(
  "api: tokens: none is 401, read may read but gets 403 on a write, write changes",
  async (d) => {
    const body = { host: "127.0.0.1", port: 4 };
    assert.equal((await curl("GET", `${d.api}/services`)).status, 401);
    assert.equal(
      (await curl("GET", `${d.api}/services`, { token: "not-a-known-token-xx" })).status,
      401,
    );
    assert.equal((await curl("GET", `${d.api}/services`, { token: READ })).status, 200);
    const denied = await curl("POST", `${d.api}/services/api/backends`, { token: READ, body });
    assert.equal(denied.status, 403);
    assert.match(String(denied.json.error), /grafana may only read/);
    const metrics = await runCommand("curl", [
      "-sf",
      "-H",
      `Authorization: Bearer ${READ}`,
      d.api.replace("/api", "/metrics"),
    ]);
    assert.equal(metrics.code, 0, "a read token reads /metrics");
    assert.equal(
      (await curl("POST", `${d.api}/services/api/backends`, { token: WRITE, body })).status,
      201,
    );
  },
);

apiTest(
  "api: bad input is a 400 with check's errors and key paths, and changes nothing",
  async (d, a) => {
    const before = Deno.readTextFileSync(d.config);
    const cases: [string, string, unknown, RegExp][] = [
      [
        "POST",
        "/services/api/backends",
        { host: "127.0.0.1", port: 70000 },
        /backends\[1\]\.port: expected an integer from 1 to 65535/,
      ],
      [
        "POST",
        "/services/api/backends",
        { host: "127.0.0.1", port: 5, wieght: 2 },
        /backends\[1\]\.wieght: unknown key; did you mean "weight"/,
      ],
      ["POST", "/services/api/backends", { host: "127.0.0.1", port: a.port }, /already a backend/],
      [
        "POST",
        "/services",
        { name: "a/b", port: freePort(), backends: ["127.0.0.1:1"] },
        /services\[1\]\.name: expected a name/,
      ],
      ["POST", "/services/api/backends", "not an object", /JSON object/],
      ["PATCH", `/services/api/backends/127.0.0.1:${a.port}`, { weight: 999 }, /weight/],
    ];
    for (const [method, path, body, message] of cases) {
      const r = await curl(method, `${d.api}${path}`, { token: WRITE, body });
      assert.equal(
        r.status,
        400,
        `${method} ${path} ${JSON.stringify(body)}: ${JSON.stringify(r.json)}`,
      );
      assert.match(String(r.json.error), message);
    }
    const port = await curl("POST", `${d.api}/services/api/backends`, {
      token: WRITE,
      body: { host: "127.0.0.1", port: 70000 },
    });
    assert.deepEqual((port.json.errors as { key_path: string }[]).map((e) => e.key_path), [
      "services[0].backends[1].port",
    ]);
    assert.equal(Deno.readTextFileSync(d.config), before);
    // Valid, but the reload cannot apply it: the file is put back as it was.
    const taken = Deno.listen({ hostname: "127.0.0.1", port: freePort() });
    const busy = await curl("POST", `${d.api}/services`, {
      token: WRITE,
      body: {
        name: "busy",
        bind_address: "127.0.0.1",
        port: taken.addr.port,
        backends: ["127.0.0.1:1"],
      },
    });
    taken.close();
    assert.equal(busy.status, 409, JSON.stringify(busy.json));
    assert.match(
      String(busy.json.error),
      /^not applied, the file is as it was: .*address already in use/,
    );
    assert.equal(Deno.readTextFileSync(d.config), before);
    assert.equal((await statusOf(d.home)).last_change, null);
    const cli = await bal(d.home, "backend", "add", "api", "127.0.0.1:70000");
    assert.equal(cli.code, 1);
    assert.match(
      cli.stderr,
      /^bal: the change would make an invalid config: .*config\.yaml:\d+:\d+: services\[0\]\.backends\[1\]\.port: /,
    );
  },
);

apiTest(
  "api: kill -9 while changes are written leaves a whole file, the old or the new",
  async (d) => {
    const adds = Array.from(
      { length: 30 },
      (_, i) =>
        curl("POST", `${d.api}/services/api/backends`, {
          token: WRITE,
          body: { host: "127.0.0.1", port: 300 + i },
        }).catch(() => null),
    );
    // The adds land in whatever order they arrive: count them, not look for the sixth port.
    await waitFor(
      "six changes written",
      () => (Deno.readTextFileSync(d.config).match(/port: 3\d\d(?!\d)/g)?.length ?? 0) >= 6,
    );
    Deno.kill(d.pid, "SIGKILL");
    await Promise.all(adds);
    const text = Deno.readTextFileSync(d.config);
    const check = await bal(d.home, "check", "-c", d.config);
    assert.equal(check.code, 0, `${check.stderr}\n${text}`);
    // Every entry written is whole, and none twice.
    const ports = [...text.matchAll(/\{ host: 127\.0\.0\.1, port: (3\d\d) \}\n/g)].map((m) => m[1]);
    assert.ok(ports.length >= 6 && ports.length <= 30, text);
    assert.equal(new Set(ports).size, ports.length);
    assert.equal(text.match(/port: 3\d\d(?!\d)/g)?.length, ports.length, "no partial entry");
  },
);

apiTest(
  "api: every route the server answers, and each answer's status, is in the OpenAPI document",
  async (d, a) => {
    const { OPENAPI } = await import("../../src/admin/openapi.ts");
    const port = freePort();
    const b = `127.0.0.1:${a.port}`;
    const calls: [string, string, string, unknown?][] = [
      ["GET", "/api/openapi.json", "/openapi.json"],
      ["GET", "/api/services", "/services"],
      ["GET", "/api/services/{name}", "/services/api"],
      ["GET", "/api/services/{name}", "/services/nope"],
      ["POST", "/api/services", "/services", {
        name: "w",
        bind_address: "127.0.0.1",
        port,
        backends: [b],
      }],
      ["POST", "/api/services", "/services", { name: "w", port, backends: [b] }],
      ["PUT", "/api/services/{name}", "/services/w", {
        bind_address: "127.0.0.1",
        port,
        backends: [b, "127.0.0.1:9"],
      }],
      ["DELETE", "/api/services/{name}", "/services/w"],
      ["DELETE", "/api/services/{name}", "/services/w"],
      ["POST", "/api/services/{name}/backends", "/services/api/backends", {
        host: "127.0.0.1",
        port: 7,
      }],
      ["POST", "/api/services/{name}/backends", "/services/api/backends", {
        host: "127.0.0.1",
        port: 0,
      }],
      ["PATCH", "/api/services/{name}/backends/{backend}", "/services/api/backends/127.0.0.1:7", {
        weight: 3,
        admin_state: "draining",
      }],
      ["DELETE", "/api/services/{name}/backends/{backend}", "/services/api/backends/127.0.0.1:7"],
      ["DELETE", "/api/services/{name}/backends/{backend}", "/services/api/backends/127.0.0.1:7"],
    ];
    const seen = new Set<number>();
    for (const [method, template, path, body] of calls) {
      const r = await curl(method, `${d.api}${path}`, { token: WRITE, body });
      seen.add(r.status);
      const operation =
        (OPENAPI.paths as unknown as Record<string, Record<string, { responses: object }>>)[
          template
        ][method.toLowerCase()];
      assert.ok(
        Object.keys(operation.responses).includes(String(r.status)),
        `${method} ${path} answered ${r.status}, which the document does not list: ${
          JSON.stringify(r.json)
        }`,
      );
    }
    assert.deepEqual([...seen].sort(), [200, 201, 400, 404]);
  },
);
