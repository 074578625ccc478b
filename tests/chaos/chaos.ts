/**
 * Shared pieces of the chaos suite (`deno task test:chaos`): the profile
 * (CHAOS_PROFILE=short for CI, full otherwise), a client that streams
 * random bytes through bal and checks every byte that comes back, process
 * memory, and the figures each scenario records for docs/reliability.md.
 *
 * @module
 */
import { closeQuietly, ROOT, tempHome } from "../helpers.ts";

/** `short` (CI, about two minutes) or `full` (the figures in docs/reliability.md). */
export const PROFILE = Deno.env.get("CHAOS_PROFILE") === "short" ? "short" : "full";

/** The short or the full profile's value. */
export function pick<T>(short: T, full: T): T {
  return PROFILE === "short" ? short : full;
}

const RESULTS = PROFILE === "full"
  ? `${ROOT}docs/reliability-results.json`
  : `${tempHome()}/results.json`;

/** Records one scenario's figures (merged into the results file by name). */
export function record(scenario: string, figures: Record<string, unknown>): void {
  let all: Record<string, unknown> = {};
  try {
    all = JSON.parse(Deno.readTextFileSync(RESULTS));
  } catch {
    // first scenario of the run
  }
  all[scenario] = { ...figures, profile: PROFILE, at: new Date().toISOString() };
  Deno.writeTextFileSync(RESULTS, JSON.stringify(all, null, 2) + "\n");
}

/** Resident memory of `pid` in KiB. */
export function rssKiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

/** `n` random bytes (getRandomValues fills at most 64 KiB per call). */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

/** A random integer in [min, max]. */
export function between(min: number, max: number): number {
  return min + Math.floor(Math.random() * (max - min + 1));
}

/** How one streamed connection went. */
export interface StreamResult {
  sent: number;
  received: number;
  /** Every byte came back, in order, and nothing more. */
  intact: boolean;
  /** The error that ended it early (a reset, a refused connect), or null. */
  error: string | null;
}

/** How to stream. */
export interface StreamOptions {
  /** After the last byte, half-close and read until the echo's EOF; else read back exactly. */
  halfClose?: boolean;
  /** Bytes per write. */
  chunk?: number;
  /** Pause between writes, to keep the connection open longer. */
  pauseMs?: number;
  /** How to open the connection (a TLS client, say); default: TCP to 127.0.0.1:`port`. */
  connect?: () => Promise<Deno.Conn>;
}

/**
 * Connects to bal at `port` (in front of echo backends), sends `data` and
 * checks that exactly the same bytes come back.
 */
export async function streamEcho(
  port: number,
  data: Uint8Array,
  options: StreamOptions = {},
): Promise<StreamResult> {
  const { halfClose = false, chunk = 16 * 1024, pauseMs = 0 } = options;
  const open = options.connect ?? (() => Deno.connect({ hostname: "127.0.0.1", port }));
  let conn: Deno.Conn;
  try {
    conn = await open();
  } catch (err) {
    return { sent: 0, received: 0, intact: false, error: String(err) };
  }
  let sent = 0;
  let received = 0;
  let intact = true;
  let error: string | null = null;
  const writer = (async () => {
    while (sent < data.length) {
      const end = Math.min(data.length, sent + chunk);
      let off = sent;
      while (off < end) off += await conn.write(data.subarray(off, end));
      sent = end;
      if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
    }
    if (halfClose) await conn.closeWrite();
  })();
  const reader = (async () => {
    const buf = new Uint8Array(64 * 1024);
    while (halfClose || received < data.length) {
      const n = await conn.read(buf);
      if (n === null) break;
      for (let i = 0; i < n; i++) {
        if (buf[i] !== data[received + i]) {
          intact = false;
          break;
        }
      }
      received += n;
      if (!intact || received > data.length) break;
    }
  })();
  try {
    await Promise.all([writer, reader]);
  } catch (err) {
    error = String(err);
  } finally {
    closeQuietly(conn);
  }
  return { sent, received, intact: intact && received === data.length && error === null, error };
}

/** A promise that resolves after `ms`. */
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const TCP_STATES = [
  "",
  "ESTABLISHED",
  "SYN_SENT",
  "SYN_RECV",
  "FIN_WAIT1",
  "FIN_WAIT2",
  "TIME_WAIT",
  "CLOSE",
  "CLOSE_WAIT",
  "LAST_ACK",
  "LISTEN",
  "CLOSING",
];

/** What became of the sockets a listener on `port` accepted (from /proc/net/tcp). */
export interface AcceptedSockets {
  /** Both ends still established: the client has not closed. */
  open: number;
  /** The client closed, and the accepting process has not closed its end yet. */
  closeWait: number;
  /**
   * Established, yet the client's end of that address pair is gone or in
   * TIME_WAIT: a second socket the kernel made for a connection that has
   * already ended (SYN cookies under accept-queue overflow). Nothing will
   * ever arrive on it; only a timeout ends it.
   */
  orphans: number;
}

/** Classifies the IPv4 sockets accepted on `port` by what their client's end says. */
export async function acceptedSockets(port: number): Promise<AcceptedSockets> {
  const byPair = new Map<string, string>();
  const accepted: { local: string; remote: string; state: string }[] = [];
  for (const line of (await Deno.readTextFile("/proc/net/tcp")).split("\n").slice(1)) {
    const [, local, remote, st] = line.trim().split(/\s+/);
    if (!st) continue;
    const state = TCP_STATES[parseInt(st, 16)] ?? st;
    byPair.set(`${local}>${remote}`, state);
    if (parseInt(local.split(":")[1], 16) === port && state !== "LISTEN") {
      accepted.push({ local, remote, state });
    }
  }
  const out = { open: 0, closeWait: 0, orphans: 0 };
  for (const s of accepted) {
    const client = byPair.get(`${s.remote}>${s.local}`);
    if (s.state === "CLOSE_WAIT") out.closeWait++;
    else if (s.state !== "ESTABLISHED") continue;
    else if (client === undefined || client === "TIME_WAIT") out.orphans++;
    else out.open++;
  }
  return out;
}
