/**
 * Running one active health check against one backend: connect, then
 * what its type asks (nothing, send/expect steps, an HTTP request, a TLS
 * handshake, an agent's line), all within the check's `timeout_ms`. The
 * result says why it failed, with what was received.
 *
 * @module
 */
import type { Backend, CheckStep, HealthCheck } from "../config/mod.ts";
import { dial, DialError } from "../net/dial.ts";
import { describeError } from "../errors.ts";
import { parseAgent } from "./agent.ts";
import { type Channel, tcpChannel, type TlsChannel, tlsChannel } from "./channel.ts";
import { binary, matchEnd, printable, RECEIVE_LIMIT, sendBytes } from "./expect.ts";
import { httpRequest, httpVerdict } from "./http_check.ts";
import { writeProxyHeader } from "../route/proxy_protocol.ts";
import type { FailureKind, HealthState, Observation } from "./state.ts";
import { probeUdp } from "./udp_probe.ts";

/** Why a check failed (a step and what it saw), or null when it passed. */
type Verdict = { error: string } | { ok: Partial<Observation> };

const failed = (kind: FailureKind, error: string): Observation => ({
  ok: false,
  at: Date.now(),
  source: "check",
  kind,
  error,
});

/**
 * Checks `backend` as its `check` says. Null when the check could not run
 * for a reason of this machine (out of file descriptors), which says
 * nothing about the backend.
 */
export async function probe(
  backend: Backend,
  previous: HealthState | undefined,
): Promise<Observation | null> {
  const check = backend.check;
  if (check.type === "dns" || check.type === "udp") return await probeUdp(backend);
  const port = check.type === "agent" ? check.agent_port! : check.port ?? backend.port;
  const deadline = Date.now() + check.timeout_ms;
  let channel: Channel;
  try {
    channel = await open(backend, port, check);
  } catch (err) {
    if (err instanceof DialError) {
      return err.kind === "local" ? null : failed(err.kind, err.message);
    }
    return failed("other", describeError(err));
  }
  // The whole check, not each step, is bounded by timeout_ms: past it the socket closes.
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    channel.close();
  }, Math.max(0, deadline - Date.now()));
  try {
    const verdict = await converse(channel, backend, check, previous, () => timedOut);
    if ("error" in verdict) return failed(timedOut ? "timeout" : "other", verdict.error);
    return { ok: true, at: Date.now(), source: "check", ...verdict.ok };
  } catch (err) {
    return failed(
      timedOut ? "timeout" : "other",
      timedOut ? `timed out after ${check.timeout_ms} ms` : describeError(err),
    );
  } finally {
    clearTimeout(timer);
    channel.close();
  }
}

/**
 * Connects as the check needs: TLS for `tls` and `http` with `tls`, else
 * plain TCP, which starts with a PROXY header (the check's own addresses)
 * when `health_check_send_proxy` asks for one.
 */
async function open(backend: Backend, port: number, check: HealthCheck): Promise<Channel> {
  if (check.tls && check.type !== "agent") {
    return await tlsChannel(backend.host, port, check.tls, check.timeout_ms);
  }
  const conn = await dial(backend.host, port, check.timeout_ms);
  const channel = tcpChannel(conn);
  if (backend.check_send_proxy && check.type !== "agent") {
    const header = writeProxyHeader(
      backend.check_send_proxy,
      conn.localAddr as Deno.NetAddr,
      conn.remoteAddr as Deno.NetAddr,
    );
    await channel.write(header).catch(() => {});
  }
  return channel;
}

/** What the check says over an open channel. */
async function converse(
  channel: Channel,
  backend: Backend,
  check: HealthCheck,
  previous: HealthState | undefined,
  timedOut: () => boolean,
): Promise<Verdict> {
  const tls = tlsVerdict(channel, check);
  if (tls && "error" in tls) return tls;
  switch (check.type) {
    case "tcp":
    case "none":
    case "dns":
    case "udp":
      return { ok: {} };
    case "tls":
      return tls ?? { ok: {} };
    case "send_expect":
      return await steps(channel, check.steps, timedOut);
    case "http": {
      await channel.write(new TextEncoder().encode(httpRequest(check.http!, backend.host)));
      const error = httpVerdict(check.http!, await readAll(channel));
      return error ? { error } : { ok: {} };
    }
    case "agent": {
      const line = (await readLine(channel)).split(/\r?\n/)[0];
      const answer = parseAgent(line, previous?.agent ?? null);
      return answer.ok ? { ok: { agent: answer.agent } } : { error: answer.error! };
    }
  }
}

/** A TLS channel's verdict: not trusted when it must be, or expired; null for plain TCP. */
function tlsVerdict(channel: Channel, check: HealthCheck): Verdict | null {
  if (!check.tls || !("authorized" in channel)) return null;
  const tls = channel as TlsChannel;
  if (check.tls.verify && !tls.authorized) {
    return { error: `TLS certificate not trusted: ${tls.authorizationError ?? "unknown reason"}` };
  }
  if (tls.expiresAt !== null && tls.expiresAt < Date.now()) {
    return { error: `TLS certificate expired at ${new Date(tls.expiresAt).toISOString()}` };
  }
  return { ok: tls.expiresAt === null ? {} : { cert_expires_at: tls.expiresAt } };
}

/** Runs send/expect steps; an expect consumes what it matched. */
async function steps(
  channel: Channel,
  list: readonly CheckStep[],
  timedOut: () => boolean,
): Promise<Verdict> {
  let received = "";
  for (const step of list) {
    if (step.kind === "send") {
      await channel.write(sendBytes(step));
      continue;
    }
    for (;;) {
      const end = matchEnd(step, received);
      if (end !== null) {
        received = received.slice(end);
        break;
      }
      const more = await channel.read().catch(() => null);
      if (more === null || received.length >= RECEIVE_LIMIT) {
        const why = timedOut()
          ? "nothing matching in time"
          : more === null
          ? "the connection closed"
          : "64 KiB without a match";
        return { error: `expect ${step.label}: ${why}, got ${printable(received)}` };
      }
      received += binary(more);
    }
  }
  return { ok: {} };
}

/** Everything until the peer closes, up to the receive limit. */
async function readAll(channel: Channel): Promise<string> {
  let received = "";
  while (received.length < RECEIVE_LIMIT) {
    const more = await channel.read();
    if (more === null) break;
    received += binary(more);
  }
  return received;
}

/** Up to the first newline (or the end), at most 1 KiB. */
async function readLine(channel: Channel): Promise<string> {
  let received = "";
  while (!received.includes("\n") && received.length < 1024) {
    const more = await channel.read();
    if (more === null) break;
    received += binary(more);
  }
  return received;
}
