/**
 * The edges a new user, a hostile tester and an operator on a bad day hit
 * (issue 17): each reproduced through the real CLI and daemon.
 */
import assert from "node:assert/strict";
import {
  alive,
  askName,
  bal,
  echoBackend,
  freePort,
  nameBackend,
  portTaken,
  readAll,
  readLog,
  readPid,
  ROOT,
  runCommand,
  serveTcp,
  startDaemon,
  talkFrom,
  tempHome,
  text,
  waitActive,
  waitFor,
  writeAll,
  writeConfig,
} from "../helpers.ts";

const decoder = new TextDecoder();

/** `bal ARGS` run without waiting: for commands that race or block (stop, graceful). */
function spawnBal(home: string, ...args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "bal", ...args],
    cwd: ROOT,
    env: { BAL_HOME: home, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return {
    child,
    async result() {
      const out = await child.output();
      return {
        code: out.code,
        stdout: decoder.decode(out.stdout),
        stderr: decoder.decode(out.stderr),
      };
    },
  };
}

const fields = (l: Record<string, unknown>) => l.fields as Record<string, unknown>;
const isRoot = Deno.uid() === 0;

Deno.test("edges 1: stop finds a bal that is still starting and stops it once it can", async () => {
  for (const delay of [0, 50, 100]) {
    const home = tempHome();
    const port = freePort();
    // Four data planes make the start slow enough to catch it under way.
    const config = writeConfig(home, { port, backends: [9], extra: "workers: 4" });
    const start = spawnBal(home, "start", "-d", "-c", config);
    await waitFor(
      "the start to be under way",
      async () =>
        await Deno.stat(`${home}/bal.starting`).then(() => true, () => false) ||
        await Deno.stat(`${home}/bal.lock`).then(() => true, () => false),
    );
    await new Promise((r) => setTimeout(r, delay));
    const stop = await bal(home, "stop");
    const started = await start.result();
    // Whatever the outcome, no daemon outlives the test (the bug left one running).
    const left = readPid(home);
    if (stop.code !== 0 && left !== null && alive(left)) Deno.kill(left, "SIGKILL");
    assert.equal(stop.code, 0, `delay ${delay}: ${stop.stderr}${stop.stdout}`);
    assert.match(stop.stdout, /bal stopped \(pid \d+\)/);
    const pid = Number(/pid (\d+)/.exec(stop.stdout)![1]);
    assert.equal(started.code, 0, started.stderr);
    await waitFor("the daemon to be gone", () => !alive(pid));
    assert.equal((await bal(home, "status")).stdout.split("\n")[0], "bal is not running");
  }
});

Deno.test({
  name:
    "edges 2 and 14: a read-only state directory: start -d says why before it daemonizes; doctor sees it",
  ignore: !isRoot,
  fn: async () => {
    const home = tempHome();
    const config = writeConfig(home, { port: freePort(), backends: [9] });
    const ro = Deno.makeTempDirSync({ prefix: "bal-ro-" });
    const mount = (...args: string[]) => runCommand("mount", args);
    assert.equal((await mount("--bind", ro, ro)).code, 0);
    try {
      assert.equal((await mount("-o", "remount,ro,bind", ro)).code, 0);
      const r = await runCommand(Deno.execPath(), [
        "task",
        "-q",
        "bal",
        "start",
        "-d",
        "-c",
        config,
      ], {
        cwd: ROOT,
        env: { BAL_HOME: ro, NO_COLOR: "1" },
      });
      assert.equal(r.code, 1);
      assert.equal(
        r.stderr.trim(),
        `bal: cannot use ${ro} as the state directory: the file system is read-only; set BAL_HOME to a directory bal can write`,
      );
      const doctor = await runCommand(Deno.execPath(), [
        "task",
        "-q",
        "bal",
        "doctor",
        "-c",
        config,
        "--json",
      ], {
        cwd: ROOT,
        env: { BAL_HOME: ro, NO_COLOR: "1" },
      });
      assert.equal(doctor.code, 1);
      const state = JSON.parse(doctor.stdout).checks.find((c: { name: string }) =>
        c.name === "state"
      );
      assert.equal(state.level, "critical");
      assert.match(state.summary, /the file system is read-only/);
    } finally {
      await runCommand("umount", [ro]);
      Deno.removeSync(ro, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "edges 3: deno task demo beside a running bal (the quick start's order) serves its backends until Ctrl-C; a bal that cannot start fails it",
  // The demo's sample backends listen on 9000 and 9100 and its bal on 9295 by design:
  // outside CI, a machine that uses them skips this test rather than collide.
  ignore: [9000, 9100, 9295].some(portTaken) && !Deno.env.get("CI"),
  fn: async () => {
    const home = tempHome();
    const port = freePort();
    const d = await startDaemon(home, writeConfig(home, { port, backends: [9000, 9100] }), port);
    // The task's own command, run directly: a signal to `deno task` stays with it, while
    // Ctrl-C on a terminal reaches the whole process group.
    const task = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks.demo.command;
    const demo = new Deno.Command(Deno.execPath(), {
      args: task.split(" ").slice(1),
      cwd: ROOT,
      env: { BAL_HOME: home, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    try {
      // Through the running bal, both sample backends answer (a connection each: bal is L4).
      const seen = new Set<string>();
      await waitFor("both sample backends through bal", async () => {
        const answer = await talkFrom("127.0.0.1", port, "127.0.0.1", "GET / HTTP/1.0\r\n\r\n")
          .catch(() => "");
        const backend = /"port":(\d+)/.exec(answer)?.[1];
        if (backend) seen.add(backend);
        return seen.size === 2;
      }, 20_000);
      // Ctrl-C once the demo has said what it does (a Ctrl-C before that is tested below).
      const said = await readUntil(demo.stdout, /bal is running already/);
      assert.match(said, /bal is running already/);
      demo.kill("SIGINT");
      const { code } = await demo.status;
      assert.equal(code, 0);
      assert.ok(![9000, 9100].some(portTaken), "the demo's backends ended with it");
    } finally {
      // Ctrl-C first, so the demo stops its backends; a kill only if that did not end it.
      try {
        demo.kill("SIGINT");
        const timer = setTimeout(() => demo.kill("SIGKILL"), 5000);
        await demo.status;
        clearTimeout(timer);
      } catch {
        // Exited.
      }
      await d.stop();
    }
    // A Ctrl-C at once, while the demo still looks for a bal, stops its backends too.
    const early = new Deno.Command(Deno.execPath(), {
      args: task.split(" ").slice(1),
      cwd: ROOT,
      env: { BAL_HOME: home, NO_COLOR: "1" },
      stdout: "null",
      stderr: "null",
    }).spawn();
    await waitFor("the demo's backends", () => [9000, 9100].every(portTaken));
    early.kill("SIGINT");
    assert.equal((await early.status).code, 0);
    assert.ok(![9000, 9100].some(portTaken), "no backend outlives an early Ctrl-C");
    // With 9295 taken, the demo's own bal cannot start: the demo says so and fails.
    const squatter = Deno.listen({ hostname: "127.0.0.1", port: 9295 });
    try {
      const failed = await runCommand(Deno.execPath(), ["task", "-q", "demo"], {
        cwd: ROOT,
        env: { BAL_HOME: tempHome(), NO_COLOR: "1" },
      });
      assert.notEqual(failed.code, 0, failed.stdout + failed.stderr);
      assert.match(failed.stderr, /address already in use/);
    } finally {
      squatter.close();
    }
  },
});

Deno.test("edges 4: every client is counted once, under what became of it", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, {
    port,
    backends: [echo.port],
    runtime: { max_concurrent_connections: 1 },
  });
  const d = await startDaemon(home, config, port);
  const held = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(held, text("x"));
    for (let i = 0; i < 3; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      assert.equal((await readAll(c)).length, 0, "closed at the limit");
      c.close();
    }
    held.close();
    await waitActive(home, 0);
    assert.equal(
      (await bal(home, "backend", "disable", "default", `127.0.0.1:${echo.port}`)).code,
      0,
    );
    for (let i = 0; i < 2; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      await readAll(c);
      c.close();
    }
    const s = JSON.parse((await bal(home, "status", "--json")).stdout);
    assert.deepEqual(
      [
        s.connections_accepted,
        s.connections_served,
        s.rejected_connections,
        s.no_backend_connections,
      ],
      [6, 1, 3, 2],
    );
    const perBackend = s.backends.reduce(
      (n: number, b: { connections_served: number }) => n + b.connections_served,
      0,
    );
    assert.equal(perBackend, s.connections_served, "the backends add up to the total");
  } finally {
    await d.stop();
    await echo.close();
  }
});

Deno.test("edges 5: a client tries at most max_failover_attempts backends, and no_backend says how many", async () => {
  const dead = Array.from({ length: 6 }, () => freePort());
  const home = tempHome();
  const port = freePort();
  const slow = { health_check_interval_ms: 60_000, health_check_fail_threshold: 100 };
  const config = writeConfig(home, { port, backends: dead, runtime: slow });
  const d = await startDaemon(home, config, port);
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    await readAll(c);
    c.close();
    const log = await waitFor("no_backend", () => {
      const lines = d.log();
      return lines.some((l) => l.event === "no_backend") && lines;
    });
    assert.equal(log.filter((l) => l.event === "connect_failed").length, 3);
    assert.equal(fields(log.find((l) => l.event === "no_backend")!).tried, 3);
  } finally {
    await d.stop();
  }
  // Raised, every backend is tried.
  const home2 = tempHome();
  const port2 = freePort();
  const config2 = writeConfig(home2, {
    port: port2,
    backends: dead,
    runtime: { ...slow, max_failover_attempts: 10 },
  });
  const d2 = await startDaemon(home2, config2, port2);
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: port2 });
    await readAll(c);
    c.close();
    const log = await waitFor("no_backend", () => {
      const lines = d2.log();
      return lines.some((l) => l.event === "no_backend") && lines;
    });
    assert.equal(fields(log.find((l) => l.event === "no_backend")!).tried, 6);
  } finally {
    await d2.stop();
  }
});

Deno.test("edges 6: a backend that hangs up before its first byte counts as failing and loses its share", async () => {
  const rude = serveTcp(async () => {}); // accepts, then closes at once
  const good = nameBackend("G");
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, {
    port,
    backends: [rude.port, good.port],
    runtime: { health_check_interval_ms: 60_000 },
  });
  const d = await startDaemon(home, config, port);
  try {
    let empty = 0;
    // Each client asks and waits for the answer (it does not close first).
    for (let i = 0; i < 20; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(c, text("ping"));
      if ((await readAll(c)).length === 0) empty++;
      c.close();
    }
    assert.ok(empty <= 3, `${empty} of 20 clients got nothing`);
    const s = JSON.parse((await bal(home, "status", "--json")).stdout);
    const r = s.backends.find((b: { address: string }) => b.address === `127.0.0.1:${rude.port}`);
    assert.ok(r.counters.other >= 1);
    // Closed or reset: which the relay sees first depends on whether the
    // client's bytes reached the closed socket (its kernel answers them with a reset).
    assert.match(r.last_error, /(closed|reset) the connection before sending anything/);
  } finally {
    await d.stop();
    await rude.close();
    await good.close();
  }
});

Deno.test("edges 7: a paused daemon: doctor says it does not answer, graceful says the outcome is unknown", async () => {
  const a = nameBackend("A");
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [a.port] });
  const d = await startDaemon(home, config, port);
  try {
    Deno.kill(d.pid, "SIGSTOP");
    const doctor = await spawnBal(home, "doctor", "--json").result();
    const checks = JSON.parse(doctor.stdout).checks as {
      name: string;
      level: string;
      summary: string;
    }[];
    const by = (name: string) => checks.find((c) => c.name === name)!;
    assert.equal(by("pid").level, "ok");
    assert.equal(by("socket").level, "critical");
    assert.match(
      by("socket").summary,
      /holds its ports but does not answer its control socket: the process is stopped/,
    );
    assert.equal(by("bind").level, "ok", by("bind").summary);
    const graceful = await spawnBal(home, "graceful").result();
    assert.equal(graceful.code, 1);
    assert.match(
      graceful.stderr,
      /asked bal \(pid \d+\) to reload, but it has not answered within 10 s: the process is stopped \(kill -CONT \d+ resumes it\); the request was delivered/,
    );
    Deno.kill(d.pid, "SIGCONT");
    await waitFor(
      "the delivered reload to apply",
      () => d.log().some((l) => l.event === "reload_ok"),
    );
  } finally {
    Deno.kill(d.pid, "SIGCONT");
    await d.stop();
    await a.close();
  }
});

Deno.test("edges 8: runtime and library messages become bal's own one-line messages", async () => {
  const home = tempHome();
  const config = writeConfig(home, { port: freePort(), backends: [9] });
  const run = (balHome: string, ...args: string[]) =>
    runCommand(Deno.execPath(), ["task", "-q", "bal", ...args], {
      cwd: ROOT,
      env: { BAL_HOME: balHome, NO_COLOR: "1" },
    });
  const file = await run("/etc/passwd/x", "start", "-d", "-c", config);
  assert.equal(
    file.stderr.trim(),
    "bal: cannot use /etc/passwd/x as the state directory: a part of the path is a file, not a directory; set BAL_HOME to a directory bal can write",
  );
  const sys = await run("/sys/bal-test", "start", "-d", "-c", config);
  assert.match(
    sys.stderr.trim(),
    /^bal: cannot use \/sys\/bal-test as the state directory: bal may not use \/proc, \/sys or \/dev for its files;/,
  );
  const multi = `${home}/multi.yaml`;
  Deno.writeTextFileSync(multi, "backends: ['127.0.0.1:1']\n---\nport: 1\n");
  const doc = await bal(home, "check", "-c", multi);
  assert.match(
    doc.stderr,
    /invalid YAML: the file holds several YAML documents \(a second `---`\); a config is one document/,
  );
  for (const r of [file, sys, doc]) {
    assert.doesNotMatch(
      r.stderr + r.stdout,
      /os error|Requires all access|parseAllDocuments|unexpected error/,
    );
  }
});

Deno.test("edges 9: garbage and huge configs give short lines: quotes are capped, long lists summarized", async () => {
  const home = tempHome();
  const garbage = `${home}/garbage.yaml`;
  Deno.writeTextFileSync(
    garbage,
    `port: "${"x".repeat(5000)}"\nbackends: ["${"y".repeat(5000)}"]\n`,
  );
  const g = await bal(home, "check", "-c", garbage);
  assert.equal(g.code, 1);
  for (const line of (g.stdout + g.stderr).split("\n")) {
    assert.ok(line.length < 300, `a ${line.length}-character line: ${line.slice(0, 120)}`);
  }
  assert.match(g.stderr, /"xxxx+"… \(5000 characters\)/);
  const many = `${home}/many.yaml`;
  const list = Array.from({ length: 10_000 }, (_, i) => `  - "10.${i >> 8}.${i & 255}.1:80"`);
  Deno.writeTextFileSync(many, `bind_address: 127.0.0.1\nbackends:\n${list.join("\n")}\n`);
  const m = await bal(home, "check", "-c", many);
  assert.equal(m.code, 0, m.stderr);
  assert.match(m.stdout, /10,000 backends; first 10: 10\.0\.0\.1:80, /);
  assert.ok(Math.max(...m.stdout.split("\n").map((l) => l.length)) < 400);

  // status: 300 backends (all down) print as 10 and a summary, not 300 lines.
  const port = freePort();
  const dead = `${home}/dead.yaml`;
  const backends = Array.from({ length: 300 }, (_, i) => `  - "127.0.0.1:${1 + i}"`);
  Deno.writeTextFileSync(
    dead,
    `port: ${port}\nbind_address: 127.0.0.1\nruntime: {health_check_interval_ms: 60000}\nbackends:\n${
      backends.join("\n")
    }\n`,
  );
  const d = await startDaemon(home, dead, port);
  try {
    const s = await bal(home, "status");
    assert.ok(s.stdout.split("\n").length < 30, s.stdout);
    assert.match(
      s.stdout,
      /… 290 more backends \(\d+ up, \d+ down\); --verbose or `bal backend list default` lists every one/,
    );
    const verbose = await bal(home, "status", "--verbose");
    assert.ok(verbose.stdout.split("\n").length > 300);
  } finally {
    await d.stop();
  }
});

Deno.test("edges 10: a missing -c file points at bal init -c FILE; init refuses a directory", async () => {
  const home = tempHome();
  const missing = `${home}/nope.yaml`;
  const r = await bal(home, "check", "-c", missing);
  assert.match(
    r.stderr,
    new RegExp(
      `not found \\(give another with -c, or write the commented default there with \`bal init -c ${missing}\`\\)`,
    ),
  );
  const init = await bal(home, "init", "-c", home);
  assert.equal(init.code, 1);
  assert.equal(
    init.stderr.trim(),
    `bal: ${home} is a directory; give the config file's path, e.g. -c ${home}/config.yaml`,
  );
});

Deno.test("edges 11: reload is graceful, restart hands over to a new bal with the running config", async () => {
  const a = nameBackend("A");
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [a.port] });
  const d = await startDaemon(home, config, port);
  let pid = d.pid;
  try {
    const reload = await bal(home, "reload");
    assert.equal(reload.code, 0, reload.stderr);
    assert.match(reload.stdout, /^reloaded: generation 2/);
    const restart = await bal(home, "restart");
    assert.equal(restart.code, 0, restart.stderr);
    assert.match(
      restart.stdout,
      new RegExp(`upgraded: bal pid ${d.pid} -> pid \\d+, listening on 127\\.0\\.0\\.1:${port}`),
    );
    pid = readPid(home)!;
    assert.notEqual(pid, d.pid);
    assert.equal(await askName(port), "A");
    const s = JSON.parse((await bal(home, "status", "--json")).stdout);
    assert.equal(s.config_path, config);
    const help = await bal(home, "--help");
    assert.match(help.stdout, /graceful\|reload/);
    assert.match(help.stdout, /restart .*the same hand-over as upgrade, with the config it runs/);
  } finally {
    await bal(home, "stop");
    if (alive(pid)) Deno.kill(pid, "SIGKILL");
    await a.close();
  }
  const none = await bal(home, "restart");
  assert.equal(none.code, 1);
  assert.match(none.stderr, /bal is not running; bal start -d starts it/);
});

Deno.test("edges 12: bal's own default config passes its own check --strict", async () => {
  const home = tempHome();
  assert.equal((await bal(home, "init")).code, 0);
  const strict = await bal(home, "check", "--strict");
  assert.equal(strict.code, 0, strict.stdout);
  assert.doesNotMatch(strict.stdout, /warning/);
  // Left out, the open bind is worth a word.
  const implicit = `${home}/implicit.yaml`;
  Deno.writeTextFileSync(implicit, "backends: ['127.0.0.1:9000']\n");
  const r = await bal(home, "check", "-c", implicit);
  assert.match(
    r.stdout,
    /warning: bind_address: not set, so bal listens on every interface \(0\.0\.0\.0\)/,
  );
});

Deno.test("edges 13: status and doctor say which stale files a killed bal left, and status removes them", async () => {
  const home = tempHome();
  const port = freePort();
  const d = await startDaemon(home, writeConfig(home, { port, backends: [9] }), port);
  Deno.kill(d.pid, "SIGKILL");
  await waitFor("the daemon to die", () => !alive(d.pid));
  const doctor = JSON.parse((await bal(home, "doctor", "--json")).stdout);
  const socket = doctor.checks.find((c: { name: string }) => c.name === "socket");
  assert.equal(socket.level, "warn");
  assert.match(socket.summary, /bal\.sock is stale: no bal runs/);
  const s = await bal(home, "status");
  assert.equal(
    s.stdout.split("\n")[0],
    `bal is not running (removed the stale pid file of pid ${d.pid} and the stale control socket ${home}/bal.sock)`,
  );
  assert.equal(await Deno.stat(`${home}/bal.sock`).then(() => true, () => false), false);
  assert.equal((await bal(home, "status")).stdout.split("\n")[0], "bal is not running");
});

Deno.test("edges 14: doctor on a healthy running bal: its own port is ok, all checks ok, next is status", async () => {
  const a = nameBackend("A");
  const home = tempHome();
  const port = freePort();
  const d = await startDaemon(home, writeConfig(home, { port, backends: [a.port] }), port);
  try {
    const r = await bal(home, "doctor");
    assert.equal(r.code, 0);
    assert.match(
      r.stdout,
      new RegExp(
        `^\\[ok\\] bind: 127\\.0\\.0\\.1:${port} is in use by the running bal \\(pid ${d.pid}\\), as it should be$`,
        "m",
      ),
    );
    assert.match(r.stdout, /^\[ok\] state: .* is writable$/m);
    assert.match(r.stdout, /^all checks ok\nnext: bal status shows it live$/m);
    assert.doesNotMatch(r.stdout, /\[warn\]/);
  } finally {
    await d.stop();
    await a.close();
  }
});

Deno.test("edges 15: stop says what it waits for, counts down, and --timeout / --force cut the wait", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, {
    port,
    backends: [echo.port],
    runtime: { shutdown_drain_timeout_ms: 20_000 },
  });
  let d = await startDaemon(home, config, port);
  const open = async () => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(c, text("x"));
    return c;
  };
  try {
    const [one, two] = [await open(), await open()];
    await waitActive(home, 2);
    const stop = spawnBal(home, "stop");
    await new Promise((r) => setTimeout(r, 1200));
    one.close();
    await new Promise((r) => setTimeout(r, 1200));
    two.close();
    const r = await stop.result();
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^stopping: draining 2 connections \(up to 20 s\)$/m);
    assert.match(r.stdout, /^ {2}1 connection left$/m);
    assert.match(r.stdout, /^bal stopped \(pid \d+\)$/m, "nothing was cut: nothing said");

    d = await startDaemon(home, config, port);
    const held = await open();
    await waitActive(home, 1);
    const started = Date.now();
    const timed = await bal(home, "stop", "--timeout", "1");
    assert.equal(timed.code, 0, timed.stderr);
    assert.match(timed.stdout, /draining 1 connection \(up to 1 s\)/);
    assert.match(
      timed.stdout,
      /^bal stopped \(pid \d+\); force-closed 1 connection still open$/m,
    );
    assert.ok(Date.now() - started < 8000, "the timeout cut the 20 s drain");
    assert.equal((await readAll(held)).length, 1, "closed by bal (the echoed byte, then the end)");
    assert.ok(readLog(home).some((l) => l.event === "drain_forced" && fields(l).left === 1));
    held.close();

    d = await startDaemon(home, config, port);
    const forced = await open();
    await waitActive(home, 1);
    const f = await bal(home, "stop", "--force");
    assert.equal(f.code, 0, f.stderr);
    assert.match(f.stdout, /draining 1 connection \(closing them now\)/);
    assert.match(f.stdout, /; force-closed 1 connection still open$/m);
    forced.close();
    const both = await bal(home, "stop", "--force", "--timeout", "1");
    assert.match(both.stderr, /cannot be used with/);
  } finally {
    await d.stop();
    await echo.close();
  }
});

Deno.test("edges 16: the same backend under two names warns; check resolves bind_address", async () => {
  const home = tempHome();
  const twice = `${home}/twice.yaml`;
  Deno.writeTextFileSync(
    twice,
    "bind_address: 127.0.0.1\nbackends: ['127.0.0.1:9000', 'localhost:9000']\n",
  );
  const w = await bal(home, "check", "-c", twice);
  assert.match(
    w.stdout,
    /warning: backends\[1\]: localhost:9000 is the same server as backends\[0\] \(127\.0\.0\.1:9000\)/,
  );
  const nowhere = `${home}/nowhere.yaml`;
  Deno.writeTextFileSync(
    nowhere,
    "port: 9999\nbind_address: no-such-host.invalid\nbackends: ['127.0.0.1:9000']\n",
  );
  const r = await bal(home, "check", "-c", nowhere);
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr.trim(),
    `bal: ${nowhere}:2:15: bind_address: "no-such-host.invalid" does not resolve to an address of this machine`,
  );
});

Deno.test("edges 17: check -c FILE needs no state directory (HOME and BAL_HOME unset)", async () => {
  const home = tempHome();
  const config = writeConfig(home, { port: freePort(), backends: [9] });
  const denoDir = Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`;
  const r = await runCommand(Deno.execPath(), ["task", "-q", "bal", "check", "-c", config], {
    cwd: ROOT,
    clearEnv: true,
    env: { PATH: Deno.env.get("PATH")!, DENO_DIR: denoDir, NO_COLOR: "1" },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^config OK: /);
});

Deno.test("edges 18: log lines agree with their counts (1 backend, 1 data plane, 1 connection)", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const d = await startDaemon(home, writeConfig(home, { port, backends: [echo.port] }), port);
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(c, text("x"));
  await waitActive(home, 1);
  const stop = spawnBal(home, "stop", "--timeout", "1");
  try {
    await stop.result();
    const messages = d.log().map((l) => l.message as string);
    assert.ok(
      messages.some((m) => /, 1 backend, round_robin, 1 data plane$/.test(m)),
      messages.join("\n"),
    );
    assert.ok(messages.some((m) => /draining 1 connection \(/.test(m)));
    assert.ok(!messages.some((m) => /\b1 (backends|data planes|connections)\b/.test(m)));
  } finally {
    c.close();
    if (alive(d.pid)) await d.stop();
    await echo.close();
  }
});

/** What a stream says until `pattern` shows (or it ends), within 30 s. */
async function readUntil(stream: ReadableStream<Uint8Array>, pattern: RegExp): Promise<string> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let said = "";
  const timer = setTimeout(() => reader.cancel(), 30_000);
  try {
    while (!pattern.test(said)) {
      const { value, done } = await reader.read();
      if (done) break;
      said += decoder.decode(value, { stream: true });
    }
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
  return said;
}
