/**
 * The CLI end to end: `deno task bal ...` with a temporary BAL_HOME, real
 * processes, signals and files.
 */
import assert from "node:assert/strict";
import {
  alive,
  askName,
  bal,
  freePort,
  nameBackend,
  portTaken,
  readLog,
  readPid,
  ROOT,
  runCommand,
  startBal,
  startDaemon,
  tempHome,
  waitFor,
  writeConfig,
} from "../helpers.ts";
import { DEFAULT_CONFIG_TEXT } from "../../src/config/mod.ts";

const noStackTrace = (s: string) =>
  assert.doesNotMatch(s, /^\s+at .*:\d+:\d+\)?$/m, `stack trace in:\n${s}`);

Deno.test("cli: --version, --help and per-command help", async () => {
  const home = tempHome();
  const v = await bal(home, "--version");
  assert.equal(v.code, 0);
  const version = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)).version;
  assert.equal(v.stdout.trim(), `bal ${version}`);
  for (const flag of ["-v", "-V"]) {
    assert.equal((await bal(home, flag)).stdout.trim(), `bal ${version}`);
  }
  const help = await bal(home, "--help");
  assert.equal(help.code, 0);
  for (const cmd of ["start", "init", "check", "graceful", "stop"]) {
    assert.match(help.stdout, new RegExp(`\\b${cmd}\\b`));
  }
  const startHelp = await bal(home, "start", "--help");
  assert.equal(startHelp.code, 0);
  assert.match(startHelp.stdout, /-c, --config <file>/);
  assert.match(startHelp.stdout, /-d, --daemon/);
  assert.doesNotMatch(startHelp.stdout, /daemon-child/);
  const bad = await bal(home, "frobnicate");
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^bal: unknown command 'frobnicate'/m);
});

Deno.test("cli: check reports a valid config", async () => {
  const home = tempHome();
  const config = writeConfig(home, { port: 9999, backends: [9000, "'[::1]:9100'"] });
  const r = await bal(home, "check", "-c", config);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`config OK: ${config}`));
  assert.match(r.stdout, /listen 127\.0\.0\.1:9999, round_robin/);
  assert.match(r.stdout, /2 backends: 127\.0\.0\.1:9000, \[::1\]:9100/);
});

Deno.test("cli: check rejects a bad config with file, line:column and key, no stack trace", async () => {
  const home = tempHome();
  const path = `${home}/bad.yaml`;
  Deno.writeTextFileSync(
    path,
    "port: 70000\nbackends:\n  - {host: 127.0.0.1, port: 9000}\nruntim: {}\n",
  );
  const r = await bal(home, "check", "-c", path);
  assert.equal(r.code, 1);
  assert.deepEqual(r.stdout.trim().split("\n"), [
    `what_happened: ${path} is not a valid config (2 errors)`,
    "why_likely: expected an integer from 1 to 65535, got 70000",
    `do_this_now: fix ${path}:1:7, then run \`bal check\` again`,
  ]);
  assert.deepEqual(r.stderr.trim().split("\n"), [
    `bal: ${path}:1:7: port: expected an integer from 1 to 65535, got 70000`,
    `bal: ${path}:4:1: runtim: unknown key; did you mean "runtime"?`,
  ]);
  noStackTrace(r.stderr);
});

Deno.test("cli: check --json reports errors, warnings, the backend count and the services, and nothing else", async () => {
  const home = tempHome();
  const good = writeConfig(home, { port: 9999, backends: [9000, 9001] });
  const ok = await bal(home, "check", "-c", good, "--json");
  assert.equal(ok.code, 0);
  const report = JSON.parse(ok.stdout);
  assert.deepEqual(report.services.map((s: { name: string; port: number }) => [s.name, s.port]), [
    ["default", 9999],
  ]);
  delete report.services;
  assert.deepEqual(report, {
    config_path: good,
    errors: [],
    warnings: [],
    backend_count: 2,
  });
  assert.equal(ok.stderr, "");

  const bad = `${home}/bad.yaml`;
  Deno.writeTextFileSync(bad, "port: 0\nbackends: [{host: a, port: 1}]\n");
  const r = await bal(home, "check", "-c", bad, "--json");
  assert.equal(r.code, 1);
  assert.equal(r.stderr, "");
  assert.deepEqual(JSON.parse(r.stdout), {
    config_path: bad,
    errors: [`${bad}:1:7: port: expected an integer from 1 to 65535, got 0`],
    warnings: [],
    backend_count: null,
    services: null,
  });
});

Deno.test("cli: check warns of exposure and overlapping checks; --strict fails; a backend that is bal itself is an error", async () => {
  const home = tempHome();
  const path = `${home}/w.yaml`;
  Deno.writeTextFileSync(
    path,
    "port: 9295\nbackends: ['10.1.2.3:9295', 'localhost:9000']\nruntime: {health_check_timeout_ms: 6000}\n",
  );
  const r = await bal(home, "check", "-c", path, "--json");
  assert.equal(r.code, 0);
  assert.deepEqual(JSON.parse(r.stdout).warnings, [
    "bind_address: not set, so bal listens on every interface (0.0.0.0); write `bind_address: 0.0.0.0` to mean it, or 127.0.0.1 for local clients only",
    "runtime.health_check_timeout_ms: 6000 is not below health_check_interval_ms (500); a check that times out delays the next round, so a dead backend is found later than the interval suggests",
  ]);
  const loop = `${home}/loop.yaml`;
  Deno.writeTextFileSync(loop, "port: 9295\nbackends:\n  - 127.0.0.3:9000\n  - 127.0.0.1:9295\n");
  for (const command of ["check", "start"]) {
    const refused = await bal(home, command, "-c", loop);
    assert.equal(refused.code, 1, command);
    assert.match(
      refused.stderr,
      new RegExp(
        `^bal: ${loop}:4:5: backends\\[1\\]: 127\\.0\\.0\\.1:9295 is bal's own listen address, so every client would loop back into bal without end; point it at the server behind bal$`,
        "m",
      ),
      command,
    );
  }
  const text = await bal(home, "check", "-c", path);
  assert.equal(text.code, 0);
  assert.match(text.stdout, /^warning: bind_address: not set/m);
  assert.match(text.stdout, /^next: bal start -d -c /m);
  const strict = await bal(home, "check", "-c", path, "--strict");
  assert.equal(strict.code, 1);
  assert.match(strict.stdout, /^what_happened: --strict and 2 warnings$/m);
  assert.equal((await bal(home, "check", "-c", path, "--strict", "--json")).code, 1);
  const clean = writeConfig(home, { port: 9999, backends: [9000] });
  assert.equal((await bal(home, "check", "-c", clean, "--strict")).code, 0);
  // This machine's own cap on listen backlogs.
  const somaxconn = Number(Deno.readTextFileSync("/proc/sys/net/core/somaxconn"));
  const backlog = Math.min(somaxconn + 1, 65535);
  const big = writeConfig(home, {
    port: 9999,
    backends: [9000],
    runtime: { tcp_backlog: backlog },
  });
  const capped = await bal(home, "check", "-c", big, "--json");
  assert.deepEqual(
    JSON.parse(capped.stdout).warnings,
    somaxconn < 65535
      ? [
        `runtime.tcp_backlog: ${backlog} is above net.core.somaxconn (${somaxconn}) on this machine; the kernel listens with ${somaxconn}`,
      ]
      : [],
  );
});

Deno.test("cli: check --verbose lists every runtime setting in force", async () => {
  const home = tempHome();
  const path = writeConfig(home, {
    port: 9999,
    backends: [9000],
    runtime: { backend_connect_timeout_ms: 777 },
  });
  const r = await bal(home, "check", "-c", path, "--verbose");
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^ {2}runtime\.backend_connect_timeout_ms: 777$/m);
  assert.match(r.stdout, /^ {2}runtime\.shutdown_drain_timeout_ms: 5000$/m);
});

Deno.test("cli: check of a missing file, and of the default path", async () => {
  const home = tempHome();
  const r = await bal(home, "check");
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`^bal: ${home}/config.yaml: not found`));
  const relative = await bal(home, "check", "-c", "no/such.yaml");
  assert.equal(relative.code, 1);
  assert.match(relative.stderr, new RegExp(`${ROOT}no/such.yaml: not found`));
});

Deno.test("cli: init writes the default config once and never overwrites it", async () => {
  const home = tempHome();
  const first = await bal(home, "init");
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.stdout.trim(), `wrote the default config to ${home}/config.yaml`);
  assert.equal(Deno.readTextFileSync(`${home}/config.yaml`), DEFAULT_CONFIG_TEXT);
  Deno.writeTextFileSync(`${home}/config.yaml`, "edited");
  const again = await bal(home, "init");
  assert.equal(again.code, 0);
  assert.equal(again.stdout.trim(), `${home}/config.yaml exists; left as it is`);
  assert.equal(Deno.readTextFileSync(`${home}/config.yaml`), "edited");
  const nested = await bal(home, "init", "-c", `${home}/other.yaml`);
  assert.equal(nested.code, 0);
  assert.equal((await bal(home, "check", "-c", `${home}/other.yaml`)).code, 0);
});

Deno.test({
  name: "cli: first start writes the commented default config and runs on it",
  // The default config listens on 9295: where a bal of the developer's already runs, this
  // test would collide with it, so outside CI it waits for a free 9295.
  ignore: portTaken(9295) && !Deno.env.get("CI"),
}, async () => {
  const home = tempHome();
  const r = await bal(home, "start", "-d");
  try {
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`wrote the default config to ${home}/config.yaml`));
    assert.match(
      r.stdout,
      /bal started in the background \(pid \d+\), listening on 0\.0\.0\.0:9295/,
    );
    assert.equal(Deno.readTextFileSync(`${home}/config.yaml`), DEFAULT_CONFIG_TEXT);
    assert.match(DEFAULT_CONFIG_TEXT, /^# /m);
    const check = await bal(home, "check");
    assert.equal(check.code, 0);
  } finally {
    assert.equal((await bal(home, "stop")).code, 0);
  }
  // The second start keeps the file the operator may have edited.
  const edited = DEFAULT_CONFIG_TEXT.replace("port: 9295", `port: ${freePort()}`) + "# mine\n";
  Deno.writeTextFileSync(`${home}/config.yaml`, edited);
  const again = await bal(home, "start", "-d");
  try {
    assert.equal(again.code, 0, again.stderr);
    assert.doesNotMatch(again.stdout, /wrote the default config/);
    assert.equal(Deno.readTextFileSync(`${home}/config.yaml`), edited);
  } finally {
    await bal(home, "stop");
  }
});

Deno.test("cli: start -d returns once listening, writes pid and logs JSON; stop drains and cleans up", async () => {
  const home = tempHome();
  const backend = nameBackend("A");
  const port = freePort();
  const config = writeConfig(home, { port, backends: [backend.port] });
  const r = await bal(home, "start", "-d", "-c", config);
  try {
    assert.equal(r.code, 0, r.stderr);
    const pid = readPid(home)!;
    assert.match(r.stdout, new RegExp(`\\(pid ${pid}\\), listening on 127\\.0\\.0\\.1:${port}`));
    assert.match(r.stdout, new RegExp(`log: ${home}/bal.log`));
    // Listening already when start returned.
    assert.equal(await askName(port), "A");
    const state = JSON.parse(Deno.readTextFileSync(`${home}/bal.state.json`));
    assert.equal(state.pid, pid);
    assert.equal(state.config_path, config);
    const started = readLog(home).find((l) => l.event === "started")!;
    assert.deepEqual(Object.keys(started).sort(), [
      "event",
      "fields",
      "level",
      "message",
      "module",
      "timestamp",
    ]);
    assert.equal(started.level, "info");
    assert.equal(started.module, "server");
    assert.match(started.timestamp as string, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

    const stop = await bal(home, "stop");
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal(stop.stdout.trim(), `bal stopped (pid ${pid})`);
    assert.equal(alive(pid), false);
    assert.equal(readPid(home), null);
    assert.throws(() => Deno.statSync(`${home}/bal.state.json`));
    assert.deepEqual(readLog(home).map((l) => l.event).filter((e) => e !== "backend_up"), [
      "started",
      "stopping",
      "stopped",
    ]);
  } finally {
    const pid = readPid(home);
    if (pid && alive(pid)) Deno.kill(pid, "SIGKILL");
    await backend.close();
  }
});

Deno.test("cli: a second start fails while bal runs, in both modes", async () => {
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [9] });
  const d = await startDaemon(home, config, port);
  try {
    for (const args of [["start", "-d", "-c", config], ["start", "-c", config]]) {
      const r = await bal(home, ...args);
      assert.equal(r.code, 1);
      assert.equal(r.stderr.trim(), `bal is already running (pid ${d.pid})`);
    }
    assert.equal(readPid(home), d.pid);
  } finally {
    await d.stop();
  }
});

Deno.test("cli: stop and graceful when bal is not running", async () => {
  const home = tempHome();
  for (const cmd of ["stop", "graceful"]) {
    const r = await bal(home, cmd);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim(), "bal is not running");
  }
});

Deno.test("cli: a stale pid file is detected, removed by stop and replaced by start", async () => {
  const home = tempHome();
  // A pid that surely belonged to a process that has exited.
  const gone = new Deno.Command("true").spawn();
  await gone.status;
  Deno.writeTextFileSync(`${home}/bal.pid`, `${gone.pid}\n`);
  const stop = await bal(home, "stop");
  assert.equal(stop.code, 1);
  assert.equal(
    stop.stderr.trim(),
    `bal is not running (removed the stale pid file of pid ${gone.pid})`,
  );
  assert.equal(readPid(home), null);

  Deno.writeTextFileSync(`${home}/bal.pid`, `${gone.pid}\n`);
  const port = freePort();
  const d = await startDaemon(home, writeConfig(home, { port, backends: [9] }), port);
  try {
    assert.notEqual(d.pid, gone.pid);
    assert.equal(readPid(home), d.pid);
    assert.ok(d.log().some((l) => l.event === "stale_pid"));
  } finally {
    await d.stop();
  }
});

Deno.test("cli: a live process that is not bal (reused pid) is not taken for bal", async () => {
  const d = await startBal({ backends: [9] });
  const { home } = d;
  const other = new Deno.Command("sleep", { args: ["30"] }).spawn();
  try {
    // The pid file now names another live process than the state file's bal.
    const state = JSON.parse(Deno.readTextFileSync(`${home}/bal.state.json`));
    state.pid = other.pid;
    Deno.writeTextFileSync(`${home}/bal.state.json`, JSON.stringify(state));
    Deno.writeTextFileSync(`${home}/bal.pid`, `${other.pid}\n`);
    const r = await bal(home, "stop");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bal is not running \(removed the stale pid file/);
    assert.ok(alive(other.pid), "stop must not signal a process that is not bal");
  } finally {
    other.kill("SIGKILL");
    await other.status;
    Deno.kill(d.pid, "SIGKILL");
    await waitFor("bal to die", () => !alive(d.pid));
  }
});

Deno.test("cli: a port already in use is a startup error in both modes", async () => {
  const home = tempHome();
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (busy.addr as Deno.NetAddr).port;
  try {
    const config = writeConfig(home, { port, backends: [9] });
    for (const args of [["start", "-d", "-c", config], ["start", "-c", config]]) {
      const r = await bal(home, ...args);
      assert.equal(r.code, 1, `${args}: ${r.stdout}`);
      assert.match(
        r.stderr,
        new RegExp(`^bal: cannot listen on 127\\.0\\.0\\.1:${port}: address already in use$`, "m"),
      );
      noStackTrace(r.stderr);
      assert.equal(readPid(home), null);
    }
  } finally {
    busy.close();
  }
});

Deno.test("cli: start with an invalid config fails before forking, with the error", async () => {
  const home = tempHome();
  const path = `${home}/bad.yaml`;
  Deno.writeTextFileSync(path, "backends: []\n");
  const r = await bal(home, "start", "-d", "-c", path);
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr.trim(),
    `bal: ${path}:1:11: backends: expected a non-empty list of backends, got an empty list`,
  );
  assert.equal(readPid(home), null);
});

Deno.test("cli: SIGUSR1 reopens bal.log, so logrotate can move it away", async () => {
  const d = await startBal({ backends: [9] });
  const { home } = d;
  try {
    Deno.renameSync(`${home}/bal.log`, `${home}/bal.log.1`);
    Deno.kill(d.pid, "SIGUSR1");
    await waitFor("a new bal.log", () => d.log().some((l) => l.event === "log_reopened"));
    const rotated = Deno.readTextFileSync(`${home}/bal.log.1`);
    assert.match(rotated, /"event":"started"/);
    assert.doesNotMatch(rotated, /log_reopened/);
    assert.equal((await bal(home, "stop")).code, 0);
    assert.ok(
      d.log().some((l) => l.event === "stopped"),
      "lines after the reopen go to the new file",
    );
  } finally {
    await d.stop();
  }
});

Deno.test("cli: SIGTERM sent directly stops the daemon cleanly", async () => {
  const d = await startBal({ backends: [9] });
  const { home } = d;
  try {
    Deno.kill(d.pid, "SIGTERM");
    await waitFor("the daemon to exit", () => !alive(d.pid));
    assert.equal(readPid(home), null);
    assert.ok(d.log().some((l) => l.event === "stopped"));
  } finally {
    if (alive(d.pid)) Deno.kill(d.pid, "SIGKILL");
  }
});

Deno.test("cli: foreground start logs readable lines, writes the pid file, and stops on SIGINT", async () => {
  const home = tempHome();
  const backend = nameBackend("F");
  const port = freePort();
  const config = writeConfig(home, { port, backends: [backend.port] });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "bal", "start", "-c", config],
    cwd: ROOT,
    env: { BAL_HOME: home, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  try {
    const pid = await waitFor("the pid file", () => readPid(home) ?? undefined);
    await waitFor("the listener", () => askName(port).then((n) => n === "F").catch(() => false));
    Deno.kill(pid, "SIGINT");
    const out = await child.output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.match(
      stderr,
      /INFO {2}server: bal \S+ listening on 127\.0\.0\.1:\d+, 1 backend, round_robin, 1 data plane \[started\]/,
    );
    assert.match(stderr, /SIGINT: stopped accepting/);
    assert.equal(readPid(home), null);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await backend.close();
  }
});

Deno.test("cli: --log-format json in the foreground", async () => {
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [9] });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "bal", "start", "-c", config, "--log-format", "json"],
    cwd: ROOT,
    env: { BAL_HOME: home },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const pid = await waitFor("the pid file", () => readPid(home) ?? undefined);
  Deno.kill(pid, "SIGTERM");
  const out = await child.output();
  const lines = new TextDecoder().decode(out.stderr).trim().split("\n").map((l) => JSON.parse(l));
  assert.ok(lines.some((l) => l.event === "started" && l.module === "server"));
});

Deno.test("cli: status -c FILE --json works whether or not bal runs, and notes another config", async () => {
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [9] });
  const idle = await bal(home, "status", "--config", config, "--json");
  assert.equal(idle.code, 0, idle.stderr);
  assert.equal(JSON.parse(idle.stdout).running, false);
  const d = await startDaemon(home, config, port);
  try {
    const s = JSON.parse((await bal(home, "status", "--config", config, "--json")).stdout);
    assert.equal(s.running, true);
    assert.equal(s.config_path, config);
    const other = writeConfig(home, { port, backends: [9] }, "other.yaml");
    const text = await bal(home, "status", "-c", other);
    assert.match(text.stdout, new RegExp(`note: it runs with ${config}, not ${other}`));
    const refused = await bal(home, "graceful", "-c", other);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /uses .*test\.yaml, not .*other\.yaml; run without -c/);
    const both = await bal(home, "status", "--json", "--brief");
    assert.equal(both.code, 1);
    assert.match(both.stderr, /^bal: option '--json' cannot be used with option '--brief'$/m);
  } finally {
    await d.stop();
  }
});

Deno.test("cli: a relative -c given to deno task from another directory is the caller's file", async () => {
  const home = tempHome();
  const sub = `${home}/sub`;
  Deno.mkdirSync(sub);
  const port = freePort();
  writeConfig(sub, { port, backends: [9] }, "rel.yaml");
  // deno task runs from the project root and says where it was called from in INIT_CWD.
  const task = (...args: string[]) =>
    runCommand(Deno.execPath(), ["task", "-q", "--config", `${ROOT}deno.json`, "bal", ...args], {
      cwd: sub,
      clearEnv: true,
      // Deno's own cache follows HOME (and DENO_DIR): keep both; bal's state is in BAL_HOME.
      env: {
        ...Object.fromEntries(
          ["PATH", "HOME", "DENO_DIR"].flatMap((k) => {
            const v = Deno.env.get(k);
            return v === undefined ? [] : [[k, v]];
          }),
        ),
        BAL_HOME: home,
        NO_COLOR: "1",
      },
    });
  const check = await task("check", "-c", "rel.yaml");
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stdout, new RegExp(`^config OK: ${sub}/rel\\.yaml$`, "m"));
  const start = await task("start", "-d", "-c", "rel.yaml");
  assert.equal(start.code, 0, start.stderr);
  const pid = readPid(home)!;
  try {
    const s = JSON.parse((await task("status", "--json")).stdout);
    assert.equal(s.config_path, `${sub}/rel.yaml`);
  } finally {
    assert.equal((await task("stop")).code, 0);
    if (alive(pid)) Deno.kill(pid, "SIGKILL");
  }
});
