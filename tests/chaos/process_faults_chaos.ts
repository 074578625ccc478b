/**
 * Process faults: `kill -9` of the daemon, two starts at the same moment,
 * a zombie or another process behind the pid file, and a control socket
 * that another user tries to reach.
 */
import assert from "node:assert/strict";
import {
  alive,
  bal,
  echoBackend,
  echoing,
  freePort,
  missingTool,
  readPid,
  tempHome,
  waitFor,
  writeConfig,
} from "../helpers.ts";
import { record, sleep } from "./chaos.ts";

const figures: Record<string, unknown> = {};

Deno.test("chaos: after kill -9, the next start finds the stale pid file and socket and starts cleanly", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [echo.port] });
  let pid = 0;
  try {
    assert.equal((await bal(home, "start", "-d", "-c", config)).code, 0);
    pid = readPid(home)!;
    Deno.kill(pid, "SIGKILL");
    await waitFor("the kill", () => !alive(pid));
    // Left behind: the pid file and the socket of a dead bal.
    assert.equal(readPid(home), pid);
    assert.ok(Deno.statSync(`${home}/bal.sock`).isSocket);
    const status = JSON.parse((await bal(home, "status", "--json")).stdout);
    assert.equal(status.running, false);
    const again = await bal(home, "start", "-d", "-c", config);
    assert.equal(again.code, 0, again.stderr);
    const next = readPid(home)!;
    assert.notEqual(next, pid);
    const live = JSON.parse((await bal(home, "status", "--json")).stdout);
    assert.equal(live.pid, next);
    (await echoing(port)).close();
    assert.ok(
      (await bal(home, "doctor", "--json")).stdout.includes(`running as pid ${next}`),
      "doctor sees the new one",
    );
    pid = next;
    figures.kill_9_restart = "clean";
  } finally {
    await bal(home, "stop");
    if (pid && alive(pid)) Deno.kill(pid, "SIGKILL");
    await echo.close();
  }
});

Deno.test("chaos: two starts at the same moment: exactly one wins", async () => {
  const echo = echoBackend();
  const home = tempHome();
  // Different ports, so only the lock can decide.
  const a = writeConfig(home, { port: freePort(), backends: [echo.port] }, "a.yaml");
  const b = writeConfig(home, { port: freePort(), backends: [echo.port] }, "b.yaml");
  const wins: number[] = [];
  try {
    for (let round = 0; round < 3; round++) {
      const [ra, rb] = await Promise.all([
        bal(home, "start", "-d", "-c", a),
        bal(home, "start", "-d", "-c", b),
      ]);
      assert.deepEqual([ra.code, rb.code].sort(), [0, 1], `${ra.stderr} | ${rb.stderr}`);
      const loser = ra.code === 1 ? ra : rb;
      assert.match(loser.stderr, /^bal is already running/);
      assert.equal(loser.stderr.trim().split("\n").length, 1);
      wins.push(ra.code === 0 ? 0 : 1);
      const pid = readPid(home)!;
      assert.ok(alive(pid));
      assert.equal((await bal(home, "stop")).code, 0);
    }
    figures.simultaneous_starts = { rounds: 3, winners_per_round: 1 };
  } finally {
    const pid = readPid(home);
    if (pid && alive(pid)) Deno.kill(pid, "SIGKILL");
    await echo.close();
  }
});

Deno.test("chaos: a zombie or an unrelated process behind the pid file is never taken for bal", async () => {
  const echo = echoBackend();
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { port, backends: [echo.port] });
  // `sleep 0.1` becomes a child of `sleep 5` (after exec), which never reaps it: a zombie.
  const parent = new Deno.Command("sh", {
    args: ["-c", "sleep 0.1 & echo $!; exec sleep 5"],
    stdout: "piped",
  }).spawn();
  const reader = parent.stdout.getReader();
  const zombie = Number(new TextDecoder().decode((await reader.read()).value).trim());
  reader.releaseLock();
  const other = new Deno.Command("sleep", { args: ["30"] }).spawn();
  try {
    await waitFor("the zombie", () => {
      const stat = Deno.readTextFileSync(`/proc/${zombie}/stat`);
      return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
    }, 3000);
    for (const pid of [zombie, other.pid]) {
      Deno.writeTextFileSync(`${home}/bal.pid`, `${pid}\n`);
      const s = JSON.parse((await bal(home, "status", "--json")).stdout);
      if (pid === zombie) assert.equal(s.running, false, "a zombie is not a running bal");
      const r = await bal(home, "start", "-d", "-c", config);
      assert.equal(r.code, 0, r.stderr);
      assert.notEqual(readPid(home), pid);
      assert.equal((await bal(home, "stop")).code, 0);
      assert.ok(alive(other.pid), "stop never signals the unrelated process");
    }
    figures.zombie_and_reused_pid = "not taken for bal";
  } finally {
    parent.kill("SIGKILL");
    other.kill("SIGKILL");
    await Promise.all([parent.status, other.status]);
    await parent.stdout.cancel().catch(() => {});
    await echo.close();
  }
});

// Switching to another user needs root, setpriv and a python3 that user can run; the name
// says whether this run checks it (CI runs as root and installs both).
const canSwitch = Deno.uid() === 0 && !missingTool("setpriv") && !missingTool("/usr/bin/python3");

Deno.test(
  canSwitch
    ? "chaos: the control socket refuses another user, and survives random bytes"
    : "chaos: the control socket survives random bytes (another user: not checked, needs root)",
  async () => {
    const echo = echoBackend();
    const home = tempHome();
    const port = freePort();
    // Even with the directory open to all, the socket itself (0600) keeps others out.
    Deno.chmodSync(home, 0o755);
    const config = writeConfig(home, { port, backends: [echo.port] });
    assert.equal((await bal(home, "start", "-d", "-c", config)).code, 0);
    const pid = readPid(home)!;
    try {
      if (canSwitch) {
        const probe =
          `import socket\ns=socket.socket(socket.AF_UNIX)\ns.connect("${home}/bal.sock")\ns.sendall(b'{"cmd":"status"}\\n')\nprint(s.recv(100))`;
        const nobody = await new Deno.Command("setpriv", {
          args: [
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            probe,
          ],
          stderr: "piped",
          stdout: "piped",
        }).output();
        assert.notEqual(nobody.code, 0);
        assert.match(new TextDecoder().decode(nobody.stderr), /PermissionError/);
      }
      // Random bytes, many times: every answer is an error object or nothing, and bal lives on.
      let answered = 0;
      // Most end their request (answered at once); every tenth just stops sending.
      for (let i = 0; i < 200; i++) {
        const c = await Deno.connect({ transport: "unix", path: `${home}/bal.sock` });
        const junk = crypto.getRandomValues(new Uint8Array(1 + Math.floor(Math.random() * 2000)));
        await c.write(junk).catch(() => {});
        if (i % 10) await c.closeWrite().catch(() => {});
        const buf = new Uint8Array(4096);
        const n = await Promise.race([
          c.read(buf).catch(() => null),
          sleep(i % 10 ? 3000 : 100).then(() => null),
        ]);
        if (n) {
          assert.equal(
            typeof JSON.parse(new TextDecoder().decode(buf.subarray(0, n))).error,
            "string",
          );
          answered++;
        }
        c.close();
      }
      assert.ok(alive(pid));
      const s = JSON.parse((await bal(home, "status", "--json")).stdout);
      assert.equal(s.running, true);
      (await echoing(port)).close();
      figures.control_socket = {
        other_user: canSwitch ? "refused (EACCES)" : "not checked (needs root and setpriv)",
        random_payloads: 200,
        answered,
      };
    } finally {
      await bal(home, "stop");
      if (alive(pid)) Deno.kill(pid, "SIGKILL");
      await echo.close();
    }
    record("process_faults", figures);
  },
);
