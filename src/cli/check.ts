/**
 * `bal check`: validates a config file without touching the running bal.
 *
 * @module
 */
import { chooseEngine } from "../engine/choose.ts";
import {
  allBackends,
  type Config,
  type ConfigCheck,
  configWarnings,
  type Discovered,
  formatAddress,
  type HostLimits,
  isWildcard,
  readConfig,
  type Route,
} from "../config/mod.ts";
import type { BackendTls, Bandwidth, TlsTerminate } from "../config/schema.ts";
import { ConfigError } from "../errors.ts";
import { count, quote } from "../text.ts";
import { readProc } from "../instance/state_file.ts";
import { configPathOf, err, out, plural } from "./output.ts";

/** Options of `bal check`. */
export interface CheckOptions {
  config?: string;
  json?: boolean;
  verbose?: boolean;
  strict?: boolean;
}

/**
 * A config whose every `bind_address` this machine can listen on (it
 * resolves, and is one of its addresses), else the errors, as `start`
 * would meet them. Tried on port 0, so nothing real is bound.
 */
function bindable(check: Extract<ConfigCheck, { ok: true }>): ConfigCheck {
  const errors: ConfigError[] = [];
  check.config.services.forEach((s, i) => {
    if (isWildcard(s.bind_address)) return;
    try {
      Deno.listen({ hostname: s.bind_address, port: 0 }).close();
    } catch (err) {
      const path = check.config.single ? "bind_address" : `services[${i}].bind_address`;
      const why = err instanceof Deno.errors.AddrNotAvailable
        ? "is not an address of this machine"
        : "does not resolve to an address of this machine";
      errors.push(
        new ConfigError(check.places.get(path)!, path, `${quote(s.bind_address)} ${why}`),
      );
    }
  });
  return errors.length ? { ok: false, errors } : check;
}

/** What this machine's kernel says of the limits a config can exceed (Linux only). */
async function hostLimits(): Promise<HostLimits> {
  const somaxconn = Number(await readProc("/proc/sys/net/core/somaxconn"));
  // The hard limit of this process: a bal started from the same shell inherits it, and
  // Deno raises the soft limit to it at start.
  const limits = await readProc("/proc/self/limits");
  const nofile = Number(/^Max open files\s+\d+\s+(\d+)/m.exec(limits ?? "")?.[1]);
  return {
    ...(somaxconn > 0 ? { somaxconn } : {}),
    ...(nofile > 0 ? { nofile } : {}),
  };
}

/** `bal check`. */
export async function checkCommand(options: CheckOptions): Promise<number> {
  const configPath = configPathOf(options.config);
  const read = await readConfig(configPath);
  const result = read.ok ? bindable(read) : read;
  const errors = result.ok ? [] : result.errors.map((e) => e.message);
  const warnings = result.ok
    ? [...result.warnings, ...configWarnings(result.config, await hostLimits())]
    : [];
  const failed = errors.length > 0 || (options.strict === true && warnings.length > 0);
  if (options.json) {
    out(JSON.stringify({
      config_path: configPath,
      errors,
      warnings,
      backend_count: result.ok ? allBackends(result.config).length : null,
      services: result.ok ? result.config.services : null,
    }));
    return failed ? 1 : 0;
  }
  if (!result.ok) {
    for (const e of errors) err(e);
    out(`what_happened: ${configPath} is not a valid config (${plural(errors.length, "error")})`);
    out(`why_likely: ${result.errors[0].reason}`);
    out(`do_this_now: fix ${errors[0].split(": ")[0]}, then run \`bal check\` again`);
    return 1;
  }
  out(`config OK: ${configPath}`);
  printServices(result.config, options.verbose === true);
  for (const w of warnings) out(`warning: ${w}`);
  if (failed) {
    out(`what_happened: --strict and ${plural(warnings.length, "warning")}`);
    out("why_likely: the config is valid but does something you may not mean");
    out("do_this_now: change the settings named above, or run without --strict to accept them");
    return 1;
  }
  out(`next: bal start -d -c ${configPath} (or \`bal graceful\` to apply it to the running bal)`);
  return 0;
}

/** A discovered entry in a line: what is looked up, where, and what it is found with. */
function discoveredLine(d: Discovered, c: Config): string {
  const t = d.template;
  const traits = [
    t.weight === 1 ? "" : `weight ${t.weight}`,
    t.backup ? "backup" : "",
    t.max_connections === null ? "" : `max_connections ${t.max_connections}`,
  ].filter((x) => x).join(", ");
  const what = d.kind === "dns"
    ? `dns ${d.name}:${d.port}: every A/AAAA address`
    : d.kind === "srv"
    ? `srv ${d.name}: every SRV target`
    : `etcd ${d.name} at ${d.etcd!.endpoints.join(", ")}: every key under the prefix`;
  const server = d.kind === "etcd"
    ? ""
    : `, resolved by ${
      c.resolver ? formatAddress(c.resolver.hostname, c.resolver.port) : "the system's resolver"
    }`;
  return `${what}${traits ? ` (${traits})` : ""}${server}, when bal runs`;
}

/** A route in a line: its names, method and backends. */
function routeLine(r: Route, isDefault: boolean): string {
  const names = [...r.sni, ...(isDefault ? ["default_route"] : [])].join(", ") || "no names";
  return `route ${r.name} (${names}): ${r.method}, ${r.backends.map((b) => b.address).join(", ")}`;
}

/**
 * The normalized services; with `verbose`, each backend's settings and every
 * runtime key in force. The single-service form prints as it always did.
 */
function printServices(c: Config, verbose: boolean): void {
  const indent = c.single ? "  " : "    ";
  if (!c.single) {
    out(
      `  ${plural(c.services.length, "service")}, log_level ${c.log_level}, workers ${c.workers}`,
    );
  }
  for (const s of c.services) {
    const udp = s.udp
      ? `/udp (${s.udp.mode}${
        s.udp.mode === "request" ? `, ${plural(s.udp.responses, "response")}` : ""
      }, idle ${s.udp.idle_timeout_ms} ms)`
      : "";
    const listen = `${formatAddress(s.bind_address, s.port)}${udp}`;
    out(
      c.single
        ? `  listen ${listen}, ${s.method}, log_level ${c.log_level}, workers ${c.workers}`
        : `  service ${s.name}: listen ${listen}, ${s.method}`,
    );
    out(`${indent}${backendSummary(s.backends.map((b) => b.address), verbose)}`);
    for (const r of s.routes) out(`${indent}${routeLine(r, r.name === s.default_route)}`);
    for (const d of s.discovered) out(`${indent}${discoveredLine(d, c)}`);
    if (s.bandwidth) out(`${indent}bandwidth: ${bandwidthText(s.bandwidth)}`);
    if (s.mirror) {
      const m = s.mirror;
      out(`${indent}mirror: ${m.percent}% of connections copied to ${m.address}`);
    }
    if (s.tls) out(`${indent}tls: ${tlsText(s.tls)}`);
    const spoken = [...new Set(s.backends.map((b) => b.tls && backendTlsText(b.tls)))];
    if (spoken.length === 1 && spoken[0]) out(`${indent}backend_tls: ${spoken[0]}`);
    if (!verbose) continue;
    for (const b of s.backends) {
      const limit = b.max_connections === null ? "" : `, max_connections ${b.max_connections}`;
      const own = (b.bandwidth ? `, bandwidth ${bandwidthText(b.bandwidth)}` : "") +
        (b.tls ? `, backend_tls ${backendTlsText(b.tls)}` : "");
      out(
        `${indent}backend ${b.address}: weight ${b.weight}${
          b.backup ? ", backup" : ""
        }${limit}${own}`,
      );
    }
    if (s.acl.allow) out(`${indent}allow: ${s.acl.allow.map((c) => c.text).join(", ")}`);
    if (s.acl.deny.length) out(`${indent}deny: ${s.acl.deny.map((c) => c.text).join(", ")}`);
    for (const [key, value] of Object.entries(s.runtime)) out(`${indent}runtime.${key}: ${value}`);
  }
  if (verbose) out(`  engine: ${engineLine(c)}`);
}

const base = (file: string) => file.slice(file.lastIndexOf("/") + 1);

/** TLS terminated, in words: `terminates with a.crt, b.crt (TLS 1.2+, alpn h2), ...`. */
function tlsText(t: TlsTerminate): string {
  const alpn = t.alpn.length ? `, alpn ${t.alpn.join(" ")}` : "";
  const clients = t.client_ca
    ? `, client certificates ${t.client_auth} (${base(t.client_ca.file)})`
    : "";
  return `terminates with ${
    t.certificates.map((c) => base(c.cert_file)).join(", ")
  } (TLS ${t.min_version}+${alpn})${clients}, handshake within ${t.handshake_timeout_ms} ms`;
}

/** TLS to a backend, in words: `verified against ca.crt as origin.test`. */
function backendTlsText(t: BackendTls): string {
  const trust = !t.verify
    ? "not verified"
    : `verified against ${t.ca ? base(t.ca.file) : "the system's CAs"}`;
  const name = t.server_name ? ` as ${t.server_name}` : "";
  const cert = t.certificate ? `, client certificate ${base(t.certificate.cert_file)}` : "";
  return `${trust}${name}${cert}`;
}

/** A bandwidth limit in words: `download 10,000,000 bytes/s per client`. */
function bandwidthText(b: Bandwidth): string {
  const ways = [
    b.upload_bytes_per_s ? `upload ${count(b.upload_bytes_per_s)} bytes/s` : "",
    b.download_bytes_per_s ? `download ${count(b.download_bytes_per_s)} bytes/s` : "",
  ].filter((w) => w);
  return `${ways.join(", ")} per ${b.per}`;
}

/** The engine the config asks for, and the one a start here would run. */
function engineLine(c: Config): string {
  try {
    const override = Deno.env.get("BAL_ENGINE");
    const decision = chooseEngine(c.engine, override);
    const asked = override ? `${c.engine} (BAL_ENGINE=${override})` : c.engine;
    return decision.fallback
      ? `${asked}: ${decision.name} on this machine (${decision.fallback})`
      : `${asked}: ${decision.name} on this machine`;
  } catch (err) {
    return `${c.engine}: ${err instanceof Error ? err.message : String(err)}`;
  }
}

/** Backends listed at most this many at a time unless --verbose. */
const LIST_LIMIT = 10;

/** `2 backends: a, b`, or for a long list `10,000 backends; first 10: a, b, ...`. */
function backendSummary(addresses: string[], verbose: boolean): string {
  if (addresses.length === 0) return "no backends written out";
  if (verbose || addresses.length <= LIST_LIMIT) {
    return `${plural(addresses.length, "backend")}: ${addresses.join(", ")}`;
  }
  return `${count(addresses.length)} backends; first ${LIST_LIMIT}: ${
    addresses.slice(0, LIST_LIMIT).join(", ")
  } (--verbose lists every one)`;
}
