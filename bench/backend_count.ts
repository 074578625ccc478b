/**
 * `deno run -A bench/backend_count.ts [N ...]`: how many backends one bal
 * can watch. For each count it starts bal (the release flags, as a daemon)
 * with that many backends on distinct loopback addresses where nothing
 * listens (each check is refused at once: the loop's own cost is what is
 * measured), lets it run 15 s with the default health-check settings, then
 * reports: how long `bal status --json` took (worst of 3), bal's CPU share
 * and resident memory over 5 s, the oldest last check against the check
 * interval, and how many checks said "refused" (a saturated loop turns
 * refusals into timeouts). See docs/performance.md, "How many backends".
 *
 * @module
 */
import { freePort } from "../tests/ports.ts";

const root = new URL("..", import.meta.url).pathname;
const counts = Deno.args.length ? Deno.args.map(Number) : [1000, 4000, 10000, 16000];
const tick = 100; // USER_HZ: /proc/PID/stat counts CPU time in 1/100 s

async function bal(home: string, ...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "bal", ...args],
    cwd: root,
    env: { BAL_HOME: home },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** User + system CPU ticks and resident KiB of `pid`. */
function usage(pid: number): { ticks: number; rssKiB: number } {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return {
    ticks: Number(fields[11]) + Number(fields[12]),
    rssKiB: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0),
  };
}

async function measure(n: number) {
  const home = Deno.makeTempDirSync({ prefix: "bal-count-" });
  // 250 addresses per /24 (no .0 or .255), all of them loopback: 127.X.Y.1-250.
  const unique = Array.from({ length: n }, (_, i) => {
    const net = Math.floor(i / 250);
    return `"127.${1 + (net >> 8)}.${net & 255}.${(i % 250) + 1}:9"`;
  });
  Deno.writeTextFileSync(
    `${home}/c.yaml`,
    `bind_address: 127.0.0.1\nport: ${freePort()}\nlog_level: warn\nbackends: [${
      unique.join(", ")
    }]\n`,
  );
  const started = await bal(home, "start", "-d", "-c", `${home}/c.yaml`);
  if (started.code !== 0) return console.log(`${n}: did not start: ${started.stderr.trim()}`);
  const pid = Number(Deno.readTextFileSync(`${home}/bal.pid`).trim());
  try {
    await new Promise((r) => setTimeout(r, 15_000));
    const before = usage(pid);
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, 5_000));
    const after = usage(pid);
    const cpu = (after.ticks - before.ticks) / tick / ((Date.now() - t0) / 1000);
    let worst = 0;
    let status: {
      services: {
        runtime: Record<string, number>;
        backends: { last_check_time: string | null; last_error: string | null }[];
      }[];
    } | null = null;
    for (let i = 0; i < 3; i++) {
      const at = Date.now();
      const r = await bal(home, "status", "--json");
      if (r.code !== 0) throw new Error(`${n} backends: status failed: ${r.stderr}`);
      worst = Math.max(worst, Date.now() - at);
      status = JSON.parse(r.stdout);
    }
    const svc = status!.services[0];
    const now = Date.now();
    const ages = svc.backends.map((b) =>
      b.last_check_time ? now - Date.parse(b.last_check_time) : Infinity
    );
    const refused = svc.backends.filter((b) => /refused/.test(b.last_error ?? "")).length;
    console.log(
      `${unique.length} backends: status ${worst} ms (worst of 3), CPU ${
        (cpu * 100).toFixed(0)
      } %, RSS ${(after.rssKiB / 1024).toFixed(0)} MiB, oldest check ${
        Math.max(...ages)
      } ms (interval ${svc.runtime.health_check_interval_ms} ms), refused ${refused}/${unique.length}`,
    );
  } finally {
    await bal(home, "stop", "--force");
    Deno.removeSync(home, { recursive: true });
  }
}

for (const n of counts) await measure(n);
