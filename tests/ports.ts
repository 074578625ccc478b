/**
 * Loopback ports for tests and the bench, picked where nothing else will
 * take them between the pick and the bind.
 *
 * @module
 */

/**
 * Ports are handed out below the kernel's ephemeral range (32768 and up),
 * where outgoing connections take their source ports: a port picked there
 * can be taken by any client between the pick and bal's bind. Each port is
 * handed out once per test process, from a random start.
 */
const PORTS = { low: 20000, high: 32000 };
const handedOut = new Set<number>();
let nextPort = PORTS.low + Math.floor(Math.random() * (PORTS.high - PORTS.low));

/** A port below the ephemeral range that nothing listens on right now. */
export function freePort(): number {
  for (let i = 0; i < PORTS.high - PORTS.low; i++) {
    const port = nextPort;
    nextPort = nextPort + 1 >= PORTS.high ? PORTS.low : nextPort + 1;
    if (handedOut.has(port)) continue;
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
    } catch {
      continue;
    }
    handedOut.add(port);
    return port;
  }
  throw new Error(`no free port from ${PORTS.low} to ${PORTS.high}`);
}
