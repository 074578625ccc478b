/**
 * A TCP service's traffic shaping: `bandwidth:` (bytes per second each
 * way, per connection or per client; also on a backend) and `mirror:` (a
 * shadow backend that gets a copy of what chosen clients send). Sizes take
 * units: `10MB` (10^6), `512KiB` (2^10), or a plain number of bytes.
 *
 * @module
 */
import { isMap, isScalar, type Node } from "./yaml.ts";
import { describeNode, enumField, type Field, intField, mapFields, type Report } from "./fields.ts";
import { formatAddress, normalizeHost } from "../net/address.ts";
import { quote } from "../text.ts";
import type { Backend, Bandwidth, Mirror, Service } from "./schema.ts";

const UNITS: Record<string, number> = {
  "": 1,
  B: 1,
  K: 1e3,
  KB: 1e3,
  M: 1e6,
  MB: 1e6,
  G: 1e9,
  GB: 1e9,
  KIB: 1024,
  MIB: 1024 ** 2,
  GIB: 1024 ** 3,
};

/** The largest size bal takes (a rate of 100 GB/s is no limit anyone means). */
const MAX_SIZE = 1e11;

/** A size such as `10MB`, `512KiB`, `1.5GB` or `4096`, in bytes; undefined when it is none. */
export function parseSize(raw: string | number): number | undefined {
  if (typeof raw === "number") return Number.isInteger(raw) && raw >= 0 ? raw : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/.exec(raw);
  const unit = m ? UNITS[m[2].toUpperCase()] : undefined;
  if (!m || unit === undefined) return undefined;
  return Math.round(Number(m[1]) * unit);
}

/** A size field: bytes, with a unit or without; `min` bytes at least. */
export function sizeField(
  field: Field | undefined,
  path: string,
  rule: { default: number; min: number },
  at: Report,
): number {
  if (!field) return rule.default;
  const raw = isScalar(field.value) ? field.value.value : undefined;
  const bytes = typeof raw === "string" || typeof raw === "number" ? parseSize(raw) : undefined;
  if (bytes !== undefined && bytes >= rule.min && bytes <= MAX_SIZE) return bytes;
  at(
    field.value ?? field.key,
    path,
    `expected a size such as 10MB, 512KiB or 65536${
      rule.min > 1 ? ` (at least ${rule.min} bytes)` : ""
    }, got ${describeNode(field.value)}`,
  );
  return rule.default;
}

/** `bandwidth:` at `path`, or null when it is not set. */
export function bandwidthOf(
  field: Field | undefined,
  path: string,
  at: Report,
): Bandwidth | null {
  if (!field) return null;
  if (!isMap(field.value)) {
    at(
      field.value ?? field.key,
      path,
      `expected a mapping such as {download_bytes_per_s: 10MB}, got ${describeNode(field.value)}`,
    );
    return null;
  }
  const f = mapFields(
    field.value,
    path,
    ["upload_bytes_per_s", "download_bytes_per_s", "per"],
    at,
  );
  const rate = (key: string) => sizeField(f.get(key), `${path}.${key}`, { default: 0, min: 1 }, at);
  const upload_bytes_per_s = rate("upload_bytes_per_s");
  const download_bytes_per_s = rate("download_bytes_per_s");
  if (!f.has("upload_bytes_per_s") && !f.has("download_bytes_per_s")) {
    at(field.value, path, "limits nothing; give upload_bytes_per_s, download_bytes_per_s or both");
  }
  const per = enumField(
    f.get("per"),
    `${path}.per`,
    ["connection", "client"] as const,
    "connection",
    at,
  );
  return { upload_bytes_per_s, download_bytes_per_s, per };
}

/** `mirror:` at `path`, or null when it is not set. */
export function mirrorOf(field: Field | undefined, path: string, at: Report): Mirror | null {
  if (!field) return null;
  if (!isMap(field.value)) {
    at(
      field.value ?? field.key,
      path,
      `expected a mapping such as {backend: "10.0.0.9:80"}, got ${describeNode(field.value)}`,
    );
    return null;
  }
  const f = mapFields(field.value, path, ["backend", "percent", "send_proxy", "buffer_bytes"], at);
  const target = mirrorTarget(f.get("backend"), `${path}.backend`, field, at);
  const send = f.get("send_proxy");
  const version = enumField(send, `${path}.send_proxy`, ["v1", "v2", "off"] as const, "off", at);
  const mirror = {
    percent: intField(f.get("percent"), `${path}.percent`, { default: 100, min: 0, max: 100 }, at),
    send_proxy: version === "off" ? null : version,
    buffer_bytes: sizeField(f.get("buffer_bytes"), `${path}.buffer_bytes`, {
      default: 1024 * 1024,
      min: 1024,
    }, at),
  };
  return target ? { ...target, ...mirror } : null;
}

/** Where a mirror is: `HOST:PORT` (an IPv6 host in brackets). */
function mirrorTarget(
  field: Field | undefined,
  path: string,
  parent: Field,
  at: Report,
): { host: string; port: number; address: string } | undefined {
  if (!field) {
    at(parent.value, path, 'missing; the shadow backend, e.g. backend: "127.0.0.1:9100"');
    return undefined;
  }
  const raw = isScalar(field.value) ? field.value.value : undefined;
  const m = typeof raw === "string" ? /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(raw.trim()) : null;
  const host = m ? normalizeHost(m[1]) : undefined;
  const port = m ? Number(m[2]) : 0;
  if (!host || port < 1 || port > 65535) {
    at(field.value, path, `${quote(String(raw))} is not HOST:PORT, e.g. "127.0.0.1:9100"`);
    return undefined;
  }
  return { host, port, address: formatAddress(host, port) };
}

/** A service's `bandwidth:` and `mirror:`; both are for TCP streams. */
export function shapingOf(
  fields: Map<string, Field>,
  key: (k: string) => string,
  protocol: "tcp" | "udp",
  backends: readonly Backend[],
  placeOf: (backend: Backend) => { node?: Node; path?: string } | undefined,
  at: Report,
): Pick<Service, "bandwidth" | "mirror"> {
  const bandwidth = bandwidthOf(fields.get("bandwidth"), key("bandwidth"), at);
  const mirror = mirrorOf(fields.get("mirror"), key("mirror"), at);
  if (protocol === "udp") {
    for (const name of ["bandwidth", "mirror"]) {
      const f = fields.get(name);
      if (f) at(f.key, key(name), "shapes TCP streams; a UDP service has none");
    }
    for (const b of backends.filter((b) => b.bandwidth)) {
      const place = placeOf(b);
      at(
        place?.node,
        `${place?.path ?? key("backends")}.bandwidth`,
        "shapes TCP streams; a UDP service has none",
      );
    }
  }
  return { bandwidth, mirror };
}
