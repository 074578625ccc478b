/**
 * The UDP workload: DNS queries from dnsperf through a proxy to dnsmasq,
 * request/reply (bal's `mode: request`, nginx stream's `proxy_responses
 * 1`), pinned as the TCP workloads are (the proxy on core 1, dnsperf and
 * dnsmasq on core 0). Reports queries per CPU-second of the proxy, the
 * rate, and the latency p99 (from dnsperf's per-query lines), then the
 * queries lost at half of bal's measured maximum rate. Run alone with
 * `deno run --allow-all bench/udp.ts [--secs N]`, or as part of `deno task bench`.
 *
 * @module
 */
import { freePort } from "../tests/ports.ts";
import { balStartArgv, cpuMeter, has, onCpu } from "./proc.ts";

/** One proxy's figures. */
export interface UdpRow {
  target: string;
  /** Queries answered per second. */
  qps: number;
  /** Queries answered per CPU-second of the proxy (null for direct). */
  per_cpu_s: number | null;
  lost: number;
  p99_ms: number;
}

/** The whole workload's result. */
export interface UdpResult {
  rows: UdpRow[];
  /** bal at half its maximum rate: queries sent and lost. */
  half_rate: { qps: number; sent: number; lost: number } | null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const NGINX_STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so";

interface Proxy {
  port: number;
  pid: number | null;
  stop(): Promise<void>;
}

function spawn(argv: string[], env: Record<string, string> = {}): Deno.ChildProcess {
  return new Deno.Command(argv[0], {
    args: argv.slice(1),
    env,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

async function stop(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch { /* gone */ }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, 5000);
  await child.status;
  clearTimeout(timer);
}

/** dnsperf's command line against `port` with the queries in `file`, then `extra`. */
function dnsperfArgv(port: number, file: string, ...extra: string[]): string[] {
  return ["dnsperf", "-s", "127.0.0.1", "-p", String(port), "-d", file, ...extra];
}

/** Answers once a query through `port` is answered. */
async function waitDns(port: number, dir: string): Promise<void> {
  const file = `${dir}/one.txt`;
  Deno.writeTextFileSync(file, "www.bench.lan A\n");
  for (let i = 0; i < 200; i++) {
    const out = await run(dnsperfArgv(port, file, "-n", "1", "-t", "0.2"));
    if (/Queries completed:\s+1 /.test(out)) return;
    await sleep(50);
  }
  throw new Error(`no DNS answer through ${port}`);
}

async function run(argv: string[]): Promise<string> {
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  return new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
}

function dnsmasq(dir: string): { port: number; child: Deno.ChildProcess } {
  const port = freePort();
  Deno.writeTextFileSync(`${dir}/hosts`, "10.0.0.1 www.bench.lan\n");
  const child = spawn(onCpu(0, [
    "dnsmasq",
    "-k",
    "--conf-file=/dev/null",
    `--port=${port}`,
    "--listen-address=127.0.0.1",
    "--bind-interfaces",
    "--no-resolv",
    "--no-hosts",
    "--local=/bench.lan/",
    `--addn-hosts=${dir}/hosts`,
    "--user=root",
    `--pid-file=${dir}/dnsmasq.pid`,
    "--cache-size=0",
  ]));
  return { port, child };
}

function startBal(dir: string, backend: number): Proxy {
  const port = freePort();
  Deno.writeTextFileSync(
    `${dir}/bal.yaml`,
    `protocol: udp\nbind_address: 127.0.0.1\nport: ${port}\nlog_level: warn\nudp: {mode: request}\nbackends: ["127.0.0.1:${backend}"]\n`,
  );
  const child = spawn(balStartArgv(`${dir}/bal.yaml`, 1), { BAL_HOME: dir });
  return { port, pid: child.pid, stop: () => stop(child) };
}

function startNginx(dir: string, backend: number): Proxy {
  const port = freePort();
  Deno.writeTextFileSync(
    `${dir}/nginx.conf`,
    `load_module ${NGINX_STREAM};
worker_processes 1;
daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
stream {
  upstream dns { server 127.0.0.1:${backend}; }
  server { listen 127.0.0.1:${port} udp; proxy_pass dns; proxy_responses 1; proxy_timeout 5s; }
}
`,
  );
  const child = spawn(onCpu(1, ["nginx", "-p", dir, "-c", `${dir}/nginx.conf`]));
  return { port, pid: child.pid, stop: () => stop(child) };
}

/** dnsperf against `port` for `secs` (at most `qps` a second when given); figures from its output. */
async function perf(port: number, dir: string, secs: number, qps?: number) {
  const file = `${dir}/queries.txt`;
  Deno.writeTextFileSync(file, "www.bench.lan A\n".repeat(1000));
  const argv = dnsperfArgv(port, file, "-l", String(secs), "-t", "2", "-v");
  if (qps) argv.push("-Q", String(Math.round(qps)));
  const out = await run(onCpu(0, argv));
  const latencies = [...out.matchAll(/^> \S+ \S+ \S+ ([\d.]+)$/gm)].map((m) => Number(m[1]) * 1000)
    .sort((a, b) => a - b);
  return {
    sent: Number(/Queries sent:\s+(\d+)/.exec(out)?.[1] ?? 0),
    completed: Number(/Queries completed:\s+(\d+)/.exec(out)?.[1] ?? 0),
    lost: Number(/Queries lost:\s+(\d+)/.exec(out)?.[1] ?? 0),
    p99: latencies.length ? latencies[Math.floor(latencies.length * 0.99)] : NaN,
  };
}

async function measure(
  name: string,
  proxy: Proxy | null,
  backend: number,
  dir: string,
  secs: number,
): Promise<UdpRow> {
  const port = proxy?.port ?? backend;
  await waitDns(port, dir);
  const meter = proxy?.pid ? cpuMeter(proxy.pid) : null;
  meter?.take();
  const r = await perf(port, dir, secs);
  const cpu = meter?.take();
  const cpuS = cpu ? cpu.user + cpu.sys : 0;
  return {
    target: name,
    qps: Math.round(r.completed / secs),
    per_cpu_s: cpu && cpuS > 0 ? Math.round(r.completed / cpuS) : null,
    lost: r.lost,
    p99_ms: Number(r.p99.toFixed(2)),
  };
}

/** Runs the workload; null when dnsperf or dnsmasq is missing. */
export async function udpBench(secs: number): Promise<UdpResult | null> {
  if (!has("dnsperf") || !has("dnsmasq")) return null;
  const dir = Deno.makeTempDirSync({ prefix: "bal-bench-udp-" });
  const dns = dnsmasq(dir);
  try {
    await waitDns(dns.port, dir);
    const rows = [await measure("direct", null, dns.port, dir, secs)];
    const bal = startBal(dir, dns.port);
    let half: UdpResult["half_rate"] = null;
    try {
      const row = await measure("bal", bal, dns.port, dir, secs);
      rows.push(row);
      const r = await perf(bal.port, dir, secs, row.qps / 2);
      half = { qps: Math.round(row.qps / 2), sent: r.sent, lost: r.lost };
    } finally {
      await bal.stop();
    }
    if (has("nginx") && Deno.statSync(NGINX_STREAM).isFile) {
      const nginx = startNginx(dir, dns.port);
      try {
        rows.push(await measure("nginx", nginx, dns.port, dir, secs));
      } finally {
        await nginx.stop();
      }
    }
    return { rows, half_rate: half };
  } finally {
    await stop(dns.child);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** The result as the bench prints it. */
export function udpTable(r: UdpResult): string {
  const nginx = r.rows.find((x) => x.target === "nginx")?.per_cpu_s ?? null;
  return [
    "\nUDP request/reply (dnsperf -> proxy -> dnsmasq; the proxy on one core)",
    "| target | queries/s | queries per CPU-second | vs nginx | lost | p99 ms |",
    "| --- | --- | --- | --- | --- | --- |",
    ...r.rows.map((x) =>
      `| ${x.target} | ${x.qps} | ${x.per_cpu_s ?? "-"} | ${
        x.per_cpu_s && nginx ? (x.per_cpu_s / nginx).toFixed(2) : "-"
      } | ${x.lost} | ${x.p99_ms} |`
    ),
    r.half_rate
      ? `bal at half its maximum (${r.half_rate.qps}/s): ${r.half_rate.sent} sent, ${r.half_rate.lost} lost`
      : "",
  ].join("\n");
}

if (import.meta.main) {
  const at = Deno.args.indexOf("--secs");
  const secs = at >= 0 ? Number(Deno.args[at + 1]) : 5;
  const result = await udpBench(secs);
  console.log(result ? udpTable(result) : "dnsperf or dnsmasq is missing");
}
