/**
 * The `health_check:` block, per service or per backend: its type and the
 * fields each type takes, checked with line:col like every other key. Its
 * timing defaults to the service's `runtime:` health-check keys.
 *
 * @module
 */
import { isMap, isScalar, isSeq, type Node } from "./yaml.ts";
import {
  boolField,
  describeNode,
  enumField,
  type Field,
  intField,
  isEmpty,
  mapFields,
  type Report,
} from "./fields.ts";
import { RUNTIME_RULES } from "./runtime.ts";
import { stepOf, text } from "./check_steps.ts";
import { dnsCheckOf, udpCheckOf } from "./udp.ts";
import { quote } from "../text.ts";
import {
  CHECK_TYPES,
  type CheckStep,
  type CheckType,
  type HealthCheck,
  type HttpCheck,
  type RuntimeSettings,
  type TlsCheck,
} from "./schema.ts";

const TIMING_KEYS = ["interval_ms", "timeout_ms", "fail_threshold", "success_threshold", "port"];
const TLS_KEYS = ["tls_server_name", "tls_verify", "tls_ca_file"];

/** The keys each type takes besides `type` and the timing keys. */
const TYPE_KEYS: { readonly [T in CheckType]: readonly string[] } = {
  tcp: [],
  send_expect: ["steps"],
  http: ["method", "path", "host", "headers", "expect_status", "expect_body", "tls", ...TLS_KEYS],
  tls: [...TLS_KEYS, "expiry_warning_days"],
  agent: ["agent_port"],
  dns: ["name", "qtype", "expect_rcode"],
  udp: ["send", "send_hex", "expect", "expect_regex", "expect_hex"],
  none: [],
};
const ALL_KEYS = [...new Set(["type", ...TIMING_KEYS, ...Object.values(TYPE_KEYS).flat()])];
const STEP_KEYS = ["send", "send_hex", "expect", "expect_regex", "expect_hex"];
const PORT = { default: 0, min: 1, max: 65535 };

/** Today's check: a TCP connect, timed by the service's runtime keys. */
export function tcpCheck(r: RuntimeSettings): HealthCheck {
  return {
    type: "tcp",
    interval_ms: r.health_check_interval_ms,
    timeout_ms: r.health_check_timeout_ms,
    fail_threshold: r.health_check_fail_threshold,
    success_threshold: r.health_check_success_threshold,
    port: null,
    steps: [],
    http: null,
    tls: null,
    expiry_warning_days: 14,
    agent_port: null,
    dns: null,
    udp: null,
  };
}

/** A UDP service's check when it sets none: no probe (a datagram has no handshake to try). */
export function noCheck(r: RuntimeSettings): HealthCheck {
  return { ...tcpCheck(r), type: "none" };
}

/** A `health_check:` block at `path`, or `fallback` when there is none. */
export function healthCheckOf(
  field: Field | undefined,
  path: string,
  fallback: HealthCheck,
  runtime: RuntimeSettings,
  at: Report,
): HealthCheck {
  if (isEmpty(field)) return fallback;
  if (!isMap(field!.value)) {
    at(field!.value, path, `expected a mapping with a type, got ${describeNode(field!.value)}`);
    return fallback;
  }
  const f = mapFields(field!.value, path, ALL_KEYS, at);
  const type = enumField(f.get("type"), `${path}.type`, CHECK_TYPES, "tcp", at);
  for (const [key, value] of f) {
    if (key === "type" || TIMING_KEYS.includes(key) || TYPE_KEYS[type].includes(key)) continue;
    const owners = CHECK_TYPES.filter((t) => TYPE_KEYS[t].includes(key)).join(" or ");
    at(value.key, `${path}.${key}`, `not used by a ${type} check; it belongs to ${owners} checks`);
  }
  const base = tcpCheck(runtime);
  const int = (key: string, rule: keyof RuntimeSettings & keyof typeof RUNTIME_RULES) =>
    intField(f.get(key), `${path}.${key}`, { ...RUNTIME_RULES[rule], default: runtime[rule] }, at);
  const port = f.get("port");
  return {
    ...base,
    type,
    interval_ms: int("interval_ms", "health_check_interval_ms"),
    timeout_ms: int("timeout_ms", "health_check_timeout_ms"),
    fail_threshold: int("fail_threshold", "health_check_fail_threshold"),
    success_threshold: int("success_threshold", "health_check_success_threshold"),
    port: port ? intField(port, `${path}.port`, PORT, at) : null,
    steps: type === "send_expect" ? stepsOf(f.get("steps"), `${path}.steps`, field!.value, at) : [],
    http: type === "http" ? httpOf(f, path, at) : null,
    tls: type === "tls" || (type === "http" && boolField(f.get("tls"), `${path}.tls`, false, at))
      ? tlsOf(f, path, at)
      : null,
    expiry_warning_days: intField(f.get("expiry_warning_days"), `${path}.expiry_warning_days`, {
      default: 14,
      min: 0,
      max: 3650,
    }, at),
    agent_port: type === "agent" ? agentPort(f.get("agent_port"), path, field!.value, at) : null,
    dns: type === "dns" ? dnsCheckOf(f, path, field!.value, at) : null,
    udp: type === "udp" ? udpCheckOf(f, path, field!.value, at) : null,
  };
}

function agentPort(field: Field | undefined, path: string, node: Node, at: Report): number | null {
  if (!field) {
    at(node, `${path}.agent_port`, "missing; an agent check needs the port its agent answers on");
    return null;
  }
  return intField(field, `${path}.agent_port`, PORT, at);
}

function stepsOf(field: Field | undefined, path: string, node: Node, at: Report): CheckStep[] {
  if (!field || !isSeq(field.value) || field.value.items.length === 0) {
    at(
      field?.value ?? node,
      path,
      'a send_expect check needs a non-empty list of steps, e.g. `[{send: "PING\\r\\n"}, {expect: "+PONG"}]`',
    );
    return [];
  }
  const steps: CheckStep[] = [];
  field.value.items.forEach((item, i) => {
    const stepPath = `${path}[${i}]`;
    const f = mapFields(item as Node, stepPath, STEP_KEYS, at);
    if (!isMap(item) || f.size !== 1) {
      at(
        item as Node,
        stepPath,
        `a step is one of ${STEP_KEYS.join(", ")}, e.g. {expect: "+PONG"}`,
      );
      return;
    }
    const [[key, value]] = [...f];
    const raw = text(value, `${stepPath}.${key}`, at);
    if (raw === undefined) return;
    const step = stepOf(key, raw, (reason) => at(value.value, `${stepPath}.${key}`, reason));
    if (step) steps.push(step);
  });
  return steps;
}

function httpOf(f: Map<string, Field>, path: string, at: Report): HttpCheck {
  const str = (key: string, fallback: string | null) => {
    const field = f.get(key);
    return field ? text(field, `${path}.${key}`, at) ?? fallback : fallback;
  };
  const body = str("expect_body", null);
  if (body !== null) {
    try {
      new RegExp(body);
    } catch (err) {
      at(
        f.get("expect_body")!.value,
        `${path}.expect_body`,
        `not a valid regex: ${err instanceof Error ? err.message : err}`,
      );
    }
  }
  const method = str("method", "GET")!;
  if (!/^[A-Z]+$/.test(method)) {
    at(
      f.get("method")!.value,
      `${path}.method`,
      `${quote(method)} is not an HTTP method such as GET or HEAD`,
    );
  }
  const pathValue = str("path", "/")!;
  if (!pathValue.startsWith("/")) {
    at(f.get("path")!.value, `${path}.path`, `${quote(pathValue)} must start with /`);
  } else if (hasControlOrSpace(pathValue)) {
    // Sent as it is in the request line: a space or a line break would forge the request.
    at(
      f.get("path")!.value,
      `${path}.path`,
      `${quote(pathValue)} has a space or a control character; percent-encode it (%20)`,
    );
  }
  const host = str("host", null);
  if (host !== null && !/^[A-Za-z0-9.\-:\[\]_]+$/.test(host)) {
    at(
      f.get("host")!.value,
      `${path}.host`,
      `${quote(host)} is not a host name (letters, digits, . - _ : and [ ] for IPv6)`,
    );
  }
  return {
    method,
    path: pathValue,
    host,
    headers: headersOf(f.get("headers"), `${path}.headers`, at),
    expect_status: statusOf(f.get("expect_status"), `${path}.expect_status`, at),
    expect_body: body,
  };
}

function headersOf(field: Field | undefined, path: string, at: Report): Record<string, string> {
  if (isEmpty(field)) return {};
  if (!isMap(field!.value)) {
    at(
      field!.value,
      path,
      `expected a mapping of header names to values, got ${describeNode(field!.value)}`,
    );
    return {};
  }
  const headers: Record<string, string> = {};
  for (const pair of field!.value.items) {
    const name = isScalar(pair.key) ? String(pair.key.value) : "";
    const value = isScalar(pair.value) ? String(pair.value.value) : undefined;
    if (!/^[A-Za-z0-9-]+$/.test(name) || value === undefined || /[\r\n]/.test(value)) {
      at(
        pair.key as Node,
        `${path}.${name}`,
        "a header is a name of letters, digits and - and a one-line value",
      );
      continue;
    }
    headers[name] = value;
  }
  return headers;
}

/** `[200, "300-399"]` as ranges; default 200-399. */
function statusOf(field: Field | undefined, path: string, at: Report): [number, number][] {
  if (isEmpty(field)) return [[200, 399]];
  const items = isSeq(field!.value) ? field!.value.items as Node[] : [field!.value!];
  const ranges: [number, number][] = [];
  items.forEach((item, i) => {
    const v = isScalar(item) ? item.value : undefined;
    const m = typeof v === "string" ? /^(\d{3})-(\d{3})$/.exec(v) : null;
    const range: [number, number] | null = typeof v === "number" && Number.isInteger(v)
      ? [v, v]
      : m
      ? [Number(m[1]), Number(m[2])]
      : null;
    if (!range || range[0] < 100 || range[1] > 599 || range[0] > range[1]) {
      at(
        item,
        `${path}[${i}]`,
        `expected a status such as 200 or a range such as "200-399", got ${describeNode(item)}`,
      );
      return;
    }
    ranges.push(range);
  });
  return ranges.length ? ranges : [[200, 399]];
}

function tlsOf(f: Map<string, Field>, path: string, at: Report): TlsCheck {
  const name = f.get("tls_server_name");
  const ca = f.get("tls_ca_file");
  return {
    server_name: name ? text(name, `${path}.tls_server_name`, at) ?? null : null,
    verify: boolField(f.get("tls_verify"), `${path}.tls_verify`, false, at),
    ca_file: ca ? text(ca, `${path}.tls_ca_file`, at) ?? null : null,
  };
}

/** True when `text` has a space or an ASCII control character (a request line cannot carry them). */
function hasControlOrSpace(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code <= 0x20 || code === 0x7f) return true;
  }
  return /\s/.test(text);
}
