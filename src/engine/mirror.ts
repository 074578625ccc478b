/**
 * A mirrored connection's copy to its service's shadow backend (`mirror:`):
 * every byte the client sends is queued here and written to the mirror,
 * whose answers are read and thrown away. The client's own relay never
 * waits for it: the queue is bounded by `buffer_bytes`, and a mirror that
 * falls that far behind, cannot be reached or fails is closed and counted
 * as dropped by cause, while the real connection goes on.
 *
 * Every engine uses this one: the copy goes through Deno's sockets, as it
 * is off the client's path and the mirrored share is the operator's to
 * choose (its cost is in `deno task bench --only features`).
 *
 * @module
 */
import type { Mirror } from "../config/schema.ts";
import { dial } from "../net/dial.ts";
import { closeQuietly, writeAll } from "../net/stream.ts";
import type { ServiceCounters } from "../stats/counters.ts";

/** Why a mirror's copy was dropped. */
export type MirrorDrop = "connect" | "buffer_full" | "error";

/** What a session holds of its copy. */
export interface MirrorLink {
  /** Queues bytes the client sent (copied: the caller may reuse its buffer). */
  copy(bytes: Uint8Array): void;
  /** The client's stream ended: passed on to the mirror once the queue is sent. */
  end(): void;
  /** The session is over: what is queued is still sent, then the copy closes. */
  release(): void;
}

interface Copy {
  readonly target: Mirror;
  readonly counters: ServiceCounters;
  conn: Deno.TcpConn | null;
  queue: Uint8Array[];
  queued: number;
  writing: boolean;
  ended: boolean;
  shut: boolean;
  dead: boolean;
  linger: ReturnType<typeof setTimeout> | null;
}

/** How long a released copy may take to finish before it is closed regardless. */
export const MIRROR_LINGER_MS = 10_000;

/**
 * Opens a copy of one client connection to `target`; `header` (a PROXY
 * header) goes first. Counted on its service's `counters`.
 */
export function openMirror(
  target: Mirror,
  header: Uint8Array | null,
  counters: ServiceCounters,
  connectMs: number,
): MirrorLink {
  const c: Copy = {
    target,
    counters,
    conn: null,
    queue: header ? [header] : [],
    queued: header?.length ?? 0,
    writing: false,
    ended: false,
    shut: false,
    dead: false,
    linger: null,
  };
  counters.mirrored++;
  dial(target.host, target.port, connectMs).then((conn) => {
    if (c.dead) return closeQuietly(conn);
    c.conn = conn;
    discardAnswers(c, conn);
    send(c);
  }, () => drop(c, "connect"));
  return {
    copy: (bytes) => queue(c, bytes),
    end() {
      c.ended = true;
      send(c);
    },
    release() {
      c.ended = true;
      send(c);
      if (c.dead) return;
      const linger = setTimeout(() => finish(c), MIRROR_LINGER_MS);
      Deno.unrefTimer(linger);
      c.linger = linger;
    },
  };
}

function queue(c: Copy, bytes: Uint8Array): void {
  if (c.dead || bytes.length === 0) return;
  if (c.queued + bytes.length > c.target.buffer_bytes) return drop(c, "buffer_full");
  c.queue.push(bytes.slice());
  c.queued += bytes.length;
  send(c);
}

/** Writes the queue out, one write at a time; once the client's stream ended and all is sent, half-closes. */
async function send(c: Copy): Promise<void> {
  const conn = c.conn;
  if (!conn || c.writing || c.dead) return;
  c.writing = true;
  try {
    while (c.queue.length > 0 && !c.dead) {
      const chunk = c.queue[0];
      await writeAll(conn, chunk);
      c.queue.shift();
      c.queued -= chunk.length;
      c.counters.mirror_bytes += chunk.length;
    }
    if (c.ended && !c.shut && !c.dead) {
      c.shut = true;
      await conn.closeWrite();
    }
  } catch {
    drop(c, "error");
  } finally {
    c.writing = false;
  }
}

/** Reads what the mirror answers and throws it away; its end of stream ends the copy once all is sent. */
async function discardAnswers(c: Copy, conn: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(16 * 1024);
  try {
    while (await conn.read(buf) !== null) { /* the answers are not the client's */ }
    if (c.shut) finish(c);
  } catch {
    if (!c.shut) drop(c, "error");
    else finish(c);
  }
}

/** The copy failed or fell behind: closed, counted, and the client goes on without it. */
function drop(c: Copy, cause: MirrorDrop): void {
  if (c.dead) return;
  c.counters[`mirror_dropped_${cause}`]++;
  finish(c);
}

function finish(c: Copy): void {
  c.dead = true;
  c.queue = [];
  c.queued = 0;
  if (c.linger !== null) clearTimeout(c.linger);
  if (c.conn) closeQuietly(c.conn);
}
