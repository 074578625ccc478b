/**
 * What bal needs of a stream socket (a TCP or Unix connection), and the two
 * things every user of one does: write all of a buffer, and close it
 * whether or not it is closed already.
 *
 * @module
 */

/** What bal needs of a socket: a relay, the control socket, a preface read. */
export type Stream = Pick<Deno.Conn, "read" | "write" | "closeWrite" | "close">;

/** Writes all of `bytes` (a write may take fewer). */
export async function writeAll(conn: Stream, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

/** Closes a socket that may already be closed. */
export function closeQuietly(conn: Stream): void {
  try {
    conn.close();
  } catch {
    // Already closed: closing is idempotent for our purposes.
  }
}
