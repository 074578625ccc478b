/**
 * Test helpers: run the real CLI through `deno task bal` with a temporary
 * BAL_HOME, and real backends and clients on 127.0.0.1.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { freePort } from "./ports.ts";
export { freePort };

export const ROOT = new URL("..", import.meta.url).pathname;
const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Temporary directories this test process made: removed when it exits. */
const tempDirs = new Set<string>();
globalThis.addEventListener("unload", () => {
  for (const dir of tempDirs) {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // Already gone, or a mount a test could not undo: nothing more to do here.
    }
  }
});

/** A fresh state directory, removed when the test process exits. */
export function tempHome(): string {
  const dir = Deno.makeTempDirSync({ prefix: "bal-test-" });
  tempDirs.add(dir);
  return dir;
}

/** Whether something listens on `port` of every interface (a fixed port a test needs). */
export function portTaken(port: number): boolean {
  try {
    Deno.listen({ hostname: "0.0.0.0", port }).close();
    return false;
  } catch {
    return true;
  }
}

/** How long a test read may wait before it fails with a name instead of hanging. */
const READ_TIMEOUT_MS = 30_000;

/**
 * Runs `read` against a deadline: past it the socket is closed (ending the
 * read) and the test fails saying what it waited for, so a regression in
 * half-close is a named failure, not a two-minute hang.
 */
async function deadline<T>(conn: Deno.Conn, what: string, read: () => Promise<T>): Promise<T> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    closeQuietly(conn);
  }, READ_TIMEOUT_MS);
  try {
    return await read();
  } catch (err) {
    if (timedOut) throw new Error(`${what}: nothing more came within ${READ_TIMEOUT_MS / 1000} s`);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** The output of a finished CLI run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end and returns its exit code and decoded output. */
export async function runCommand(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; clearEnv?: boolean } = {},
): Promise<CliResult> {
  const out = await new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...options,
  })
    .output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** Runs `deno task bal ARGS` with BAL_HOME=home and waits for it. */
export function bal(home: string, ...args: string[]): Promise<CliResult> {
  return runCommand(Deno.execPath(), ["task", "-q", "bal", ...args], {
    cwd: ROOT,
    env: { BAL_HOME: home, NO_COLOR: "1" },
  });
}

/** Backends and settings for a test config. */
export interface ConfigSpec {
  port: number;
  backends: (number | string)[];
  runtime?: Record<string, number>;
  extra?: string;
}

/** Writes a config file into `home` and returns its path. */
export function writeConfig(home: string, spec: ConfigSpec, name = "test.yaml"): string {
  const lines = [
    `port: ${spec.port}`,
    "bind_address: 127.0.0.1",
    "log_level: debug",
    "backends:",
    ...spec.backends.map((b) =>
      typeof b === "number" ? `  - {host: 127.0.0.1, port: ${b}}` : `  - ${b}`
    ),
    "runtime:",
    ...Object.entries({
      health_check_interval_ms: 200,
      health_check_timeout_ms: 150,
      backend_connect_timeout_ms: 300,
      shutdown_drain_timeout_ms: 5000,
      ...spec.runtime,
    }).map(([k, v]) => `  ${k}: ${v}`),
    spec.extra ?? "",
  ];
  const path = `${home}/${name}`;
  Deno.writeTextFileSync(path, lines.join("\n") + "\n");
  return path;
}

/** The backlog of each socket listening on `port` (`ss` shows it as Send-Q), sorted. */
export async function listenBacklogs(port: number): Promise<number[]> {
  const { stdout } = await runCommand("ss", ["-Hltn", `sport = :${port}`]);
  return stdout.trim().split("\n").filter((l) => l)
    .map((l) => Number(l.trim().split(/\s+/)[2])).sort((a, b) => a - b);
}

/** Polls `check` every 25 ms until it returns a value other than undefined/false. */
type Maybe<T> = T | undefined | null | false;

export async function waitFor<T>(
  what: string,
  check: () => Maybe<T> | Promise<Maybe<T>>,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false && v !== null) return v as T;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Waits until `rounds` more health checks of `address` have run (its
 * consecutive successes or failures, whichever is growing, went up by that
 * much): the sign that time passed for bal, rather than a fixed sleep.
 */
export async function checkRounds(home: string, address: string, rounds: number): Promise<void> {
  const count = async () => {
    const r = await bal(home, "status", "--json");
    const b = JSON.parse(r.stdout).backends.find((x: { address: string }) => x.address === address);
    return b.consecutive_successes + b.consecutive_failures;
  };
  const start = await count();
  await waitFor(
    `${rounds} more checks of ${address}`,
    async () => (await count()) >= start + rounds,
  );
}

/** Waits until `bal status` shows `n` active connections in all. */
export async function waitActive(home: string, n: number): Promise<void> {
  await waitFor(`${n} active connections`, async () => {
    const r = await bal(home, "status", "--json");
    return JSON.parse(r.stdout).active_connections === n;
  });
}

/** Reads the pid file, or null. */
export function readPid(home: string): number | null {
  try {
    return Number(Deno.readTextFileSync(`${home}/bal.pid`).trim());
  } catch {
    return null;
  }
}

/** Whether a process is alive and not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^Z|^X/.test(stat.slice(stat.lastIndexOf(")") + 2));
  } catch {
    return false;
  }
}

/** bal running as a daemon for a test; `stop()` ends it whatever happened. */
export interface Daemon {
  home: string;
  pid: number;
  port: number;
  /** What `bal start -d` printed. */
  said: string;
  /** `bal stop`, falling back to SIGKILL so no process outlives the test. */
  stop(): Promise<CliResult>;
  /** Parsed lines of bal.log. */
  log(): Record<string, unknown>[];
}

/** Daemons this test process started: killed at exit, should a test die before its cleanup. */
const started = new Set<number>();
function killStarted(): void {
  for (const pid of started) if (alive(pid)) Deno.kill(pid, "SIGKILL");
}
globalThis.addEventListener("unload", killStarted);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => {
    killStarted();
    Deno.exit(130);
  });
}

/**
 * Starts `bal start -d -c config` and returns once it listens; with
 * `fdLimit`, under `ulimit -n fdLimit` (the daemon inherits it).
 */
export async function startDaemon(
  home: string,
  config: string,
  port: number,
  options: { fdLimit?: number } = {},
): Promise<Daemon> {
  const r = options.fdLimit === undefined
    ? await bal(home, "start", "-d", "-c", config)
    : await runCommand("sh", [
      "-c",
      `ulimit -n ${options.fdLimit}; exec "${Deno.execPath()}" task -q bal start -d -c "${config}"`,
    ], { cwd: ROOT, env: { BAL_HOME: home } });
  if (r.code !== 0) throw new Error(`bal start -d failed (${r.code}): ${r.stderr}${r.stdout}`);
  const pid = readPid(home)!;
  started.add(pid);
  return {
    home,
    pid,
    port,
    said: r.stdout,
    async stop() {
      const result = await bal(home, "stop");
      if (alive(pid)) Deno.kill(pid, "SIGKILL");
      return result;
    },
    log: () => readLog(home),
  };
}

/** A daemon started by {@link startBal}, with its config file. */
export interface Started extends Daemon {
  config: string;
}

/**
 * A fresh state directory, a free port, a config for `spec` written there,
 * and bal started on it as a daemon.
 */
export async function startBal(
  spec: Omit<ConfigSpec, "port">,
  options: { fdLimit?: number } = {},
): Promise<Started> {
  const home = tempHome();
  const port = freePort();
  const config = writeConfig(home, { ...spec, port });
  return { ...(await startDaemon(home, config, port, options)), config };
}

/** Parsed JSON lines of `bal.log`. */
export function readLog(home: string): Record<string, unknown>[] {
  try {
    return Deno.readTextFileSync(`${home}/bal.log`).split("\n").filter((l) => l).map((l) =>
      JSON.parse(l)
    );
  } catch {
    return [];
  }
}

/** A backend for tests, listening on 127.0.0.1. */
export interface Backend {
  port: number;
  /** Connections accepted so far. */
  accepted: number;
  close(): Promise<void>;
}

/** Starts a TCP server that runs `handler` for each connection. */
export function serveTcp(
  handler: (conn: Deno.TcpConn) => Promise<void>,
  port = 0,
  hostname = "127.0.0.1",
): Backend {
  const listener = Deno.listen({ hostname, port });
  const conns = new Set<Deno.TcpConn>();
  const tasks = new Set<Promise<void>>();
  const backend: Backend = {
    port: (listener.addr as Deno.NetAddr).port,
    accepted: 0,
    async close() {
      listener.close();
      for (const c of conns) closeQuietly(c);
      await loop;
      await Promise.allSettled(tasks);
    },
  };
  const loop = (async () => {
    for await (const conn of listener) {
      backend.accepted++;
      conns.add(conn);
      const task = handler(conn).catch(() => {}).finally(() => {
        closeQuietly(conn);
        conns.delete(conn);
        tasks.delete(task);
      });
      tasks.add(task);
    }
  })().catch(() => {});
  return backend;
}

/** Echoes everything back, and half-closes when the client does. */
export function echoBackend(port = 0): Backend {
  return serveTcp(async (conn) => {
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      await writeAll(conn, buf.subarray(0, n));
    }
    await conn.closeWrite();
  }, port);
}

/** Answers every connection with `name` and closes it, after reading nothing. */
export function nameBackend(name: string, port = 0, hostname = "127.0.0.1"): Backend {
  return serveTcp(
    async (conn) => {
      await writeAll(conn, encoder.encode(name));
    },
    port,
    hostname,
  );
}

/** Writes all of `data`. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** Reads until EOF, failing after {@link READ_TIMEOUT_MS} without the end. */
export function readAll(conn: Deno.Conn): Promise<Uint8Array> {
  return deadline(conn, "waiting for the end of the stream", () => readToEnd(conn));
}

async function readToEnd(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
  }
  const all = new Uint8Array(chunks.reduce((s, c) => s + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  return all;
}

/** Reads exactly `n` bytes (or fewer at EOF), failing after {@link READ_TIMEOUT_MS}. */
export function readN(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  return deadline(conn, `waiting for ${n} bytes`, async () => {
    const out = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const got = await conn.read(out.subarray(off));
      if (got === null) break;
      off += got;
    }
    return out.subarray(0, off);
  });
}

/** Opens a connection through bal to an echo backend and proves it works both ways. */
export async function echoing(port: number, tag = "ok"): Promise<Deno.TcpConn> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(c, text(tag));
  const back = str(await readN(c, tag.length));
  if (back !== tag) throw new Error(`echo through port ${port} returned "${back}", not "${tag}"`);
  return c;
}

/** Connects through bal, reads what a name backend says, and closes. */
export async function askName(port: number): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    return decoder.decode(await readAll(conn));
  } finally {
    closeQuietly(conn);
  }
}

export function closeQuietly(conn: Deno.Conn | Deno.Listener): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

export const text = (s: string) => encoder.encode(s);
export const str = (b: Uint8Array) => decoder.decode(b);

/** Resolves once something accepts connections on 127.0.0.1:`port` (a peer the test started). */
export function waitListening(what: string, port: number): Promise<boolean> {
  return waitFor(`${what} to listen`, async () => {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return true;
    } catch {
      return false;
    }
  });
}

/** A page's DOM after its scripts ran, as headless Chromium renders it. */
export async function dom(url: string, budgetMs = 3000): Promise<string> {
  const r = await runCommand("chromium", [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    `--virtual-time-budget=${budgetMs}`,
    "--dump-dom",
    url,
  ]);
  if (r.code !== 0) throw new Error(`chromium failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/**
 * True when a test needs `tool` and may not run without it: outside CI a
 * missing tool makes the test show as ignored; in CI (`CI` set) it is required.
 */
export function missingTool(tool: string): boolean {
  if (Deno.env.get("CI")) return false;
  const which = new Deno.Command("sh", {
    args: ["-c", `command -v ${tool}`],
    stdout: "null",
    stderr: "null",
  });
  return !which.outputSync().success;
}

/**
 * Connects to `host:port` from the local address `local` (any 127/8 address
 * is this machine's loopback, so tests can be different clients), sends
 * `send` if given, and resolves to all it got once the connection closes
 * ("" when refused). Deno.connect cannot choose its local address; node:net can.
 */
export async function talkFrom(
  host: string,
  port: number,
  local: string,
  send?: Uint8Array | string,
): Promise<string> {
  const net = await import("node:net");
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, localAddress: local });
    let got = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${host}:${port} from ${local}: not closed within 10 s`));
    }, 10_000);
    if (send !== undefined) socket.on("connect", () => socket.write(send));
    socket.on("data", (d: Uint8Array) => got += decoder.decode(d));
    socket.on("error", () => {}); // a refused client may see a reset; the close follows
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(got);
    });
  });
}
