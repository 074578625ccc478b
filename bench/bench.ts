/**
 * `deno task bench [--quick] [--only bal,haproxy,features,...] [--features sni,...] [--rounds N] [--soak]`: bal's
 * speed and memory against a direct connection (the ceiling) and, when
 * installed, HAProxy (`mode tcp`, one thread) and nginx (`stream`, one
 * worker), measured in the same run on loopback.
 *
 * With `taskset`, the load generator and the backends run on cpu0 and the
 * proxy on cpu1, so what is compared is the proxy's own cost. HTTP workloads
 * use wrk when installed (a Deno client saturates its core first and
 * compresses the differences), the Deno generator in bench/load.ts otherwise.
 * Prints tables of absolute figures and ratios, and writes them as JSON to
 * bench/results.json. See docs/performance.md.
 *
 * @module
 */
import { type UpgradeGap, upgradeGap } from "./upgrade_gap.ts";
import { udpBench, udpTable } from "./udp.ts";
import { tlsBench, tlsTable } from "./tls.ts";
import { freePort } from "../tests/ports.ts";
import {
  balStartArgv,
  cpuMeter,
  FD_LIMIT,
  has,
  loadArgv,
  onCpu,
  pinned,
  waitPort,
} from "./proc.ts";

const args = Deno.args;
const quick = args.includes("--quick");
const flag = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i < 0 ? undefined : args[i + 1];
};
const rounds = Number(flag("rounds") ?? (quick ? 1 : 3));
const secs = quick ? 1 : 5;
const bigHold = Math.min(10000, Math.floor((FD_LIMIT - 200) / 2));
const holdCounts = quick ? [1000] : [1000, bigHold];
const only = flag("only")?.split(",");
const root = new URL("..", import.meta.url).pathname;
const tmp = Deno.makeTempDirSync({ prefix: "bal-bench-" });

const useWrk = has("wrk") && !args.includes("--deno-client");
const useIperf = has("iperf3") && !args.includes("--deno-client");

function spawn(
  argv: string[],
  opts: { stdin?: "piped" | "null"; quiet?: boolean; env?: Record<string, string> } = {},
) {
  return new Deno.Command(argv[0], {
    args: argv.slice(1),
    env: opts.env,
    cwd: root,
    stdin: opts.stdin ?? "null",
    stdout: "piped",
    stderr: opts.quiet === false ? "inherit" : "null",
  }).spawn();
}

/** Runs a generator command; killed should it outlive its own duration by a minute. */
async function run(argv: string[]): Promise<string> {
  const bounded = ["timeout", "-s", "KILL", String(secs + 60), ...argv];
  const out = await new Deno.Command(bounded[0], {
    args: bounded.slice(1),
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`${argv.join(" ")}: ${new TextDecoder().decode(out.stderr).slice(0, 300)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function statusKiB(pid: number, field: string): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(status)![1]);
}

function rssKiB(pid: number): number {
  return statusKiB(pid, "VmRSS");
}

/**
 * Anonymous resident memory (KiB): heap, stacks and buffers, what the
 * process itself allocated. RSS adds the pages of its executable and
 * libraries it has touched, which are clean (the kernel can drop and re-read
 * them) and shared by every process running the same executable.
 */
function anonKiB(pid: number): number {
  return statusKiB(pid, "RssAnon");
}

/** `/proc` counts CPU time in USER_HZ ticks, 100 per second on every Linux. */

/** A proxy (or none) started in front of the given backends. */
interface Running {
  port: number;
  /** The proxy's pid, or null for the direct connection. */
  pid: number | null;
  stop(): Promise<void>;
  /** bal: its event-loop lag histogram now (`bal_event_loop_lag_seconds` from /metrics). */
  lag?(): Promise<Map<number, number>>;
}

interface Target {
  name: string;
  start(
    backends: number[],
    opts?: {
      workers?: number;
      cpu?: number | null;
      /** Config lines (bal only). */
      extra?: string[];
      /** `runtime:` keys (bal only). */
      runtime?: Record<string, number>;
      /** The backends as an SNI route that the bench's ClientHello asks for (bal only). */
      routed?: boolean;
    },
  ): Promise<Running>;
}

async function stopProcess(child: Deno.ChildProcess, pid: number): Promise<void> {
  try {
    Deno.kill(pid, "SIGTERM");
  } catch { /* gone */ }
  const t = setTimeout(() => {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }, 5000);
  await child.status;
  clearTimeout(t);
}

const direct: Target = {
  name: "direct",
  start: (backends) =>
    Promise.resolve({ port: backends[0], pid: null, stop: () => Promise.resolve() }),
};

/**
 * bal on one engine: `bal` is io_uring (what `engine: auto` runs on a
 * Linux that allows it), `bal-epoll` and `bal-deno` the others.
 */
const balOn = (engine: "uring" | "epoll" | "deno"): Target => ({
  name: engine === "uring" ? "bal" : `bal-${engine}`,
  async start(backends, opts = {}) {
    const port = freePort();
    const home = Deno.makeTempDirSync({ dir: tmp, prefix: "bal-" });
    const list = backends.map((b) => `"127.0.0.1:${b}"`).join(", ");
    const lines = [
      `port: ${port}`,
      "bind_address: 127.0.0.1",
      "log_level: info",
      ...opts.routed
        ? [
          "routes:",
          "  - name: app",
          `    sni: [${HELLO_SNI}, "*.example.net"]`,
          `    backends: [${list}]`,
          "default_route: app",
        ]
        : [`backends: [${list}]`],
    ];
    if (opts.workers) lines.push(`workers: ${opts.workers}`);
    // As HAProxy and nginx get maxconn and worker_connections: room for the biggest hold.
    const runtime = { max_concurrent_connections: bigHold + 20, ...opts.runtime };
    // The admin endpoint, for the event-loop lag histogram (read before and after a load).
    const admin = freePort();
    lines.push(
      `engine: ${engine}`,
      `runtime: ${JSON.stringify(runtime)}`,
      `admin: {listen: "127.0.0.1:${admin}"}`,
      ...opts.extra ?? [],
    );
    Deno.writeTextFileSync(`${home}/config.yaml`, lines.join("\n") + "\n");
    // The real CLI with the release flags, as `deno task bal start` runs it.
    const argv = balStartArgv(`${home}/config.yaml`, opts.cpu === undefined ? 1 : opts.cpu);
    // taskset execs deno, so the child's pid is bal's: no wait for the pid
    // file, which bal writes a moment after it starts accepting.
    const child = spawn(argv, { env: { BAL_HOME: home } });
    await waitPort(port);
    await waitPort(admin);
    const lag = async () => {
      const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      const buckets = new Map<number, number>();
      for (
        const [, le, n] of text.matchAll(
          /^bal_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm,
        )
      ) {
        buckets.set(le === "+Inf" ? Infinity : Number(le), Number(n));
      }
      return buckets;
    };
    return { port, pid: child.pid, stop: () => stopProcess(child, child.pid), lag };
  },
});
const bal = balOn("uring");
const balEpoll = balOn("epoll");
const balDeno = balOn("deno");

const haproxy: Target = {
  name: "haproxy",
  async start(backends) {
    const port = freePort();
    const cfg = `${tmp}/haproxy-${port}.cfg`;
    Deno.writeTextFileSync(
      cfg,
      `global
  maxconn ${bigHold + 20}
  nbthread 1
defaults
  mode tcp
  maxconn ${bigHold + 20}
  timeout connect 5s
  timeout client 120s
  timeout server 120s
listen p
  bind 127.0.0.1:${port}
  balance roundrobin
${backends.map((b, i) => `  server s${i} 127.0.0.1:${b}`).join("\n")}
`,
    );
    const child = spawn(onCpu(1, ["haproxy", "-db", "-f", cfg]));
    await waitPort(port);
    return { port, pid: child.pid, stop: () => stopProcess(child, child.pid) };
  },
};

const nginx: Target = {
  name: "nginx",
  async start(backends) {
    const port = freePort();
    const dir = Deno.makeTempDirSync({ dir: tmp, prefix: "nginx-" });
    Deno.writeTextFileSync(
      `${dir}/stream.conf`,
      `load_module ${NGINX_STREAM};
worker_processes 1;
daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
worker_rlimit_nofile ${FD_LIMIT};
events { worker_connections ${2 * bigHold + 100}; }
stream {
  upstream be { ${backends.map((b) => `server 127.0.0.1:${b};`).join(" ")} }
  server { listen 127.0.0.1:${port} backlog=4096; proxy_pass be; }
}
`,
    );
    const child = spawn(onCpu(1, ["nginx", "-p", dir, "-c", `${dir}/stream.conf`]));
    await waitPort(port);
    return { port, pid: child.pid, stop: () => stopProcess(child, child.pid) };
  },
};

const NGINX_STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so";
const hasNginxStream = has("nginx") && (() => {
  try {
    return Deno.statSync(NGINX_STREAM).isFile;
  } catch {
    return false;
  }
})();
const targets = [
  direct,
  bal,
  balEpoll,
  balDeno,
  ...(has("haproxy") ? [haproxy] : []),
  ...(hasNginxStream ? [nginx] : []),
]
  .filter((t) =>
    !only || only.includes(t.name) || t.name === "direct" ||
    (only.includes("bal") && t.name.startsWith("bal")) ||
    // The io_uring engine's rounds alone, without the feature, upgrade, UDP and TLS runs.
    (t === bal && only.includes("bal-uring"))
  );
/** Whether any proxy is compared (`--only features` compares none: no rounds for direct alone). */
const comparing = targets.some((t) => t !== direct);

async function load(
  workload: string,
  port: number,
  extra: string[],
  cpu: number | null = 0,
): Promise<Record<string, number>> {
  const out = await run(loadArgv(workload, port, extra, cpu));
  return JSON.parse(out.trim().split("\n").pop()!);
}

/**
 * The p99 of the lag samples taken between two readings of the cumulative
 * histogram, as the bucket bound it falls under, in ms (Infinity above the last).
 */
function lagP99(before: Map<number, number>, after: Map<number, number>): number {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const total = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0);
  const bound = bounds.find((le) => (after.get(le)! - (before.get(le) ?? 0)) >= 0.99 * total);
  return (bound ?? Infinity) * 1000;
}

/** Parses "530.00us" / "1.19ms" / "2.00s" into milliseconds. */
function wrkMs(text: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(text)!;
  return Number(m[1]) * (m[2] === "us" ? 0.001 : m[2] === "ms" ? 1 : 1000);
}

async function wrk(
  port: number,
  close: boolean,
  cpu: number | null = 0,
  script?: string,
  conns = 50,
  seconds = secs,
): Promise<Record<string, number>> {
  const out = await run(onCpu(cpu, [
    "wrk",
    "-t1",
    `-c${conns}`,
    `-d${seconds}s`,
    "--latency",
    ...(close ? ["-H", "Connection: close"] : []),
    ...(script ? ["-s", script] : []),
    `http://127.0.0.1:${port}/`,
  ]));
  const errors =
    /Non-2xx or 3xx responses: (\d+)|Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/
      .exec(out);
  if (!/Requests\/sec/.test(out) || !/99%/.test(out)) {
    throw new Error(`unexpected wrk output:\n${out}`);
  }
  return {
    rate: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)![1]),
    p50_ms: wrkMs(/^\s+50%\s+(\S+)$/m.exec(out)![1]),
    p99_ms: wrkMs(/^\s+99%\s+(\S+)$/m.exec(out)![1]),
    errors: errors ? errors.slice(1).reduce((s, v) => s + Number(v ?? 0), 0) : 0,
  };
}

const short = (port: number, cpu: number | null = 0, seconds = secs) =>
  useWrk
    ? wrk(port, true, cpu, undefined, 50, seconds)
    : load("short", port, ["--conns", "50", "--secs", String(seconds)], cpu);

/**
 * Seconds of short connections every target serves, unmeasured, before its
 * row is measured. bal's hot path is compiled by V8 in its first second
 * under load (the compiler's thread alone is 4-5 % of bal's CPU in a 5-s
 * window), a cost a long-running balancer pays once; the rows are its
 * steady state, as HAProxy's are. What the warm-up cost is its own column.
 */
const WARM_UP_SECS = quick ? 1 : 2;

/** The server name in the ClientHello the SNI workload sends (a capture of openssl s_client). */
const HELLO_SNI = "app.example.com";

/**
 * A wrk script whose every request is a TLS ClientHello followed by an HTTP
 * request on a fresh connection: the backend, which reads up to the blank
 * line, answers as usual, and bal has a server name to route on. wrk checks
 * the first request a script makes is HTTP, so each Lua state's first one
 * is plain (a handful per run, sent to the default route).
 */
function helloScript(): string {
  const hex = Deno.readTextFileSync(`${root}tests/fixtures/client_hello/tls13_sni.hex`).trim();
  const path = `${tmp}/hello.lua`;
  Deno.writeTextFileSync(
    path,
    `local raw = ("${hex}"):gsub("..", function(cc) return string.char(tonumber(cc, 16)) end)
local plain = "GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
local calls = 0
request = function()
  calls = calls + 1
  if calls == 1 then return plain end
  return raw .. plain
end
`,
  );
  return path;
}

/** Short connections that each open with a ClientHello (needs wrk). */
const shortHello = (port: number) => wrk(port, true, 0, helloScript());
const keepalive = (port: number) =>
  useWrk ? wrk(port, false) : load("keepalive", port, ["--conns", "50", "--secs", String(secs)]);
/**
 * One client, one request at a time (keep-alive): the latency bal adds when
 * it is nearly idle, each step waking its loop from a wait (the io_uring
 * engine's wake once came 14 ms late, unseen at 50 connections).
 */
const lone = (port: number) =>
  useWrk
    ? wrk(port, false, 0, undefined, 1)
    : load("keepalive", port, ["--conns", "1", "--secs", String(secs)]);

/**
 * Gbit/s of `streams` parallel streams through the port into the sink. With
 * iperf3, a fresh server per measurement: a test it did not see end
 * cleanly leaves a long-lived server waiting forever.
 */
async function bulk(port: number, streams: number): Promise<number> {
  if (!useIperf) {
    return (await load("bulk", port, ["--streams", String(streams), "--secs", String(secs)]))
      .gbit_s;
  }
  const server = spawn(onCpu(0, ["iperf3", "-s", "-B", "127.0.0.1", "-p", String(sinkPort)]));
  try {
    await waitPort(sinkPort);
    const out = await run(
      onCpu(0, [
        "iperf3",
        "-c",
        "127.0.0.1",
        "-p",
        String(port),
        "-t",
        String(secs),
        "-P",
        String(streams),
        "-J",
      ]),
    );
    return JSON.parse(out).end.sum_received.bits_per_second / 1e9;
  } finally {
    try {
      server.kill("SIGKILL");
    } catch { /* already exited */ }
    await server.status;
  }
}

/**
 * How long RSS is left to settle before it is read (idle, held, released):
 * bal gives freed memory back once its counts stood still for a second
 * (src/instance/heap_trim.ts), which a read half a second after a burst
 * would miss. The others' RSS does not move after a burst.
 */
const SETTLE_MS = 2500;

/**
 * RSS idle, then with `count` idle proxied connections held: KiB per
 * connection. With `again`, the same count is held a second time once the
 * first have closed: what a connection costs a process that has served some
 * already (the first hold also pays one-time steps: code paged in, the JIT
 * compiler's scratch memory, the heap's first pages).
 */
async function memory(
  r: Running,
  count: number,
  again: boolean,
): Promise<{ idle_mb: number; idle_anon_mb: number; per_conn_kib: number; again_kib?: number }> {
  await sleep(SETTLE_MS);
  const idle = rssKiB(r.pid!);
  const idleAnon = anonKiB(r.pid!);
  const loaded = await rssHolding(r, count);
  const m = {
    idle_mb: idle / 1024,
    idle_anon_mb: idleAnon / 1024,
    per_conn_kib: (loaded - idle) / count,
  };
  if (!again) return m;
  await sleep(SETTLE_MS);
  const released = rssKiB(r.pid!);
  return { ...m, again_kib: (await rssHolding(r, count) - released) / count };
}

/** The proxy's RSS (KiB) while `count` idle connections through it are held open. */
async function rssHolding(r: Running, count: number): Promise<number> {
  const holder = spawn(loadArgv("hold", r.port, ["--count", String(count)]), { stdin: "piped" });
  const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { value } = await within(reader.read(), 60_000, `holding ${count} connections`);
  const held = JSON.parse(value!.trim().split("\n")[0]);
  await sleep(SETTLE_MS);
  const loaded = rssKiB(r.pid!);
  await holder.stdin.close();
  await reader.cancel();
  await holder.status;
  if (held.held < count) throw new Error(`held only ${held.held} of ${count} connections`);
  return loaded;
}

/** Resolves to `p`, or rejects after `ms` (the caller closes what it was waiting on). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((
      _,
      reject,
    ) => (timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

/** ms from spawning the proxy until a request through it is first answered (at most 20 s). */
async function startup(t: Target, backends: number[]): Promise<number> {
  const t0 = performance.now();
  const r = await t.start(backends);
  const buf = new Uint8Array(256);
  try {
    while (performance.now() - t0 < 20_000) {
      let c: Deno.TcpConn | null = null;
      try {
        c = await Deno.connect({ hostname: "127.0.0.1", port: r.port });
        await c.write(
          new TextEncoder().encode("GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"),
        );
        const n = await within(c.read(buf), 1000, "startup probe");
        if (n) return performance.now() - t0;
      } catch {
        await sleep(1);
      } finally {
        try {
          c?.close();
        } catch { /* closed */ }
      }
    }
    return NaN;
  } finally {
    await r.stop();
  }
}

/** Median of a non-empty list. */
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** What a feature costs: CPU µs per short connection with it and without, and each round's ratio. */
interface Cost {
  on: number;
  off: number;
  /** on/off per round: the spread says how far to trust the medians on this machine. */
  ratios: number[];
}

/**
 * bal's CPU per short connection under each of two settings (extra config
 * lines), interleaved round by round, the order swapped every round (a
 * machine that speeds up or slows down favours neither): what one feature
 * costs the data path.
 */
async function costOf(
  backends: number[],
  settings: Record<
    "on" | "off",
    { extra?: string[]; runtime?: Record<string, number>; routed?: boolean }
  >,
  load: (port: number) => Promise<Record<string, number>> = short,
): Promise<Cost> {
  const cost: Record<string, number[]> = { on: [], off: [] };
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? ["on", "off"] as const : ["off", "on"] as const;
    for (const key of order) {
      const r = await bal.start(backends, settings[key]);
      try {
        // Past start-up work (the first round of checks) that both settings do.
        await sleep(1000);
        const cpu = cpuMeter(r.pid!);
        const s = await load(r.port);
        const used = cpu.take();
        cost[key].push((used.user + used.sys) * 1e6 / (s.rate * secs));
      } finally {
        await r.stop();
      }
    }
  }
  const ratios = cost.on.map((on, i) => on / cost.off[i]);
  return { on: median(cost.on), off: median(cost.off), ratios };
}

/** bench/backend.ts with `args` (`--http PORTS`, `--sink PORT`), on core 0 beside the load. */
function backendProcess(args: string[]): Deno.ChildProcess {
  return spawn(
    onCpu(0, [Deno.execPath(), "run", "--allow-net", `${root}bench/backend.ts`, ...args]),
  );
}

/** A bandwidth limit far above anything loopback moves: its cost is the bookkeeping alone. */
const NEVER_LIMITS = "bandwidth: {upload_bytes_per_s: 10GB, download_bytes_per_s: 10GB}";

/** What `extra` costs per short connection and per keep-alive request, as `NAME_short` and `NAME_keepalive`. */
async function shapingCost(name: string, extra: string[]): Promise<Record<string, Cost>> {
  const settings = { on: { extra }, off: {} };
  return {
    [`${name}_short`]: await costOf([httpA, httpB], settings),
    [`${name}_keepalive`]: await costOf([httpA, httpB], settings, keepalive),
  };
}

/**
 * Mirroring every connection to a sink (CPU per connection and per
 * request), and the bulk throughput of a client whose mirror stops
 * reading against one without a mirror.
 */
async function mirrorCosts(): Promise<Record<string, Cost>> {
  const mirrorPort = freePort();
  const sink = backendProcess(["--sink", String(mirrorPort)]);
  await waitPort(mirrorPort);
  const stuck = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  (async () => {
    for await (const c of stuck) held.push(c);
  })().catch(() => {});
  try {
    const costs = await shapingCost("mirror", [`mirror: {backend: "127.0.0.1:${mirrorPort}"}`]);
    const stalledAt = (stuck.addr as Deno.NetAddr).port;
    const rates: Record<"on" | "off", number[]> = { on: [], off: [] };
    for (let round = 0; round < rounds; round++) {
      for (const key of ["on", "off"] as const) {
        const extra = key === "on" ? [`mirror: {backend: "127.0.0.1:${stalledAt}"}`] : [];
        const r = await bal.start([sinkPort], {
          extra,
          runtime: { health_check_interval_ms: 600_000 },
        });
        try {
          rates[key].push(await bulk(r.port, 1));
        } finally {
          await r.stop();
        }
      }
    }
    const ratios = rates.on.map((on, i) => on / rates.off[i]);
    return { ...costs, mirror_stalled: { on: median(rates.on), off: median(rates.off), ratios } };
  } finally {
    stuck.close();
    held.forEach((c) => c.close());
    await stopProcess(sink, sink.pid);
  }
}

/** Health checks at 100 backends (an HTTP check of each every 500 ms) against checks all but off. */
async function checksCost(): Promise<Cost> {
  const ports = Array.from({ length: 100 }, () => freePort());
  const many = backendProcess(["--http", ports.join(",")]);
  await waitPort(ports[ports.length - 1]);
  try {
    return await costOf(ports, {
      on: {
        extra: ["health_check: {type: http, path: /}"],
        runtime: { health_check_interval_ms: 500 },
      },
      off: { runtime: { health_check_interval_ms: 86400000 } },
    });
  } finally {
    await stopProcess(many, many.pid);
  }
}

type Row = Record<string, number>;

/** CPU per unit of work in a row: user + system µs per short connection, or per keep-alive request. */
const CPU_OF = {
  short: (r: Row) => r.short_user_us + r.short_sys_us,
  keepalive: (r: Row) => r.keepalive_cpu_us,
};

/**
 * Every proxy's work per CPU-second against HAProxy's (HAProxy's CPU per
 * unit over the proxy's, each round's own pair, then the median of the
 * rounds; beside it the ratio of the medians), its bulk rate, and its memory
 * per idle connection, under issue 25's goals for the io_uring engine.
 */
function goalsTable(samples: Map<string, Row[]>): string {
  const base = samples.get("haproxy")!;
  const work = (rows: Row[], of: (r: Row) => number) => {
    const perRound = rows.map((r, i) => of(base[i]) / of(r)).filter(Number.isFinite);
    const ofMedians = median(base.map(of)) / median(rows.map(of));
    return perRound.length
      ? `${median(perRound).toFixed(2)} (${perRound.map((x) => x.toFixed(2)).join(", ")}; medians ${
        ofMedians.toFixed(2)
      })`
      : "-";
  };
  const times = (rows: Row[], key: string) => {
    const v = median(rows.map((r) => r[key])) / median(base.map((r) => r[key]));
    return Number.isFinite(v) ? v.toFixed(2) : "-";
  };
  const lines = [
    "\nWork per CPU-second against HAProxy 1 thread: the median of the rounds (each round; the ratio of the medians)",
    "| target | short connections (goal >= 1.2) | keep-alive requests (goal >= 1.05) | bulk 1 stream, rate (goal >= 1.0) | KiB per idle connection, x HAProxy's (goal <= 1) |",
    "| --- | --- | --- | --- | --- |",
  ];
  for (const [name, rows] of samples) {
    if (name === "haproxy" || name === "direct") continue;
    const memory = holdCounts.map((c) => `@${c} ${times(rows, `kib_per_conn_${c}`)}`).join(", ");
    lines.push(
      `| ${name} | ${work(rows, CPU_OF.short)} | ${work(rows, CPU_OF.keepalive)} | ${
        times(rows, "bulk1_gbit_s")
      } | ${memory} |`,
    );
  }
  return lines.join("\n");
}

const samples = new Map<string, Row[]>();
const add = (target: string, row: Row) =>
  samples.set(target, [...(samples.get(target) ?? []), row]);

const [httpA, httpB, sinkPort] = [freePort(), freePort(), freePort()];
const backend = backendProcess([
  "--http",
  `${httpA},${httpB}`,
  ...(useIperf ? [] : ["--sink", String(sinkPort)]),
]);
await waitPort(httpA);
if (!useIperf) await waitPort(sinkPort);

console.log(
  `bench: ${rounds} round(s) of ${secs} s per workload; ${
    pinned ? "generator+backends on cpu0, proxy on cpu1" : "unpinned (no taskset)"
  }; ` +
    `HTTP client: ${useWrk ? "wrk" : "Deno (bench/load.ts)"}; bulk: ${
      useIperf ? "iperf3" : "Deno"
    }; targets: ${targets.map((t) => t.name).join(", ")}`,
);

/**
 * `--soak`: each bal engine holds as many idle proxied connections as the
 * fd limit allows for three minutes, its RSS sampled every 15 s: memory
 * that grows while nothing happens is a leak.
 */
async function soak(): Promise<void> {
  for (const t of [bal, balEpoll, balDeno]) {
    const r = await t.start([httpA, httpB]);
    const holder = spawn(loadArgv("hold", r.port, ["--count", String(bigHold)]), {
      stdin: "piped",
    });
    try {
      const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const { value } = await within(reader.read(), 120_000, `holding ${bigHold} connections`);
      const samples: number[] = [];
      for (let i = 0; i <= 12; i++) {
        if (i > 0) await sleep(15_000);
        samples.push(Math.round(rssKiB(r.pid!) / 1024 * 10) / 10);
      }
      const drift = samples[samples.length - 1] - samples[0];
      console.log(
        `soak ${t.name}: ${value!.trim()}; RSS MB every 15 s: ${samples.join(", ")}; drift ${
          drift.toFixed(1)
        } MB`,
      );
      await reader.cancel();
    } finally {
      await holder.stdin.close().catch(() => {});
      await holder.status;
      await r.stop();
    }
  }
}

try {
  if (args.includes("--soak")) {
    await soak();
    await cleanup();
    Deno.exit(0);
  }
  for (let round = 1; comparing && round <= rounds; round++) {
    for (const t of targets) {
      const row: Row = {};
      const http = await t.start([httpA, httpB]);
      try {
        const cpu = http.pid ? cpuMeter(http.pid) : null;
        const w = await short(http.port, 0, WARM_UP_SECS);
        if (cpu) {
          const used = cpu.take();
          row.warmup_us = (used.user + used.sys) * 1e6 / (w.rate * WARM_UP_SECS);
        }
        const lagBefore = await http.lag?.();
        const s = await short(http.port);
        row.short_per_s = s.rate;
        if (cpu) {
          // Per connection, split, so what the proxy's own code costs shows beside the kernel's part.
          const used = cpu.take();
          row.short_user_us = used.user * 1e6 / (s.rate * secs);
          row.short_sys_us = used.sys * 1e6 / (s.rate * secs);
        }
        const k = await keepalive(http.port);
        row.keepalive_per_s = k.rate;
        row.keepalive_p50_ms = k.p50_ms;
        row.keepalive_p99_ms = k.p99_ms;
        if (cpu) {
          const used = cpu.take();
          row.keepalive_cpu_us = (used.user + used.sys) * 1e6 / (k.rate * secs);
        }
        // The samples taken during the two loads alone: the loaded loop's lag, without start-up's.
        if (lagBefore) row.loop_lag_p99_ms = lagP99(lagBefore, await http.lag!());
        const l = await lone(http.port);
        row.lone_p50_ms = l.p50_ms;
        row.lone_p99_ms = l.p99_ms;
      } finally {
        await http.stop();
      }
      if (t !== direct) {
        // A fresh proxy per count: a heap warmed by the load above would hide the growth.
        for (const count of holdCounts) {
          const fresh = await t.start([httpA, httpB]);
          try {
            const m = await memory(fresh, count, count === holdCounts[0]);
            row.idle_rss_mb ??= m.idle_mb;
            row.idle_anon_mb ??= m.idle_anon_mb;
            row[`kib_per_conn_${count}`] = m.per_conn_kib;
            if (m.again_kib !== undefined) row[`kib_per_conn_${count}_again`] = m.again_kib;
          } finally {
            await fresh.stop();
          }
        }
      }
      // iperf3's server takes one control connection at a time, and a fresh one per
      // measurement: a health check landing between its runs failed the run. One check, at start.
      const sink = await t.start([sinkPort], { runtime: { health_check_interval_ms: 600_000 } });
      try {
        row.bulk1_gbit_s = await bulk(sink.port, 1);
        row.bulk8_gbit_s = await bulk(sink.port, 8);
      } finally {
        await sink.stop();
      }
      if (t !== direct) row.startup_ms = await startup(t, [httpA, httpB]);
      add(t.name, row);
      console.log(
        `round ${round} ${t.name}: ${
          JSON.stringify(row, (_, v) => typeof v === "number" ? Math.round(v * 100) / 100 : v)
        }`,
      );
    }
  }

  // All cores: short connections through bal with 1 and 2 workers, unpinned,
  // with the CPU they took, since the load generator shares the machine.
  const scaling: Row = {};
  if (!only || only.includes("bal")) {
    for (const t of [bal, balEpoll, balDeno]) {
      for (const workers of [1, 2]) {
        const r = await t.start([httpA, httpB], { workers, cpu: null });
        const key = `${t.name}_workers_${workers}`;
        try {
          const cpu = cpuMeter(r.pid!);
          const rate = (await short(r.port, null)).rate;
          const used = cpu.take();
          scaling[`${key}_short_per_s`] = rate;
          scaling[`${key}_per_cpu_s`] = rate * secs / (used.user + used.sys);
        } catch (err) {
          console.log(`${key}: ${err}`);
        } finally {
          await r.stop();
        }
      }
    }
  }

  // `--only features`: what each feature costs bal, without the comparison rounds.
  // `--features sni,send_proxy`: only those (each is a few minutes).
  const picked = flag("features")?.split(",");
  const want = (name: string) => !picked || picked.includes(name);
  const features: Record<string, Cost | null> | null =
    !only || only.includes("bal") || only.includes("features")
      ? {
        checks: want("checks") ? await checksCost() : null,
        access_log: want("access_log")
          ? await costOf([httpA, httpB], {
            on: { extra: ["access_log: true", `access_log_path: ${tmp}/access.log`] },
            off: {},
          })
          : null,
        // The backend reads up to the blank line, so a v1 header (one line) ahead of the request is fine.
        send_proxy: want("send_proxy")
          ? await costOf([httpA, httpB], { on: { extra: ["send_proxy: v1"] }, off: {} })
          : null,
        // Both settings get the same bytes (a ClientHello, then a request); only one reads it.
        sni: useWrk && want("sni")
          ? await costOf([httpA, httpB], { on: { routed: true }, off: {} }, shortHello)
          : null,
        ...(want("bandwidth") ? await shapingCost("bandwidth", [NEVER_LIMITS]) : {}),
        ...(want("mirror") ? await mirrorCosts() : {}),
      }
      : null;
  const result: Record<string, Row> = {};
  for (const [name, rows] of samples) {
    result[name] = {};
    for (const key of Object.keys(rows[0])) result[name][key] = median(rows.map((r) => r[key]));
  }

  const columns: [string, string][] = [
    ["short_per_s", "short conn/s"],
    ["short_user_us", "user µs/conn"],
    ["short_sys_us", "sys µs/conn"],
    ["warmup_us", "warm-up µs/conn"],
    ["keepalive_per_s", "keep-alive req/s"],
    ["keepalive_p50_ms", "p50 ms"],
    ["keepalive_p99_ms", "p99 ms"],
    ["keepalive_cpu_us", "CPU µs/req"],
    ["lone_p50_ms", "1 conn p50 ms"],
    ["lone_p99_ms", "1 conn p99 ms"],
    ["loop_lag_p99_ms", "loop lag p99 ≤ ms"],
    ["bulk1_gbit_s", "bulk 1 Gbit/s"],
    ["bulk8_gbit_s", "bulk 8 Gbit/s"],
    ["idle_rss_mb", "idle RSS MB"],
    ["idle_anon_mb", "idle anon MB"],
    ...holdCounts.map((c) => [`kib_per_conn_${c}`, `KiB/conn @${c}`] as [string, string]),
    [`kib_per_conn_${holdCounts[0]}_again`, `KiB/conn @${holdCounts[0]}, 2nd hold`],
    ["startup_ms", "startup ms"],
  ];
  const fmt = (v: number | undefined) =>
    v === undefined || Number.isNaN(v) ? "-" : v >= 100 ? String(Math.round(v)) : v.toFixed(2);
  const table = (title: string, value: (name: string, key: string) => number | undefined) => {
    const lines = [
      `\n${title}`,
      `| target | ${columns.map((c) => c[1]).join(" | ")} |`,
      `| --- | ${columns.map(() => "---").join(" | ")} |`,
    ];
    for (const name of Object.keys(result)) {
      lines.push(`| ${name} | ${columns.map(([k]) => fmt(value(name, k))).join(" | ")} |`);
    }
    console.log(lines.join("\n"));
  };
  const ratio = (base: string) => (name: string, key: string) => {
    const b = result[base]?.[key];
    const v = result[name]?.[key];
    return b === undefined || v === undefined || b === 0 ? undefined : v / b;
  };
  if (comparing) {
    table("Absolute (medians)", (name, key) => result[name][key]);
    table(
      "Ratio to direct (higher is better for rates; lower for latency, memory, startup)",
      ratio("direct"),
    );
  }
  if (result.haproxy) table("Ratio to HAProxy 1-thread", ratio("haproxy"));
  if (samples.has("haproxy")) console.log(goalsTable(samples));
  if (Object.keys(scaling).length) {
    console.log(
      `\nAll cores, unpinned, short connections through bal (conn/s; conn per CPU-second): ${
        Object.entries(scaling).map(([k, v]) => `${k}=${Math.round(v)}`).join(", ")
      }`,
    );
  }

  if (features) {
    const said: [string, Cost | null][] = [
      ["health checks at 100 backends (HTTP every 500 ms)", features.checks],
      ["access log (one NDJSON line per connection, to a file)", features.access_log],
      ["send_proxy: v1 (a PROXY header to the backend per connection)", features.send_proxy],
      ["SNI route (ClientHello read, name matched) vs plain forwarding, same bytes", features.sni],
      ["bandwidth limit that never triggers (10 GB/s each way)", features.bandwidth_short ?? null],
      ["  the same, CPU per keep-alive request", features.bandwidth_keepalive ?? null],
      ["mirror at 100 % (every connection copied to a sink)", features.mirror_short ?? null],
      ["  the same, CPU per keep-alive request", features.mirror_keepalive ?? null],
    ];
    // The median of the rounds' own ratios: each round's pair ran minutes apart from the
    // others, on a machine whose speed drifts, but seconds apart from each other.
    const lines = said.filter(([, c]) => c !== null).map(([what, c]) =>
      `  ${what}: ${median(c!.ratios).toFixed(2)}x (rounds ${
        c!.ratios.map((r) => r.toFixed(2)).join(", ")
      }; medians ${c!.on.toFixed(1)} vs ${c!.off.toFixed(1)} µs)`
    );
    if (!useWrk && want("sni")) lines.push("  SNI route: needs wrk");
    const stalled = features.mirror_stalled;
    if (stalled) {
      lines.push(
        `  a mirror that stops reading, bulk through one stream: ${
          median(stalled.ratios).toFixed(2)
        }x the throughput without a mirror (${stalled.on.toFixed(2)} vs ${
          stalled.off.toFixed(2)
        } Gbit/s)`,
      );
    }
    console.log(
      `\nCPU per short connection (per request where said), feature on vs off:\n${
        lines.join("\n")
      }`,
    );
  }

  // `bal upgrade` under a steady load: failures, and the longest gap between completions.
  const upgrades = !only || only.includes("bal") || only.includes("upgrade")
    ? await upgradeGaps(quick ? 2 : 5)
    : null;

  // UDP request/reply through bal and nginx stream (proxy_responses 1), with dnsperf.
  const udp = !only || only.includes("bal") || only.includes("udp") ? await udpBench(secs) : null;
  if (udp) console.log(udpTable(udp));

  // TLS termination through bal, HAProxy and nginx stream: handshakes per CPU-second, bulk.
  const tls = !only || only.includes("bal") || only.includes("tls")
    ? await tlsBench(secs, quick ? 1 : 3)
    : null;
  if (tls) console.log(`\nTLS termination\n${tlsTable(tls)}`);

  const json = {
    date: new Date().toISOString(),
    machine: {
      cpus: navigator.hardwareConcurrency,
      os: Deno.build.os,
      arch: Deno.build.arch,
      deno: Deno.version.deno,
    },
    method: {
      rounds,
      secs,
      pinned,
      http_client: useWrk ? "wrk" : "deno",
      bulk: useIperf ? "iperf3" : "deno",
      fd_limit: FD_LIMIT,
    },
    results: result,
    scaling,
    features,
    upgrades,
    udp,
    tls,
  };
  await Deno.writeTextFile(`${root}bench/results.json`, JSON.stringify(json, null, 2) + "\n");
  console.log(`\nwrote bench/results.json`);
} finally {
  await cleanup();
}

/** Each engine's upgrade gaps, printed as a table. */
async function upgradeGaps(count: number): Promise<UpgradeGap[]> {
  const rows: UpgradeGap[] = [];
  for (const engine of ["uring", "epoll", "deno"]) rows.push(await upgradeGap(engine, count));
  console.log(
    [
      `\nbal upgrade under load (${count} upgrades; short connections on 4 loops; gaps in ms)`,
      "| engine | connections | failed | longest gap in an upgrade | normal gap p99 | normal gap max |",
      "| --- | --- | --- | --- | --- | --- |",
      ...rows.map((r) =>
        `| ${r.engine} | ${r.connections} | ${r.failed} | ${r.gap_during_upgrade_ms} | ${r.gap_normal_p99_ms} | ${r.gap_normal_max_ms} |`
      ),
    ].join("\n"),
  );
  return rows;
}

/** Ends the backends and removes the temporary directory. */
async function cleanup(): Promise<void> {
  try {
    backend.kill("SIGTERM");
  } catch { /* already exited */ }
  await backend.status;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}
