/**
 * A relay's progress as every engine keeps it (bytes each way, whose
 * stream ended first, a failure, done), and the one way bytes are counted
 * as they move: on that progress and on the backend's counters.
 *
 * @module
 */

/** A relay's progress, kept current by the engine that moves its bytes. */
export interface Relayed {
  /** Bytes from the client to the backend (early bytes included), and back. */
  aToB: number;
  bToA: number;
  /** A read or write failed (reset, broken pipe). */
  failed: boolean;
  /** Whose stream ended first: the client's (`a`) or the backend's (`b`). */
  firstEnd: "a" | "b" | null;
  /** Both directions ended (false while it runs, or when bal cut it). */
  done: boolean;
}

/** A backend's byte counters, as a relay moves them. */
export interface ByteCounters {
  bytes_in: number;
  bytes_out: number;
}

/**
 * A relay moved `n` bytes, from the client (`fromClient`) or from the
 * backend: counted on its progress and on the backend's counters, and the
 * session's activity is now.
 */
export function moved(
  r: Relayed,
  counters: ByteCounters,
  activity: { at: number },
  fromClient: boolean,
  n: number,
): void {
  activity.at = Date.now();
  if (fromClient) {
    r.aToB += n;
    counters.bytes_in += n;
  } else {
    r.bToA += n;
    counters.bytes_out += n;
  }
}

/** A read or write failed on `side` (the client's, `a`, or the backend's): the relay ends now. */
export function relayFailed(r: Relayed, side: "a" | "b", onEnd: () => void): void {
  if (r.done) return;
  r.failed = true;
  r.firstEnd ??= side;
  r.done = true;
  onEnd();
}
