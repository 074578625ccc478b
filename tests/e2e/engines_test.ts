/**
 * The Linux engines' own parts (socket addresses, the loop's timers), how
 * the engine is chosen and reported (io_uring refused as a container's
 * seccomp profile refuses it included), and what a byte mover must get
 * right whichever engine runs: backpressure to a slow reader.
 */
import * as assert from "node:assert/strict";
import { ipv6Bytes, normalizeHost } from "../../src/config/mod.ts";
import { decodeAddress, encodeAddress, withPort } from "../../src/engine/linux/sockaddr.ts";
import { close, E, eventFd, loadLibc, readCounter } from "../../src/engine/linux/ffi.ts";
import { cancel, createLoop } from "../../src/engine/epoll/loop.ts";
import {
  bal,
  echoBackend,
  freePort,
  readN,
  ROOT,
  runCommand,
  serveTcp,
  sha256,
  startDaemon,
  tempHome,
  writeAll,
  writeConfig,
} from "../helpers.ts";

Deno.test("native: socket addresses encode and decode IPv4 and IPv6 as Deno writes them", () => {
  for (const [host, port] of [["127.0.0.1", 80], ["0.0.0.0", 0], ["255.255.255.255", 65535]]) {
    assert.deepEqual(decodeAddress(encodeAddress(host as string, port as number)), {
      hostname: host,
      port,
    });
  }
  assert.equal(decodeAddress(encodeAddress("::ffff:10.0.0.1", 5))?.hostname, "::ffff:10.0.0.1");
  assert.equal(decodeAddress(encodeAddress("[::1]", 5))?.hostname, "::1");
  assert.equal(decodeAddress(withPort(encodeAddress("::1", 0), 443))?.port, 443);
  // Random IPv6 addresses with runs of zeros print as the URL parser (RFC 5952) writes them.
  let seed = 7;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) >> 8;
  for (let i = 0; i < 2000; i++) {
    const groups = Array.from({ length: 8 }, () => (next() % 3 === 0 ? 0 : next() % 65536));
    if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) continue;
    const full = groups.map((g) => g.toString(16)).join(":");
    assert.equal(decodeAddress(encodeAddress(full, 1))?.hostname, normalizeHost(full), full);
  }
  for (const bad of ["1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", ":::", "1.2.3.256", "g::", "1:2"]) {
    assert.equal(ipv6Bytes(bad), null, bad);
  }
  assert.throws(() => encodeAddress("localhost", 80), RangeError);
  assert.throws(() => encodeAddress("127.0.0.1", 70000), RangeError);
});

Deno.test("native: the loop runs timers in order, never a cancelled one, survives one that throws, and stops", async () => {
  loadLibc();
  const errors: unknown[] = [];
  const loop = createLoop((err) => errors.push(err));
  const fired: number[] = [];
  const now = Date.now();
  const done = new Promise<void>((resolve) => loop.timer(now + 60, resolve));
  for (const at of [40, 10, 30, 20, 50]) loop.timer(now + at, () => fired.push(at));
  cancel(loop.timer(now + 25, () => fired.push(25)));
  // A bug in one callback is reported, and the others still run.
  loop.timer(now + 15, () => {
    throw new Error("boom");
  });
  await done;
  assert.deepEqual(errors.map(String), ["Error: boom"]);
  await loop.stop();
  assert.deepEqual(fired, [10, 20, 30, 40, 50]);
  // Its descriptors are closed now, and the kernel hands their numbers out again: a second
  // stop must not write to whatever took them (here, probably, a new eventfd).
  const reused = Array.from({ length: 4 }, () => eventFd());
  await loop.stop();
  const probe = new Uint8Array(8);
  for (const fd of reused) {
    assert.equal(readCounter(fd, probe), -E.EAGAIN, `fd ${fd} was written to`);
    close(fd);
  }
});

/** `bal` with BAL_ENGINE set (an empty value leaves the choice to the config). */
function balWith(home: string, engine: string, ...args: string[]) {
  return runCommand(Deno.execPath(), ["task", "-q", "bal", ...args], {
    cwd: ROOT,
    env: { BAL_HOME: home, NO_COLOR: "1", BAL_ENGINE: engine },
  });
}

Deno.test("engine: auto runs uring here; epoll (or native), deno and BAL_ENGINE pick theirs; status, check and the log say so", async () => {
  const echo = echoBackend();
  try {
    for (
      const [setting, override, expected] of [
        ["auto", "", "uring"],
        ["epoll", "", "epoll"],
        ["native", "", "epoll"],
        ["deno", "", "deno"],
        ["auto", "deno", "deno"],
        ["deno", "native", "epoll"],
        ["deno", "uring", "uring"],
      ]
    ) {
      const home = tempHome();
      const port = freePort();
      // A backend by name: the Linux engines resolve it the way the system does.
      const config = writeConfig(home, {
        port,
        backends: [`"localhost:${echo.port}"`],
        extra: `engine: ${setting}`,
      });
      const check = await balWith(home, override, "check", "--verbose", "-c", config);
      assert.match(check.stdout, new RegExp(`engine: ${setting}.*: ${expected} on this machine`));
      const started = await balWith(home, override, "start", "-d", "-c", config);
      assert.equal(started.code, 0, started.stderr);
      const pid = Number(Deno.readTextFileSync(`${home}/bal.pid`).trim());
      try {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        await writeAll(conn, new TextEncoder().encode("ping"));
        assert.equal(new TextDecoder().decode(await readN(conn, 4)), "ping");
        conn.close();
        const status = JSON.parse((await bal(home, "status", "--json")).stdout);
        assert.equal(status.engine, expected, `${setting}/${override}`);
        assert.match((await bal(home, "status")).stdout, new RegExp(`${expected} engine`));
        const line = Deno.readTextFileSync(`${home}/bal.log`).split("\n")
          .find((l) => l.includes('"started"'));
        assert.match(line ?? "", new RegExp(`"engine":"${expected}"`));
      } finally {
        await balWith(home, override, "stop");
        if (pid) await runCommand("kill", ["-9", String(pid)]);
      }
    }
  } finally {
    await echo.close();
  }
});

/** Runs the CLI with io_uring_setup refused by a seccomp filter (tests/fixtures/no_io_uring.py). */
function withUringRefused(home: string, env: Record<string, string>, ...args: string[]) {
  return runCommand("python3", [
    `${ROOT}tests/fixtures/no_io_uring.py`,
    Deno.execPath(),
    "task",
    "-q",
    "bal",
    ...args,
  ], { cwd: ROOT, env: { BAL_HOME: home, NO_COLOR: "1", ...env } });
}

Deno.test("engine: with io_uring refused by seccomp, auto runs epoll and check, status, doctor, metrics and the log say why", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const admin = freePort();
  const config = writeConfig(home, {
    port,
    backends: [echo.port],
    extra: `admin: {listen: "127.0.0.1:${admin}"}`,
  });
  // Docker's and containerd's default profiles answer io_uring_setup with EPERM; so does this one.
  const refusedWith = (engine: string, ...args: string[]) =>
    withUringRefused(home, { BAL_ENGINE: engine }, ...args);
  const refused = (...args: string[]) => refusedWith("", ...args);
  const why = /io_uring refused by the kernel \(io_uring_setup: operation not permitted/;
  try {
    const check = await refused("check", "--verbose", "-c", config);
    assert.match(check.stdout, /engine: auto: epoll on this machine \(io_uring refused/);
    // Asked for by name, io_uring is not quietly replaced.
    const named = await refusedWith("uring", "start", "-c", config);
    assert.equal(named.code, 1);
    assert.match(named.stderr, /engine: uring cannot run here: io_uring refused/);
    const started = await refused("start", "-d", "-c", config);
    assert.equal(started.code, 0, started.stderr);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, new TextEncoder().encode("ping"));
    assert.equal(new TextDecoder().decode(await readN(conn, 4)), "ping");
    conn.close();
    const status = JSON.parse((await bal(home, "status", "--json")).stdout);
    assert.equal(status.engine, "epoll");
    assert.match(status.engine_fallback, why);
    assert.match(
      (await bal(home, "status")).stdout,
      /engine: epoll, as auto falls back: io_uring refused/,
    );
    const doctor = JSON.parse((await bal(home, "doctor", "--json", "-c", config)).stdout);
    const engine = doctor.checks.find((c: { name: string }) => c.name === "engine");
    assert.equal(engine.level, "warn");
    assert.match(engine.summary, why);
    const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
    assert.match(
      metrics,
      /^bal_build_info\{[^}]*engine="epoll",engine_fallback="io_uring refused/m,
    );
    const line = Deno.readTextFileSync(`${home}/bal.log`).split("\n")
      .find((l) => l.includes('"engine_fallback"'));
    assert.match(line ?? "", /"engine":"epoll"/);
  } finally {
    await bal(home, "stop");
    await echo.close();
  }
});

Deno.test("engine: a kernel that refuses the ring's set-up flags (EINVAL, older than 6.6) is named as such", async () => {
  const home = tempHome();
  const config = writeConfig(home, { port: freePort(), backends: [9] });
  const check = await withUringRefused(
    home,
    { BAL_ENGINE: "", NO_IO_URING_ERRNO: "22" },
    "check",
    "--verbose",
    "-c",
    config,
  );
  assert.equal(check.code, 0, check.stderr);
  assert.match(
    check.stdout,
    /engine: auto: epoll on this machine \(io_uring cannot be used \(io_uring_setup: system error \(os error 22\): a kernel older than 6\.6/,
  );
});

Deno.test("engine: a bad value is a config error at its line; a bad BAL_ENGINE one line", async () => {
  const home = tempHome();
  const config = writeConfig(home, { port: freePort(), backends: [9], extra: "engine: fast" });
  const bad = await balWith(home, "", "check", "-c", config);
  assert.equal(bad.code, 1);
  assert.match(
    bad.stderr,
    /test\.yaml:\d+:9: engine: expected one of "auto", "uring", "epoll", "native", "deno", got the text "fast"/,
  );
  const good = writeConfig(home, { port: freePort(), backends: [9] }, "good.yaml");
  const env = await balWith(home, "quick", "start", "-c", good);
  assert.equal(env.code, 1);
  assert.equal(env.stderr.trim().split("\n").length, 1, env.stderr);
  assert.match(env.stderr, /BAL_ENGINE: expected auto, uring, epoll or deno, got "quick"$/m);
});

Deno.test("engines: a client that stops reading holds the backend back, then gets every byte", async () => {
  const size = 64 * 1024 * 1024;
  const data = new Uint8Array(size).map((_, i) => (i * 7 + (i >> 13)) & 0xff);
  let backendDone = false;
  const pusher = serveTcp(async (conn) => {
    await writeAll(conn, data);
    backendDone = true;
    await conn.closeWrite();
  });
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [pusher.port] });
  const d = await startDaemon(home, config, port);
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const head = await readN(conn, 1024);
    // Kernel buffers on the way hold a few MB; bal itself must not take the rest.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(backendDone, false, "the backend wrote 64 MB to a client that was not reading");
    const rest = await readN(conn, size - 1024);
    const all = new Uint8Array(size);
    all.set(head);
    all.set(rest, 1024);
    assert.equal(sha256(all), sha256(data));
    conn.close();
  } finally {
    await d.stop();
    await pusher.close();
  }
});

Deno.test("native: system calls with a length stay optimized (no deoptimization loop in FFI calls)", async () => {
  // Deno's optimized FFI call takes a size_t only as a BigInt: a number deoptimized the caller
  // on every optimized call, and V8 recompiled it over and over (hundreds of times a minute
  // under load, each call meanwhile on the slow path).
  const script = `
    import * as sys from ${
    JSON.stringify(new URL("../../src/engine/linux/ffi.ts", import.meta.url).href)
  };
    sys.loadLibc();
    const buf = new Uint8Array(64);
    let sum = 0;
    for (let i = 0; i < 300_000; i++) {
      // fd -1: each call fails at once (EBADF), and reading errno is one more call with a length.
      sum += sys.recv(-1, buf, 16 + (i & 7)) + sys.peek(-1, buf, 8) + sys.send(-1, buf, 4);
    }
    console.log(sum < 0 ? "done" : "unexpected");
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--v8-flags=--trace-deopt", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.ok(out.success && text.includes("done"), text.slice(-2000));
  const loops = text.split("\n").filter((l) => l.includes("reason: not a BigInt"));
  assert.equal(loops.length, 0, loops.slice(0, 3).join("\n"));
});
