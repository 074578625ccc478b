/**
 * Active checks of UDP backends: one datagram out from a socket of the
 * check's own, and the reply, within `timeout_ms`. `dns` asks for a name
 * and wants the expected response code; `udp` sends the configured bytes
 * and matches the reply.
 *
 * @module
 */
import type { Backend, HealthCheck } from "../config/mod.ts";
import { decodeResponse, encodeQuery } from "../net/dns_wire.ts";
import { describeError } from "../errors.ts";
import { fromHex } from "../config/check_steps.ts";
import { binary, matchEnd, printable } from "./expect.ts";
import type { Observation } from "./state.ts";

const RCODE_NAMES = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"];

/** The outcome of a `dns` or `udp` check of `backend`. */
export async function probeUdp(backend: Backend): Promise<Observation> {
  const check = backend.check;
  const id = Math.floor(Math.random() * 0x10000);
  const request = check.type === "dns"
    ? encodeQuery(id, check.dns!.name, check.dns!.qtype)
    : fromHex(check.udp!.send_hex) as Uint8Array;
  const port = check.port ?? backend.port;
  const reply = await exchange(backend.host, port, request, check.timeout_ms);
  if (typeof reply === "string") {
    return { ok: false, at: Date.now(), source: "check", kind: "timeout", error: reply };
  }
  const error = check.type === "dns" ? dnsVerdict(reply, id, check) : udpVerdict(reply, check);
  return error === null
    ? { ok: true, at: Date.now(), source: "check" }
    : { ok: false, at: Date.now(), source: "check", kind: "other", error };
}

/** Sends `request` to `host:port` and returns the first reply from there, or why none came. */
async function exchange(
  host: string,
  port: number,
  request: Uint8Array,
  timeoutMs: number,
): Promise<Uint8Array | string> {
  let socket: Deno.DatagramConn;
  try {
    socket = Deno.listenDatagram({
      hostname: host.includes(":") ? "::" : "0.0.0.0",
      port: 0,
      transport: "udp",
    });
  } catch (err) {
    return `cannot open a UDP socket: ${describeError(err)}`;
  }
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    socket.close();
  }, timeoutMs);
  try {
    await socket.send(request, { transport: "udp", hostname: host, port });
    for (;;) {
      const [data, from] = await socket.receive();
      const addr = from as Deno.NetAddr;
      if (addr.port === port) return data;
    }
  } catch (err) {
    return timedOut ? `no reply within ${timeoutMs} ms` : `no reply: ${describeError(err)}`;
  } finally {
    clearTimeout(timer);
    try {
      socket.close();
    } catch {
      // Closed by the timer.
    }
  }
}

function dnsVerdict(reply: Uint8Array, id: number, check: HealthCheck): string | null {
  const response = decodeResponse(reply);
  if (typeof response === "string") return response;
  if (response.id !== id) return `a DNS answer to another query (id ${response.id})`;
  const want = check.dns!.expect_rcode;
  if (response.rcode === want) return null;
  const name = (code: number) => RCODE_NAMES[code] ?? `rcode ${code}`;
  return `answered ${name(response.rcode)} for ${check.dns!.name}, expected ${name(want)}`;
}

function udpVerdict(reply: Uint8Array, check: HealthCheck): string | null {
  const expect = check.udp!.expect;
  if (expect === null) return null;
  const received = binary(reply);
  if (matchEnd({ kind: "expect", ...expect, label: "" }, received) !== null) return null;
  return `the reply ${printable(received)} does not match`;
}
