/**
 * What a UDP service adds to a service: `protocol: udp`, its `udp:` block
 * (flows: session or request, replies, idle timeout, datagram size) and its
 * health checks (`dns`, `udp`), and what it refuses because it makes no
 * sense for datagrams: SNI routes, PROXY v1, the TCP check types.
 *
 * @module
 */
import { isMap, isScalar, type Node } from "./yaml.ts";
import { MAX_DATAGRAM } from "../net/linux.ts";
import {
  describeNode,
  enumField,
  type Field,
  intField,
  isEmpty,
  mapFields,
  type Report,
} from "./fields.ts";
import { stepOf, text } from "./check_steps.ts";
import type { ProxyVersion } from "../route/proxy_protocol.ts";
import {
  type Backend,
  type DnsCheck,
  type HealthCheck,
  UDP_CHECK_TYPES,
  type UdpCheck,
  type UdpSettings,
} from "./schema.ts";

const MODES = ["session", "request"] as const;

/** `udp:` of a UDP service at `path`; its defaults depend on the mode. */
export function udpSettingsOf(field: Field | undefined, path: string, at: Report): UdpSettings {
  const empty = new Map<string, Field>();
  let f = empty;
  if (!isEmpty(field)) {
    if (isMap(field!.value)) {
      f = mapFields(field!.value, path, [
        "mode",
        "responses",
        "idle_timeout_ms",
        "max_datagram_bytes",
      ], at);
    } else {
      at(
        field!.value,
        path,
        `expected a mapping such as {mode: request}, got ${describeNode(field!.value)}`,
      );
    }
  }
  const mode = enumField(f.get("mode"), `${path}.mode`, MODES, "session", at);
  const idleDefault = mode === "session" ? 30_000 : 5_000;
  return {
    mode,
    responses: intField(f.get("responses"), `${path}.responses`, {
      default: 1,
      min: 0,
      max: 1_000_000,
    }, at),
    idle_timeout_ms: intField(f.get("idle_timeout_ms"), `${path}.idle_timeout_ms`, {
      default: idleDefault,
      min: 10,
      max: 86_400_000,
    }, at),
    max_datagram_bytes: intField(f.get("max_datagram_bytes"), `${path}.max_datagram_bytes`, {
      default: MAX_DATAGRAM,
      min: 1,
      max: MAX_DATAGRAM,
    }, at),
  };
}

/** DNS response codes a `dns` check may expect, by name. */
const RCODES: Record<string, number> = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
};

/** A `dns` check's fields. */
export function dnsCheckOf(
  f: Map<string, Field>,
  path: string,
  node: Field["value"],
  at: Report,
): DnsCheck {
  const nameField = f.get("name");
  const name = nameField ? text(nameField, `${path}.name`, at) : undefined;
  if (!nameField) {
    at(node, `${path}.name`, "missing; a dns check asks for a name, e.g. name: example.com");
  } else if (name !== undefined && !/^[A-Za-z0-9_.-]{1,253}$/.test(name)) {
    at(nameField.value, `${path}.name`, `${JSON.stringify(name)} is not a DNS name`);
  }
  const qtype = enumField(f.get("qtype"), `${path}.qtype`, ["A", "AAAA", "SRV"] as const, "A", at);
  const rcode = enumField(
    f.get("expect_rcode"),
    `${path}.expect_rcode`,
    Object.keys(RCODES) as readonly string[],
    "NOERROR",
    at,
  );
  return { name: name ?? "", qtype, expect_rcode: RCODES[rcode] ?? 0 };
}

/** A `udp` check's fields: what to send (`send` or `send_hex`) and what the reply must match. */
export function udpCheckOf(
  f: Map<string, Field>,
  path: string,
  node: Field["value"],
  at: Report,
): UdpCheck {
  const sends = ["send", "send_hex"].filter((k) => f.has(k));
  const expects = ["expect", "expect_regex", "expect_hex"].filter((k) => f.has(k));
  if (sends.length !== 1) {
    at(node, `${path}.send`, "a udp check sends one datagram: give send or send_hex (one of them)");
  }
  if (expects.length > 1) {
    at(
      f.get(expects[1])!.key,
      `${path}.${expects[1]}`,
      "give one of expect, expect_regex, expect_hex",
    );
  }
  const stepAt = (key: string) => {
    const field = f.get(key)!;
    const raw = text(field, `${path}.${key}`, at);
    return raw === undefined
      ? null
      : stepOf(key, raw, (reason) => at(field.value, `${path}.${key}`, reason));
  };
  const send = sends.length === 1 ? stepAt(sends[0]) : null;
  const expect = expects.length > 0 ? stepAt(expects[0]) : null;
  return {
    send_hex: send?.kind === "send" ? send.hex : "",
    expect: expect?.kind === "expect" ? { match: expect.match, value: expect.value } : null,
  };
}

/** A service's `protocol` and, for UDP, its `udp:` block (refused on a TCP service). */
export function protocolOf(
  fields: Map<string, Field>,
  key: (k: string) => string,
  at: Report,
): { protocol: "tcp" | "udp"; udp: UdpSettings | null } {
  const protocol = enumField(
    fields.get("protocol"),
    key("protocol"),
    ["tcp", "udp"] as const,
    "tcp",
    at,
  );
  if (protocol === "udp") {
    return { protocol, udp: udpSettingsOf(fields.get("udp"), key("udp"), at) };
  }
  const udpField = fields.get("udp");
  if (udpField) at(udpField.key, key("udp"), "goes with `protocol: udp`; this service is TCP");
  return { protocol, udp: null };
}

/** Where a backend was written, for messages about it. */
type BackendPlaces = { backendAt: Map<Backend, { node?: Node; path?: string }> };

/** A service's own check and PROXY version, which its backends inherit unless they set theirs. */
interface Inherited {
  check: HealthCheck;
  sendProxy: ProxyVersion | null;
}

/** Why a check of `type` does not suit a service of `protocol`, or null when it does. */
function wrongCheck(protocol: "tcp" | "udp", type: string): string | null {
  if (protocol === "udp") {
    return UDP_CHECK_TYPES.includes(type as HealthCheck["type"])
      ? null
      : `a ${type} check is for TCP; a UDP service takes dns or udp`;
  }
  return type === "dns" || type === "udp"
    ? `a ${type} check is for UDP services (protocol: udp)`
    : null;
}

/**
 * What a service of `protocol` may not have: a check type of the other
 * protocol (its own or a backend's), and for UDP, SNI routes and PROXY v1.
 */
export function refuseForProtocol(
  protocol: "tcp" | "udp",
  fields: Map<string, Field>,
  key: (k: string) => string,
  backends: readonly Backend[],
  inherited: Inherited,
  notes: BackendPlaces,
  at: Report,
): void {
  if (protocol === "udp") refuseStreamKeys(fields, key, at);
  const check = fields.get("health_check");
  const serviceWhy = wrongCheck(protocol, inherited.check.type);
  if (check && serviceWhy) at(check.key, key("health_check.type"), serviceWhy);
  for (const b of backends) {
    const place = notes.backendAt.get(b);
    const path = place?.path ?? key("backends");
    if (protocol === "udp" && b.send_proxy === "v1" && inherited.sendProxy !== "v1") {
      at(place?.node, `${path}.send_proxy`, "PROXY v1 is text for TCP; UDP takes v2");
    }
    const why = b.check === inherited.check ? null : wrongCheck(protocol, b.check.type);
    if (why) at(place?.node, `${path}.health_check.type`, why);
  }
}

/** A UDP service's keys that only a stream has: SNI routes and PROXY v1. */
function refuseStreamKeys(
  fields: Map<string, Field>,
  key: (k: string) => string,
  at: Report,
): void {
  for (const name of ["routes", "default_route"]) {
    const f = fields.get(name);
    if (f) at(f.key, key(name), "SNI routes read a TLS ClientHello, which UDP does not carry");
  }
  const send = fields.get("send_proxy");
  if (send && isScalar(send.value) && send.value.value === "v1") {
    at(
      send.value,
      key("send_proxy"),
      "PROXY v1 is text for TCP; UDP takes v2 (a header on every datagram)",
    );
  }
}
