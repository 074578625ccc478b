/**
 * TLS termination (issue 29): full TLS 1.3 handshakes per CPU-second, with
 * an ECDSA P-256 and an RSA 2048 certificate, and a bulk stream (512 MiB)
 * through the terminating proxy: its CPU per GiB and its rate, for bal (a
 * service with `tls:`), HAProxy (`ssl crt`, one thread) and nginx stream
 * (`ssl`, one worker). With `--probes`, also bare Deno proxies
 * (bench/tls_server.ts): `Deno.listenTls`, `node:tls` on Node's sockets,
 * bal's adapter alone, and `node:tls` on descriptors libc accepted: what
 * bal could be built on, and OpenSSL's libssl through FFI on libc's sockets
 * (bench/tls_openssl.ts). Each proxy runs on core 1, the clients (`openssl s_time`, a
 * Deno TLS client for bulk) and the backend on core 0; CPU is the proxy's
 * user and system time from /proc.
 *
 *   deno task bench --only tls      (part of every full run)
 *   deno run --allow-all bench/tls.ts [--secs 5] [--rounds 3] [--probes] [--stacks bal,haproxy]
 *
 * @module
 */
import { balStartArgv, cpuMeter, has, onCpu, waitPort } from "./proc.ts";
import { freePort } from "../tests/ports.ts";

const root = new URL("..", import.meta.url).pathname;
const CLIENTS = 4;
/**
 * Seconds of handshakes each proxy serves before it is measured: bal's
 * JavaScript is compiled in its first seconds under load, once in a
 * balancer's life. The rate in them is kept as its own column.
 */
const WARM_UP_SECS = 2;
let tmp = "";

const spawn = (argv: string[]) =>
  new Deno.Command(argv[0], { args: argv.slice(1), stdout: "piped", stderr: "piped" }).spawn();

async function stop(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGKILL");
  } catch { /* gone */ }
  await child.output().catch(() => {});
}

/** Runs openssl with `args`, failing loudly. */
async function openssl(args: string[]): Promise<void> {
  const r = await new Deno.Command("openssl", { args, stderr: "piped" }).output();
  if (!r.success) throw new Error(`openssl ${args[0]}: ${new TextDecoder().decode(r.stderr)}`);
}

/** The test CA the clients trust (rustls takes no self-signed leaf as its own CA). */
async function authority(): Promise<{ cert: string; key: string }> {
  const ca = { cert: `${tmp}/ca.crt`, key: `${tmp}/ca.key` };
  await openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    .concat(["-keyout", ca.key, "-out", ca.cert, "-days", "2", "-subj", "/CN=bench CA"]));
  return ca;
}

/** A certificate of `kind` for 127.0.0.1 signed by `ca`, its key, and both in one file (HAProxy's). */
async function certificate(kind: "ecdsa" | "rsa", ca: { cert: string; key: string }) {
  const [cert, key, both, csr, ext] = ["crt", "key", "pem", "csr", "ext"].map((x) =>
    `${tmp}/${kind}.${x}`
  );
  const alg = kind === "ecdsa"
    ? ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    : ["-newkey", "rsa:2048"];
  await openssl(["req", "-new", ...alg, "-nodes", "-keyout", key, "-out", csr]
    .concat(["-subj", "/CN=bench.test"]));
  Deno.writeTextFileSync(ext, "subjectAltName=IP:127.0.0.1\n");
  await openssl(["x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial"]
    .concat(["-days", "2", "-out", cert, "-extfile", ext]));
  Deno.writeTextFileSync(both, Deno.readTextFileSync(cert) + Deno.readTextFileSync(key));
  return { cert, key, both, ca: ca.cert };
}

type Cert = Awaited<ReturnType<typeof certificate>>;
type Start = (port: number, c: Cert, backend: number) => Deno.ChildProcess;

const targets: Record<string, Start> = {
  bal: (port, c, backend) => {
    const home = Deno.makeTempDirSync({ dir: tmp, prefix: "bal-" });
    Deno.writeTextFileSync(
      `${home}/bal.yaml`,
      `bind_address: 127.0.0.1\nport: ${port}\nlog_level: warn\ntls: {certificates: [{cert_file: ${c.cert}, key_file: ${c.key}}]}\nbackends: ["127.0.0.1:${backend}"]\n`,
    );
    return new Deno.Command(balStartArgv(`${home}/bal.yaml`, 1)[0], {
      args: balStartArgv(`${home}/bal.yaml`, 1).slice(1),
      env: { BAL_HOME: home },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  },
  haproxy: (port, c, backend) => {
    const cfg = `${tmp}/haproxy-${port}.cfg`;
    Deno.writeTextFileSync(
      cfg,
      `global\n  nbthread 1\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nlisten p\n  bind 127.0.0.1:${port} ssl crt ${c.both}\n  server s 127.0.0.1:${backend}\n`,
    );
    return spawn(onCpu(1, ["haproxy", "-db", "-f", cfg]));
  },
  nginx: (port, c, backend) => {
    const dir = Deno.makeTempDirSync({ dir: tmp, prefix: "nginx-" });
    Deno.writeTextFileSync(
      `${dir}/tls.conf`,
      `load_module /usr/lib/nginx/modules/ngx_stream_module.so;\nworker_processes 1;\ndaemon off;\nmaster_process off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log crit;\nevents { worker_connections 4000; }\nstream { server { listen 127.0.0.1:${port} ssl; ssl_certificate ${c.cert}; ssl_certificate_key ${c.key}; proxy_pass 127.0.0.1:${backend}; } }\n`,
    );
    return spawn(onCpu(1, ["nginx", "-p", dir, "-c", `${dir}/tls.conf`]));
  },
};

/** The bare stacks bal could terminate with (`--probes`). */
const probes: Record<string, Start> = {
  "Deno.listenTls probe": (port, c, backend) => denoServer("deno", port, c, backend),
  "node:tls probe": (port, c, backend) => denoServer("node", port, c, backend),
  "bal's adapter probe": (port, c, backend) => denoServer("adapter", port, c, backend),
  "libc accept + node:tls probe": (port, c, backend) => denoServer("fd", port, c, backend),
  "libc accept + node:tls + node relay probe": (port, c, backend) =>
    denoServer("fd", port, c, backend, "node-relay"),
  "libssl through FFI probe": (port, c, backend) =>
    spawn(onCpu(1, [
      Deno.execPath(),
      "run",
      "--allow-read",
      "--allow-ffi",
      `${root}bench/tls_openssl.ts`,
      String(port),
      c.cert,
      c.key,
      String(backend),
    ])),
};

function denoServer(stack: string, port: number, c: Cert, backend: number, extra = "") {
  return spawn(onCpu(1, [
    Deno.execPath(),
    "run",
    "--allow-net",
    "--allow-read",
    "--allow-ffi",
    `${root}bench/tls_server.ts`,
    stack,
    String(port),
    c.cert,
    c.key,
    String(backend),
    extra,
  ]));
}

/** Full handshakes the proxy on `port` completed per CPU-second of its own, with CLIENTS s_time loops. */
async function handshakes(port: number, pid: number, secs: number): Promise<number> {
  const cpu = cpuMeter(pid);
  const clients = Array.from({ length: CLIENTS }, () =>
    new Deno.Command("sh", {
      args: onCpu(0, [
        "openssl",
        "s_time",
        "-connect",
        `127.0.0.1:${port}`,
        "-new",
        "-time",
        String(secs),
      ]).slice(1),
      stdout: "piped",
      stderr: "null",
    }).output());
  const outs = await Promise.all(clients);
  const used = cpu.take();
  const done = outs.reduce((n, o) => {
    const m = /(\d+) connections in [\d.]+ real seconds/.exec(new TextDecoder().decode(o.stdout));
    return n + Number(m?.[1] ?? 0);
  }, 0);
  return done / (used.user + used.sys);
}

/** CPU seconds of the proxy per GiB of one TLS stream through it (a Deno client writes 512 MiB), and MB/s. */
async function bulk(
  port: number,
  pid: number,
  caFile: string,
): Promise<{ cpuPerGiB: number; mbPerS: number }> {
  const total = 512 * 1024 * 1024;
  const client = new Deno.Command("sh", {
    args: onCpu(0, [
      Deno.execPath(),
      "eval",
      `const ca = Deno.readTextFileSync(${JSON.stringify(caFile)});
const c = await Deno.connectTls({ hostname: "127.0.0.1", port: ${port}, caCerts: [ca] });
const chunk = new Uint8Array(256 * 1024);
for (let sent = 0; sent < ${total}; sent += chunk.length) for (let o = 0; o < chunk.length;) o += await c.write(chunk.subarray(o));
await c.closeWrite(); c.close();`,
    ]).slice(1),
    stdout: "null",
    stderr: "piped",
  });
  const cpu = cpuMeter(pid);
  const begun = performance.now();
  const r = await client.output();
  if (!r.success) throw new Error(new TextDecoder().decode(r.stderr).slice(0, 300));
  const used = cpu.take();
  const secs = (performance.now() - begun) / 1000;
  return { cpuPerGiB: (used.user + used.sys) / (total / 2 ** 30), mbPerS: total / 1e6 / secs };
}

const median = (xs: number[]) => xs.toSorted((a, b) => a - b)[Math.floor(xs.length / 2)];

/** One stack's medians for one key type. */
export interface TlsRow {
  key: "ecdsa" | "rsa";
  stack: string;
  handshakes_per_cpu_s: number;
  /** Handshakes per CPU-second in the warm-up, before those measured (bal's JIT compiles then). */
  warmup_per_cpu_s: number;
  /** Bulk, measured with the ECDSA key only; null for RSA. */
  cpu_s_per_gib: number | null;
  mb_per_s: number | null;
}

/** Measures every stack (HAProxy and nginx when installed), `rounds` rounds each. */
export async function tlsBench(
  secs: number,
  rounds: number,
  withProbes = false,
  only: string[] | null = null,
): Promise<TlsRow[]> {
  tmp = Deno.makeTempDirSync({ prefix: "bal-tls-bench-" });
  const sinkPort = freePort();
  const sink = spawn(onCpu(0, [
    Deno.execPath(),
    "run",
    "--allow-net",
    `${root}bench/backend.ts`,
    "--sink",
    String(sinkPort),
  ]));
  await waitPort(sinkPort);
  try {
    const rows: TlsRow[] = [];
    const ca = await authority();
    const stacks = withProbes ? { ...targets, ...probes } : targets;
    for (const key of ["ecdsa", "rsa"] as const) {
      const c = await certificate(key, ca);
      for (const [stack, start] of Object.entries(stacks)) {
        if ((stack === "haproxy" || stack === "nginx") && !has(stack)) continue;
        if (only && !only.includes(stack)) continue;
        rows.push(await measure(key, stack, start, c, sinkPort, secs, rounds));
        console.log(tlsTable([rows.at(-1)!]).split("\n").at(-1));
      }
    }
    return rows;
  } finally {
    await stop(sink);
    Deno.removeSync(tmp, { recursive: true });
  }
}

async function measure(
  key: "ecdsa" | "rsa",
  stack: string,
  start: Start,
  c: Cert,
  sinkPort: number,
  secs: number,
  rounds: number,
): Promise<TlsRow> {
  const rates: number[] = [];
  const warmups: number[] = [];
  const bulks: { cpuPerGiB: number; mbPerS: number }[] = [];
  for (let round = 0; round < rounds; round++) {
    const port = freePort();
    const child = start(port, c, sinkPort);
    try {
      await waitPort(port);
      warmups.push(await handshakes(port, child.pid, WARM_UP_SECS));
      rates.push(await handshakes(port, child.pid, secs));
      if (key === "ecdsa") bulks.push(await bulk(port, child.pid, c.ca));
    } finally {
      await stop(child);
    }
  }
  return {
    key,
    stack,
    handshakes_per_cpu_s: Math.round(median(rates)),
    warmup_per_cpu_s: Math.round(median(warmups)),
    cpu_s_per_gib: bulks.length ? Number(median(bulks.map((b) => b.cpuPerGiB)).toFixed(2)) : null,
    mb_per_s: bulks.length ? Math.round(median(bulks.map((b) => b.mbPerS))) : null,
  };
}

/** The rows as a Markdown table, with each stack's handshakes as a ratio to HAProxy's. */
export function tlsTable(rows: TlsRow[]): string {
  const haproxy = (key: string) => rows.find((r) => r.key === key && r.stack === "haproxy");
  return [
    `| key | stack | handshakes per CPU-second | vs HAProxy | first ${WARM_UP_SECS} s | CPU s per GiB (bulk) | bulk MB/s |`,
    "| --- | --- | --- | --- | --- | --- | --- |",
    ...rows.map((r) => {
      const h = haproxy(r.key);
      const ratio = h ? (r.handshakes_per_cpu_s / h.handshakes_per_cpu_s).toFixed(2) : "-";
      return `| ${r.key} | ${r.stack} | ${r.handshakes_per_cpu_s} | ${ratio} | ${r.warmup_per_cpu_s} | ${
        r.cpu_s_per_gib ?? "-"
      } | ${r.mb_per_s ?? "-"} |`;
    }),
  ].join("\n");
}

if (import.meta.main) {
  const flag = (name: string, fallback: number) => {
    const i = Deno.args.indexOf(`--${name}`);
    return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
  };
  const stacks = Deno.args.indexOf("--stacks");
  const rows = await tlsBench(
    flag("secs", 5),
    flag("rounds", 3),
    Deno.args.includes("--probes"),
    stacks >= 0 ? Deno.args[stacks + 1].split(",") : null,
  );
  console.log(`\n${tlsTable(rows)}`);
}
