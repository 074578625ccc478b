/**
 * `bal status`: the running bal's live state from its control socket.
 *
 * @module
 */
import { liveStatus } from "../instance/control.ts";
import { count, firstFew, kib, quote } from "../text.ts";
import { BalError } from "../errors.ts";
import { watch } from "./watch.ts";
import { WHY_PROTECTION, WHY_UNREACHABLE } from "../instance/status_report.ts";
import { statePaths } from "../instance/paths.ts";
import {
  type BackendStatus,
  type BandwidthStatus,
  listenAddress,
  type MirrorStatus,
  type ServiceStatus,
  type Status,
} from "../instance/status_report.ts";
import type { UdpServiceCounters } from "../stats/udp_counters.ts";
import type { EntryStatus } from "../discovery/entry.ts";
import { configPathOf, out, plural } from "./output.ts";

/** Options of `bal status` and `bal doctor`. */
export interface StatusOptions {
  config?: string;
  json?: boolean;
  brief?: boolean;
  verbose?: boolean;
  watch?: boolean;
  /** Seconds between frames with --watch. */
  interval?: string;
  /** Frames to draw with --watch before exiting (for scripts). */
  count?: string;
}

/** `bal status`. */
export async function statusCommand(options: StatusOptions): Promise<number> {
  const paths = statePaths();
  if (options.watch) {
    const interval = Number(options.interval ?? "2");
    if (!(interval >= 0.1 && interval <= 3600)) {
      throw new BalError(
        `--interval takes seconds from 0.1 to 3600, got ${quote(options.interval ?? "")}`,
      );
    }
    return await watch(
      paths,
      interval,
      options.count === undefined ? undefined : Number(options.count),
    );
  }
  const s = await liveStatus(paths);
  if (options.json) {
    out(JSON.stringify(s));
    return 0;
  }
  if (!s.running) {
    out(`bal is not running${s.removed ? ` (removed ${s.removed.join(" and ")})` : ""}`);
    out(`next: bal start -d${options.config ? ` -c ${options.config}` : ""}`);
    return 0;
  }
  const services = s.services!;
  const all = services.flatMap((x) => x.backends);
  const listen = services.length === 1
    ? listenAddress(services[0])
    : plural(services.length, "service");
  const reachable = all.filter((b) => b.reachable).length;
  const active = services.reduce((n, x) => n + x.active_connections, 0);
  out(
    `bal is running (pid ${s.pid}), ${listen}, ${count(reachable)}/${
      count(all.length)
    } backends reachable, ${count(active)} active connections`,
  );
  if (options.brief) return 0;
  const wanted = options.config ? configPathOf(options.config, paths) : s.config_path;
  if (wanted !== s.config_path) out(`  note: it runs with ${s.config_path}, not ${wanted}`);
  const method = services.length === 1 ? `${services[0].method}, ` : "";
  out(
    `  up ${s.uptime_s} s, ${method}${
      plural(s.workers!, "data plane")
    }, ${s.engine} engine, config ${s.config_path}`,
  );
  if (s.engine_fallback) out(`  engine: ${s.engine}, as auto falls back: ${s.engine_fallback}`);
  const change = s.last_change;
  if (change) out(`  last change: ${change.change}, by ${change.who} at ${change.at}`);
  for (const d of s.draining ?? []) {
    out(
      `  draining: pid ${d.pid} (before an upgrade), ${
        plural(d.active_connections, "connection")
      } left`,
    );
  }
  for (const service of services) printService(service, services.length > 1, options.verbose);
  if (options.verbose && s.reloads) {
    const last = s.reloads.last;
    out(
      `  reloads: ${s.reloads.count}${
        last ? `, last ${last.ok ? "ok" : `failed (${last.error})`} at ${last.at}` : ""
      }`,
    );
  }
  printVerdict(s, services);
  return 0;
}

function printService(s: ServiceStatus, several: boolean, verbose?: boolean): void {
  const indent = several ? "    " : "  ";
  if (several) {
    out(
      `  service ${s.name} on ${listenAddress(s)}${
        s.protocol === "udp" ? "/udp" : ""
      }, ${s.method}: ${count(s.backend_reachable)}/${count(s.backend_total)} backends reachable, ${
        count(s.active_connections)
      } active`,
    );
  }
  if (s.udp) out(`${indent}${udpLine(s.udp)}`);
  else {
    out(
      `${indent}connections: ${s.connections_accepted} accepted: ${s.connections_served} served, ${s.rejected_connections} rejected at the limit, ${s.no_backend_connections} found no backend${
        clientRefusals(s)
      }; ${s.idle_closed_connections} closed idle`,
    );
  }
  if (s.bandwidth) out(`${indent}bandwidth: ${bandwidthLine(s.bandwidth)}`);
  if (s.mirror) out(`${indent}${mirrorLine(s.mirror)}`);
  for (const d of s.discovery ?? []) out(`${indent}${discoveryLine(d)}`);
  const shown = verbose ? s.backends : s.backends.slice(0, LIST_LIMIT);
  for (const b of shown) printBackend(b, indent, verbose);
  const rest = s.backends.slice(shown.length);
  if (rest.length > 0) {
    const up = rest.filter((b) => b.reachable).length;
    out(
      `${indent}… ${count(rest.length)} more backends (${count(up)} up, ${
        count(rest.length - up)
      } down); --verbose or \`bal backend list ${s.name}\` lists every one`,
    );
  }
}

/** A UDP service's datagrams, flows and drops, in a line. */
function udpLine(u: UdpServiceCounters & { engine: string }): string {
  const drops = Object.entries(u.drops).filter(([, n]) => n > 0).map(([why, n]) => `${n} ${why}`);
  return `datagrams (${u.engine}): ${u.datagrams_in} in, ${u.datagrams_out} out (${
    kib(u.bytes_in)
  } in, ${
    kib(u.bytes_out)
  } out); flows: ${u.flows_active} active, ${u.flows_created} created, ${u.flows_expired} idled out; dropped: ${
    drops.length ? drops.join(", ") : "none"
  }`;
}

/** A bandwidth limit and what it held back each way, in a line. */
function bandwidthLine(b: BandwidthStatus): string {
  const way = (name: string, rate: number, delayed: number, pausedMs: number) =>
    rate === 0
      ? `${name} unlimited`
      : `${name} ${kib(rate)}/s (${kib(delayed)} held back, paused ${
        (pausedMs / 1000).toFixed(1)
      } s)`;
  return `${way("upload", b.upload_bytes_per_s, b.upload_delayed_bytes, b.upload_paused_ms)}, ${
    way("download", b.download_bytes_per_s, b.download_delayed_bytes, b.download_paused_ms)
  } per ${b.per}`;
}

/** A mirror and what it copied, in a line. */
function mirrorLine(m: MirrorStatus): string {
  const drops = Object.entries(m.dropped).filter(([, n]) => n > 0).map(([why, n]) => `${n} ${why}`);
  return `mirror ${m.backend} (${m.percent}%): ${m.mirrored} connections copied, ${
    kib(m.bytes)
  } sent; dropped: ${drops.length ? drops.join(", ") : "none"}`;
}

/** How a discovered entry stands, in a line. */
function discoveryLine(d: EntryStatus): string {
  const found = `${count(d.targets)} ${d.targets === 1 ? "address" : "addresses"}`;
  if (d.state === "pending") return `${d.kind} ${d.name}: pending (${d.last_error ?? "asking"})`;
  if (d.state === "failing") {
    return `${d.kind} ${d.name}: failing (${d.last_error}); keeping ${found}`;
  }
  return `${d.kind} ${d.name}: ${found}, as of ${d.resolved_at}`;
}

/** Backends listed per service, and unreachable ones named in the verdict, unless --verbose. */
const LIST_LIMIT = 10;

function printBackend(b: BackendStatus, indent: string, verbose?: boolean): void {
  const failures =
    `failed connects: ${b.counters.timeout} timeout, ${b.counters.refused} refused, ${
      b.counters.tls ? `${b.counters.tls} TLS, ` : ""
    }${b.counters.other} other`;
  const cooling = b.cooldown_remaining_ms === null
    ? ""
    : `; cooling down ${b.cooldown_remaining_ms} ms more (${b.connect_failure_streak} failed connects in a row)`;
  const admin = b.admin_state === "enabled" ? "" : ` [${b.admin_state}]`;
  const traits = [
    b.route === null || b.route === undefined ? "" : `route ${b.route}`,
    b.origin ? `${b.source} ${b.origin}` : "",
    b.weight === 1 ? "" : `weight ${b.weight}`,
    b.backup ? "backup" : "",
    b.max_connections === null ? "" : `max ${b.max_connections}`,
  ].filter((t) => t).join(", ");
  out(
    `${indent}${b.reachable ? "up  " : "DOWN"} ${b.address}${admin}${
      traits ? ` (${traits})` : ""
    }: ${b.active_connections} active, ${b.connections_served} served, in ${kib(b.bytes_in)}, out ${
      kib(b.bytes_out)
    }; ${failures}${cooling}`,
  );
  if (b.bandwidth) out(`${indent}     bandwidth: ${bandwidthLine(b.bandwidth)}`);
  if (verbose || !b.reachable) {
    out(
      `${indent}     last check ${b.last_check_time ?? "never"} ${b.last_check_result ?? ""}${
        b.last_error ? `; last failure: ${b.last_error}` : ""
      }; ${b.consecutive_failures} failures, ${b.consecutive_successes} successes in a row`,
    );
  }
}

/** The triplet for the worst thing status shows, or what to do next. */
function printVerdict(s: Status, services: ServiceStatus[]): void {
  const protected_ = services.find((x) => x.protection_mode.enabled);
  const down = services.flatMap((x) => x.backends).filter((b) => !b.reachable);
  const name = (service: string) => services.length > 1 ? `${service}/` : "";
  if (protected_) {
    const p = protected_.protection_mode;
    const of = services.length > 1 ? ` for ${protected_.name}` : "";
    out(`what_happened: protection mode is on${of} since ${p.since}: ${p.reason}`);
    out(`why_likely: ${WHY_PROTECTION}`);
    out(
      "do_this_now: bal status --verbose shows which backends fail; fix or remove them (then bal graceful); protection turns off after enough successes",
    );
  } else if (down.length > 0) {
    const total = services.reduce((n, x) => n + x.backend_total, 0);
    out(
      `what_happened: ${count(down.length)} of ${count(total)} backends unreachable: ${
        firstFew(down.map((b) => `${name(b.service)}${b.address} (${b.last_error ?? "failed"})`))
      }`,
    );
    out(`why_likely: ${WHY_UNREACHABLE}`);
    out(`do_this_now: start it, or remove it from ${s.config_path} and run \`bal graceful\``);
  } else {
    out("next: bal graceful after editing the config; bal stop to drain and stop");
  }
}

/** `, 3 denied by allow/deny, ...` for the per-client refusals that happened; "" when none did. */
function clientRefusals(s: Partial<ServiceStatus>): string {
  const r = s.refused_by_cause;
  if (!r) return "";
  const parts = [
    [r.acl, "denied by allow/deny"],
    [r.client_limit, "over max_connections_per_client"],
    [r.client_rate, "over connection_rate_per_client"],
    [r.proxy, "with a refused PROXY header"],
    [r.route, "with no route for their server name"],
    [r.tls_handshake, "whose TLS handshake failed"],
    [r.loop, "that were bal's own connects (a backend is bal itself)"],
  ].filter(([n]) => (n as number) > 0).map(([n, what]) => `${n} ${what}`);
  return parts.length ? `, ${parts.join(", ")}` : "";
}
