/** `bal doctor`: each check's levels and the exit code, against real processes and ports. */
import assert from "node:assert/strict";
import { bal, freePort, nameBackend, startDaemon, tempHome, writeConfig } from "../helpers.ts";

// deno-lint-ignore no-explicit-any -- the doctor JSON is checked field by field below
type Json = any;

async function doctor(home: string, config: string): Promise<{ code: number; json: Json }> {
  const r = await bal(home, "doctor", "-c", config, "--json");
  assert.equal(r.stderr, "");
  return { code: r.code, json: JSON.parse(r.stdout) };
}

const levels = (json: Json) => Object.fromEntries(json.checks.map((c: Json) => [c.name, c.level]));

Deno.test("doctor: all ok when bal could start, with the JSON contract", async () => {
  const a = nameBackend("A");
  const home = tempHome();
  try {
    const config = writeConfig(home, { port: freePort(), backends: [a.port] });
    const { code, json } = await doctor(home, config);
    assert.equal(code, 0);
    assert.deepEqual(json.checks.map((c: Json) => c.name), [
      "pid",
      "socket",
      "config",
      "engine",
      "bind",
      "backend",
      "state",
    ]);
    for (const c of json.checks) {
      // An ok check has no likely cause to give.
      assert.deepEqual(Object.keys(c).sort(), ["hint", "level", "name", "summary"]);
    }
    assert.deepEqual(levels(json), {
      pid: "ok",
      socket: "ok",
      config: "ok",
      engine: "ok",
      bind: "ok",
      backend: "ok",
      state: "ok",
    });
    assert.equal(json.pid, null);
    assert.deepEqual(json.protection_mode, { enabled: false, reason: null, since: null });
    const text = await bal(home, "doctor", "-c", config);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /^\[ok\] backend: 1\/1 backends reachable$/m);
    assert.match(text.stdout, /^next: /m);
  } finally {
    await a.close();
  }
});

Deno.test("doctor: a port taken by another process is critical; by our own bal, ok", async () => {
  const a = nameBackend("A");
  const home = tempHome();
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const taken = writeConfig(
      home,
      { port: (busy.addr as Deno.NetAddr).port, backends: [a.port] },
      "taken.yaml",
    );
    const r = await doctor(home, taken);
    assert.equal(r.code, 1);
    assert.equal(levels(r.json).bind, "critical");
    assert.match(
      r.json.checks.find((c: Json) => c.name === "bind").summary,
      /is in use by another process/,
    );
    const text = await bal(home, "doctor", "-c", taken);
    assert.match(text.stdout, /^what_happened: bind: /m);
    assert.match(text.stdout, /^why_likely: another program, or a bal with another state/m);
    assert.match(text.stdout, /^do_this_now: find it with: ss -ltnp/m);

    const port = freePort();
    const ours = writeConfig(home, { port, backends: [a.port] });
    const d = await startDaemon(home, ours, port);
    try {
      const running = await doctor(home, ours);
      assert.equal(running.code, 0);
      assert.deepEqual(levels(running.json), {
        pid: "ok",
        socket: "ok",
        config: "ok",
        engine: "ok",
        bind: "ok",
        backend: "ok",
        state: "ok",
      });
      assert.match(
        running.json.checks.find((c: Json) => c.name === "bind").summary,
        new RegExp(`in use by the running bal \\(pid ${d.pid}\\)`),
      );
      assert.equal(running.json.checks.find((c: Json) => c.name === "bind").expected, true);
      // bal holding its own port is how it should be: nothing to act on.
      const healthy = await bal(home, "doctor", "-c", ours);
      assert.match(healthy.stdout, /^next: /m);
      assert.doesNotMatch(healthy.stdout, /what_happened/);
      // With a backend down as well, the triplet is about the backend, with its own cause.
      writeConfig(home, { port, backends: [a.port, freePort()] });
      const down = await bal(home, "doctor", "-c", ours);
      assert.equal(down.code, 0);
      assert.match(down.stdout, /^what_happened: backend: 1\/2 backends reachable; unreachable: /m);
      assert.match(down.stdout, /^why_likely: the backend process is not running/m);
      assert.match(down.stdout, /^do_this_now: start the unreachable backends/m);
    } finally {
      await d.stop();
    }
  } finally {
    busy.close();
    await a.close();
  }
});

Deno.test("doctor: a stale pid file warns, an invalid config is critical, no backend reachable is critical", async () => {
  const home = tempHome();
  const gone = new Deno.Command("true").spawn();
  await gone.status;
  Deno.writeTextFileSync(`${home}/bal.pid`, `${gone.pid}\n`);
  const config = writeConfig(home, { port: freePort(), backends: [freePort()] });
  const stale = await doctor(home, config);
  assert.equal(stale.code, 1);
  assert.deepEqual(levels(stale.json), {
    pid: "warn",
    socket: "ok",
    config: "ok",
    engine: "ok",
    bind: "ok",
    backend: "critical",
    state: "ok",
  });
  assert.match(stale.json.checks[0].summary, new RegExp(`stale pid file: pid ${gone.pid}`));

  const bad = `${home}/bad.yaml`;
  Deno.writeTextFileSync(bad, "backends: []\n");
  const invalid = await doctor(home, bad);
  assert.equal(invalid.code, 1);
  assert.deepEqual(invalid.json.checks.map((c: Json) => c.name), [
    "pid",
    "socket",
    "config",
    "state",
  ]);
  assert.equal(levels(invalid.json).config, "critical");
  assert.match(invalid.json.checks[2].hint, /bal check -c/);
});
