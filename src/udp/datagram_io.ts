/**
 * What moves a UDP service's datagrams: its socket, and each flow's socket
 * connected to a backend. Two implementations behind one interface, as the
 * TCP engines are: `native` (Linux: epoll and `recvmmsg` through libc,
 * native_io.ts) and `deno` (Deno's datagram sockets, here), which runs
 * everywhere. flows.ts decides; these only move bytes.
 *
 * @module
 */
import type { Backend } from "../config/schema.ts";
import { describeError } from "../errors.ts";
import { DATAGRAM_BUFFER } from "../net/linux.ts";

/** A datagram's sender: its address and, from the native engine, the raw socket address. */
export interface Peer {
  hostname: string;
  port: number;
  /** The kernel's socket address, to send back to without encoding it again. */
  raw?: Uint8Array;
}

/** A service's socket. */
export interface ServiceSocket {
  /** Sends one datagram to `to` (a reply to a client); false when it could not be sent now. */
  send(data: Uint8Array, to: Peer): boolean;
  close(): void;
}

/** A flow's socket, connected to its backend. */
export interface FlowSocket {
  /** Sends one datagram to the backend; false when it could not be sent now. */
  send(data: Uint8Array): boolean;
  /**
   * Done with it. `reuse`: its flow got every reply it waited for, so no
   * late one can come, and the socket may serve the next flow to the same
   * backend (the native mechanism keeps a few).
   */
  close(reuse?: boolean): void;
}

/** What a flow hears from its socket. */
export interface FlowEvents {
  /**
   * A datagram from the backend. Its bytes are good only during the call:
   * the native mechanism lends its receive buffer, not a copy (the copies,
   * and the allocations behind them, were over a quarter of bal's user time
   * per DNS query). Copy them to keep them.
   */
  reply(data: Uint8Array): void;
  /** The backend's host said its port is closed (ICMP port unreachable); native only. */
  refused(): void;
}

/** The datagram mechanism of the UDP plane. */
export interface DatagramIo {
  readonly name: "native" | "deno";
  /**
   * The service's socket on `bind:port`, shared (SO_REUSEPORT) after the
   * port is claimed, or joined when `join` (the bal before holds it);
   * `onDatagram` hears each datagram, longer than `max` ones as truncated,
   * with bytes good only during the call (as a reply's). Throws an Error
   * that says why it cannot listen.
   */
  listen(
    bind: string,
    port: number,
    join: boolean,
    onDatagram: (data: Uint8Array, from: Peer, truncated: boolean) => void,
  ): ServiceSocket;
  /** A socket for one flow to `backend`, or why none can be opened now. */
  flow(backend: Backend, events: FlowEvents | null): FlowSocket | string;
  /** Closes what is kept for backends not in `ids` (gone in a reload). */
  keepOnly(ids: ReadonlySet<string>): void;
  /** Ends the mechanism (its loop, if it has one). */
  stop(): Promise<void>;
}

/** Deno's datagram sockets: no batches and no ICMP errors, but everywhere. */
export function denoIo(): DatagramIo {
  return {
    name: "deno",
    listen(bind, port, join, onDatagram) {
      const options = { hostname: bind, port, transport: "udp" as const };
      try {
        Deno.listenDatagram(options).close();
      } catch (err) {
        if (!(join && err instanceof Deno.errors.AddrInUse)) throw err;
      }
      const conn = Deno.listenDatagram({ ...options, reuseAddress: true });
      receiveAll(
        conn,
        DATAGRAM_BUFFER,
        (data, from) => onDatagram(data, from, data.length >= DATAGRAM_BUFFER),
      );
      return {
        send(data, to) {
          conn.send(data, { transport: "udp", hostname: to.hostname, port: to.port }).catch(
            () => {},
          );
          return true;
        },
        close: () => closeQuietly(conn),
      };
    },
    flow(backend, events) {
      let conn: Deno.DatagramConn;
      try {
        const any = backend.host.includes(":") ? "::" : "0.0.0.0";
        conn = Deno.listenDatagram({ hostname: any, port: 0, transport: "udp" });
      } catch (err) {
        return describeError(err);
      }
      if (events) {
        receiveAll(conn, DATAGRAM_BUFFER, (data, from) => {
          if (from.port === backend.port) events.reply(data);
        });
      }
      const to = { transport: "udp" as const, hostname: backend.host, port: backend.port };
      let sending = 0;
      let closed = false;
      return {
        send(data) {
          sending++;
          conn.send(data, to).catch(() => {}).finally(() => {
            // A datagram still being sent keeps its socket until it has gone.
            if (--sending === 0 && closed) closeQuietly(conn);
          });
          return true;
        },
        close() {
          closed = true;
          if (sending === 0) closeQuietly(conn);
        },
      };
    },
    keepOnly() {},
    stop: () => Promise.resolve(),
  };
}

/** Receives on `conn` until it closes, each datagram copied out of the shared buffer. */
async function receiveAll(
  conn: Deno.DatagramConn,
  size: number,
  on: (data: Uint8Array, from: Peer) => void,
): Promise<void> {
  const buf = new Uint8Array(size);
  for (;;) {
    let got: [Uint8Array, Deno.Addr];
    try {
      got = await conn.receive(buf);
    } catch {
      return;
    }
    const from = got[1] as Deno.NetAddr;
    on(got[0].slice(), { hostname: from.hostname, port: from.port });
  }
}

function closeQuietly(c: Deno.DatagramConn): void {
  try {
    c.close();
  } catch {
    // Closed already.
  }
}
