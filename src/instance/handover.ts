/**
 * `bal upgrade`'s hand-over between two processes. The new bal asks the
 * running one (`handover` on its control socket) for what it serves with;
 * the running one connects to a socket the new one made
 * (`bal.upgrade.PID.sock`), sends every listening socket and its lock as
 * descriptors (SCM_RIGHTS), and answers with its health, admin states and
 * discovered backends. Once the new bal serves on those sockets it sends
 * `retire`: the old one moves its control socket aside
 * (`bal.draining.PID.sock`), stops accepting and drains. No listening
 * socket is closed on the way: both processes hold each one until the old
 * closes its copies, and clients queued in it are the new bal's to accept.
 *
 * @module
 */
import { BalError, describeError } from "../errors.ts";
import { writeAll } from "../net/stream.ts";
import {
  acceptPeer,
  closeFd,
  connectPackets,
  listenPackets,
  receiveWithFds,
  sendWithFds,
} from "../engine/linux/ffi_unix.ts";
import type { HealthState } from "../health/state.ts";
import type { BackendAdmin } from "../balance/admin_state.ts";
import type { Target } from "../discovery/expand.ts";
import type { StatePaths } from "./paths.ts";
import type { ListenerFd } from "../engine/listeners.ts";

/** What the running bal hands over besides descriptors. */
export interface HandoverState {
  pid: number;
  /** Upgrades before this one, since a cold start. */
  upgrades: number;
  health: [string, HealthState][];
  admin: [string, BackendAdmin][];
  discovered: [string, readonly Target[]][];
  /** Every address it listens on (services and admin), `host:port`. */
  held: string[];
}

/** One handed-over listening socket: a service's, on data plane `plane`. */
export interface HandedListener extends ListenerFd {
  plane: number;
}

/** Everything the new bal received. */
export interface Handover extends HandoverState {
  listeners: HandedListener[];
  lockFd: number;
}

/** Descriptors per message, below the kernel's limit of 253. */
const BATCH = 200;
/** Largest message: the descriptions of one batch. */
const MESSAGE_MAX = 64 * 1024;

/** What a message says of each descriptor it carries, in order. */
type Item = { kind: "lock" } | ({ kind: "listener" } & HandedListener);

const encoder = new TextEncoder();

/** The socket path the new bal with `pid` receives on. */
export function handoverSocket(paths: StatePaths, pid: number): string {
  return `${paths.dir}/bal.upgrade.${pid}.sock`;
}

/** The path an old bal's control socket moves to while it drains. */
export function drainingSocket(paths: StatePaths, pid: number): string {
  return `${paths.dir}/bal.draining.${pid}.sock`;
}

/**
 * The running side: sends `lockFd` and `listeners` to the new bal's
 * socket at `path`, in batches, each message naming what it carries.
 */
export function sendHandover(
  path: string,
  lockFd: number,
  listeners: readonly HandedListener[],
): void {
  const items: [Item, number][] = [
    [{ kind: "lock" }, lockFd],
    ...listeners.map((l): [Item, number] => [{ kind: "listener", ...l }, l.fd]),
  ];
  const fd = connectPackets(path, 2000);
  try {
    for (let i = 0; i < items.length; i += BATCH) {
      const batch = items.slice(i, i + BATCH);
      const text = encoder.encode(JSON.stringify(batch.map(([item]) => item)));
      if (text.byteLength > MESSAGE_MAX) throw new Error("hand-over message too large");
      sendWithFds(fd, text, batch.map(([, n]) => n));
    }
  } finally {
    closeFd(fd);
  }
}

/**
 * The new side: asks the bal answering at `paths.sock` to hand over, and
 * returns what it sent. Throws a BalError with its reason when it refuses
 * or does not answer within `timeoutMs`; then nothing received is kept.
 */
export async function takeHandover(paths: StatePaths, timeoutMs: number): Promise<Handover> {
  const path = handoverSocket(paths, Deno.pid);
  await Deno.remove(path).catch(() => {});
  const listening = listenPackets(path, timeoutMs);
  try {
    const reply = await ask(paths, { cmd: "handover", pid: Deno.pid, socket: path }, timeoutMs);
    if (typeof reply.error === "string") throw new BalError(refusalReason(reply.error));
    // The running bal connected and sent everything before it answered.
    const peer = acceptPeer(listening);
    try {
      return { ...(reply as unknown as HandoverState), ...receiveAll(peer) };
    } finally {
      closeFd(peer);
    }
  } finally {
    closeFd(listening);
    await Deno.remove(path).catch(() => {});
  }
}

/**
 * What the running bal's refusal means to the operator. A bal from before
 * upgrades existed does not know the command: it needs one cold restart.
 */
export function refusalReason(error: string): string {
  if (/^unknown cmd "handover"/.test(error)) {
    return `${PREDATES_UPGRADE}; restart it cold once (bal stop, then bal start -d), and upgrades work from then on`;
  }
  return error;
}

/** How a refusal from a bal without upgrades begins (`bal restart` then restarts cold). */
export const PREDATES_UPGRADE = "the running bal predates bal upgrade";

/** Reads every message until the sender closes: the lock and the listeners. */
function receiveAll(peer: number): { lockFd: number; listeners: HandedListener[] } {
  const buf = new Uint8Array(MESSAGE_MAX);
  const got: [Item, number][] = [];
  const extra: number[] = [];
  try {
    for (;;) {
      const { bytes, fds } = receiveWithFds(peer, buf);
      if (bytes === 0) break;
      const items = JSON.parse(new TextDecoder().decode(buf.subarray(0, bytes))) as Item[];
      if (items.length !== fds.length) {
        extra.push(...fds);
        throw new Error(`a message named ${items.length} sockets but carried ${fds.length}`);
      }
      items.forEach((item, i) => got.push([item, fds[i]]));
    }
    const lock = got.find(([item]) => item.kind === "lock");
    if (!lock) throw new Error("the running bal sent no lock");
    const listeners = got.flatMap(([item, fd]) =>
      item.kind === "listener" ? [{ ...item, fd, kind: undefined }] : []
    ).map(({ kind: _, ...l }) => l);
    return { lockFd: lock[1], listeners };
  } catch (err) {
    for (const fd of [...got.map(([, n]) => n), ...extra]) closeFd(fd);
    throw new BalError(`the hand-over failed: ${describeError(err)}`, 1, { cause: err });
  }
}

/**
 * One control request whose answer may be large (the health table); a
 * request of its own rather than control_socket's, to name the step that
 * failed.
 */
async function ask(
  paths: StatePaths,
  body: Record<string, unknown>,
  timeoutMs: number,
): Promise<Record<string, unknown>> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path: paths.sock });
  } catch (err) {
    throw new BalError(`cannot reach the running bal at ${paths.sock}: ${describeError(err)}`);
  }
  const timer = setTimeout(() => conn.close(), timeoutMs);
  try {
    await writeAll(conn, encoder.encode(JSON.stringify(body) + "\n"));
    const text = await new Response(conn.readable).text();
    return JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new BalError(
      `the running bal did not answer the hand-over within ${timeoutMs / 1000} s`,
      1,
      { cause: err },
    );
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // closed by the reader or the timer
    }
  }
}

/** Asks the running bal to retire now that this one serves; resolves to its live connections. */
export async function retire(paths: StatePaths, timeoutMs: number): Promise<number> {
  const reply = await ask(paths, { cmd: "retire", pid: Deno.pid }, timeoutMs);
  if (typeof reply.error === "string") throw new BalError(reply.error);
  return Number(reply.active ?? 0);
}
