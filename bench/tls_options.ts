/**
 * What terminating TLS costs on each stack bal could use (issue 29's
 * "choose by measuring"): full TLS 1.3 handshakes per CPU-second, with an
 * ECDSA P-256 and an RSA 2048 certificate, and the CPU per GiB of a bulk
 * stream through the terminating proxy, for HAProxy (`ssl crt`, one
 * thread), nginx stream (`ssl`, one worker), Deno's own TLS
 * (`Deno.listenTls`) and `node:tls` in Deno (bench/tls_server.ts). Each
 * proxy runs on core 1, the clients (`openssl s_time`, a Deno TLS client
 * for bulk) and the backend on core 0; CPU is the proxy's user and system
 * time from /proc.
 *
 *   deno run --allow-all bench/tls_options.ts [--secs 5] [--rounds 3]
 *
 * @module
 */
import { cpuMeter, has, onCpu, waitPort } from "./proc.ts";
import { freePort } from "../tests/ports.ts";

const root = new URL("..", import.meta.url).pathname;
const flag = (name: string, fallback: number) => {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
};
const secs = flag("secs", 5);
const rounds = flag("rounds", 3);
const CLIENTS = 4;
const tmp = Deno.makeTempDirSync({ prefix: "bal-tls-bench-" });

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
  "deno listenTls": (port, c, backend) => denoServer("deno", port, c, backend),
  "node:tls": (port, c, backend) => denoServer("node", port, c, backend),
};

function denoServer(stack: string, port: number, c: Cert, backend: number) {
  return spawn(onCpu(1, [
    Deno.execPath(),
    "run",
    "--allow-net",
    "--allow-read",
    `${root}bench/tls_server.ts`,
    stack,
    String(port),
    c.cert,
    c.key,
    String(backend),
  ]));
}

/** Full handshakes the proxy on `port` completed per CPU-second of its own, with CLIENTS s_time loops. */
async function handshakes(port: number, pid: number): Promise<number> {
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

/** CPU seconds of the proxy per GiB of one TLS stream through it (a Deno client writes 512 MiB). */
async function bulk(port: number, pid: number, caFile: string): Promise<number> {
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
  const r = await client.output();
  if (!r.success) throw new Error(new TextDecoder().decode(r.stderr).slice(0, 300));
  const used = cpu.take();
  return (used.user + used.sys) / (total / 2 ** 30);
}

const median = (xs: number[]) => xs.toSorted((a, b) => a - b)[Math.floor(xs.length / 2)];

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
  const rows: string[] = [];
  const ca = await authority();
  for (const kind of ["ecdsa", "rsa"] as const) {
    const c = await certificate(kind, ca);
    for (const [name, start] of Object.entries(targets)) {
      if ((name === "haproxy" || name === "nginx") && !has(name)) continue;
      const rates: number[] = [];
      const perGiB: number[] = [];
      for (let round = 0; round < rounds; round++) {
        const port = freePort();
        const child = start(port, c, sinkPort);
        try {
          await waitPort(port);
          rates.push(await handshakes(port, child.pid));
          if (kind === "ecdsa") perGiB.push(await bulk(port, child.pid, c.ca));
        } finally {
          await stop(child);
        }
      }
      rows.push(
        `| ${kind} | ${name} | ${Math.round(median(rates))} | ${
          perGiB.length ? median(perGiB).toFixed(2) : "-"
        } |`,
      );
      console.log(rows.at(-1));
    }
  }
  console.log(
    `\n| key | stack | handshakes per CPU-second | CPU s per GiB (bulk) |\n| --- | --- | --- | --- |\n${
      rows.join("\n")
    }`,
  );
} finally {
  await stop(sink);
  Deno.removeSync(tmp, { recursive: true });
}
