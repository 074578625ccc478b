/**
 * TLS at the balancer: `tls:` on a service (bal terminates its clients'
 * TLS; the backends receive plain bytes) and `backend_tls:` on a service
 * or a backend (bal speaks TLS to the backends). Certificate, key and CA
 * files are read here, relative to the config file's directory, so a
 * reload reads them again; whether they hold what they should is
 * `certificates.ts`'s, once the file is read.
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
  mapFields,
  type Report,
} from "./fields.ts";
import type { ConfigLocation } from "../errors.ts";
import type { BackendTls, TlsCertificate, TlsTerminate } from "./schema.ts";
import type { RoutesRead } from "./routes.ts";

/** A PEM file as read, and where the config names it. */
export interface PemRead {
  /** Its key path, e.g. `services[0].tls.certificates[0].cert_file`. */
  path: string;
  location: ConfigLocation;
  file: string;
  pem: string;
}

/** What the certificate checks (`certificates.ts`) look at once the file is read. */
export type PemCheck =
  | { kind: "pair"; cert: PemRead; key: PemRead }
  | { kind: "ca"; ca: PemRead };

/** How files are found, and what was read for the certificate checks. */
export interface TlsFiles {
  /** The config file's directory, with a trailing slash. */
  dir: string;
  at: Report;
  /** Remembers a file read, for the certificate checks. */
  read(check: PemCheck): void;
  /** Where a node is. */
  locate(node: Node | null | undefined): ConfigLocation;
}

const TLS_KEYS = [
  "certificates",
  "min_version",
  "alpn",
  "client_ca_file",
  "client_auth",
  "handshake_timeout_ms",
];
const BACKEND_TLS_KEYS = ["server_name", "ca_file", "verify", "cert_file", "key_file"];

/** Whether `field` holds a mapping; when not, says so with an `example` of one. */
function mapping(
  field: Field,
  path: string,
  example: string,
  at: Report,
): field is Field & { value: Node } {
  if (isMap(field.value)) return true;
  at(
    field.value ?? field.key,
    path,
    `expected a mapping such as ${example}, got ${describeNode(field.value)}`,
  );
  return false;
}

/** `tls:` at `path`, or null when it is not set. */
export function tlsOf(
  field: Field | undefined,
  path: string,
  files: TlsFiles,
): TlsTerminate | null {
  const { at } = files;
  if (
    !field || !mapping(field, path, "{certificates: [{cert_file: a.crt, key_file: a.key}]}", at)
  ) {
    return null;
  }
  const f = mapFields(field.value, path, TLS_KEYS, at);
  const certificates = certificatesOf(f.get("certificates"), `${path}.certificates`, files);
  if (!f.has("certificates")) {
    at(field.value, `${path}.certificates`, "missing; e.g. [{cert_file: a.crt, key_file: a.key}]");
  }
  const caField = f.get("client_ca_file");
  const client_ca = caField ? caFile(caField, `${path}.client_ca_file`, files) : null;
  const auth = f.get("client_auth");
  if (auth && !caField) {
    at(
      auth.key,
      `${path}.client_auth`,
      "needs client_ca_file: the CAs client certificates are checked against",
    );
  }
  return {
    certificates,
    min_version: versionOf(f.get("min_version"), `${path}.min_version`, at),
    alpn: alpnOf(f.get("alpn"), `${path}.alpn`, at),
    client_ca,
    client_auth: enumField(
      auth,
      `${path}.client_auth`,
      ["required", "optional"] as const,
      "required",
      at,
    ),
    handshake_timeout_ms: intField(f.get("handshake_timeout_ms"), `${path}.handshake_timeout_ms`, {
      default: 5000,
      min: 1,
      max: 600_000,
    }, at),
    route_certificates: {},
  };
}

/** A `certificates:` list: each `{cert_file, key_file}`, read. */
export function certificatesOf(
  field: Field | undefined,
  path: string,
  files: TlsFiles,
): TlsCertificate[] {
  if (!field) return [];
  if (!isSeq(field.value) || field.value.items.length === 0) {
    files.at(
      field.value ?? field.key,
      path,
      `expected a non-empty list such as [{cert_file: a.crt, key_file: a.key}], got ${
        describeNode(field.value)
      }`,
    );
    return [];
  }
  const out: TlsCertificate[] = [];
  field.value.items.forEach((item, i) => {
    const here = `${path}[${i}]`;
    if (!isMap(item)) {
      files.at(
        item as Node,
        here,
        `expected {cert_file, key_file}, got ${describeNode(item as Node)}`,
      );
      return;
    }
    const pair = pairOf(
      mapFields(item, here, ["cert_file", "key_file"], files.at),
      item,
      here,
      files,
    );
    if (pair) out.push(pair);
  });
  return out;
}

/** A certificate and its key, both required. */
function pairOf(
  f: Map<string, Field>,
  node: Node,
  path: string,
  files: TlsFiles,
): TlsCertificate | undefined {
  for (const k of ["cert_file", "key_file"]) {
    if (!f.has(k)) files.at(node, `${path}.${k}`, "missing; a PEM file path");
  }
  const cert = f.get("cert_file") && pemFile(f.get("cert_file")!, `${path}.cert_file`, files);
  const key = f.get("key_file") && pemFile(f.get("key_file")!, `${path}.key_file`, files);
  if (!cert || !key) return undefined;
  files.read({ kind: "pair", cert, key });
  return { cert_file: cert.file, key_file: key.file, cert_pem: cert.pem, key_pem: key.pem };
}

/** A PEM file named at `path`: its absolute path and text, or undefined when unreadable (said). */
function pemFile(
  field: Field,
  path: string,
  files: TlsFiles,
): PemRead | undefined {
  const raw = isScalar(field.value) ? field.value.value : undefined;
  if (typeof raw !== "string" || raw.trim() === "") {
    files.at(
      field.value ?? field.key,
      path,
      `expected a file path, got ${describeNode(field.value)}`,
    );
    return undefined;
  }
  const file = raw.startsWith("/") ? raw : `${files.dir}${raw}`;
  try {
    return { path, location: files.locate(field.value), file, pem: Deno.readTextFileSync(file) };
  } catch (err) {
    const why = err instanceof Deno.errors.NotFound
      ? "not found"
      : err instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : err instanceof Error
      ? err.message
      : String(err);
    files.at(field.value, path, `cannot read ${file}: ${why}`);
    return undefined;
  }
}

/** A CA file: its path and text, or null when unreadable (said). */
function caFile(field: Field, path: string, files: TlsFiles): { file: string; pem: string } | null {
  const ca = pemFile(field, path, files);
  if (!ca) return null;
  files.read({ kind: "ca", ca });
  return { file: ca.file, pem: ca.pem };
}

/** `min_version`: "1.2" or "1.3" (YAML reads them as numbers unless quoted; both are taken). */
function versionOf(field: Field | undefined, path: string, at: Report): "1.2" | "1.3" {
  if (!field) return "1.2";
  const raw = isScalar(field.value) ? String(field.value.value) : "";
  if (raw === "1.2" || raw === "1.3") return raw;
  at(field.value ?? field.key, path, `expected "1.2" or "1.3", got ${describeNode(field.value)}`);
  return "1.2";
}

/** `alpn`: protocol names such as h2 and http/1.1, each 1-255 bytes. */
function alpnOf(field: Field | undefined, path: string, at: Report): string[] {
  if (!field) return [];
  const items = isSeq(field.value) ? field.value.items : null;
  const names = items?.map((n) => isScalar(n) ? n.value : undefined) ?? [];
  const bad = !items || items.length === 0 ||
    names.some((v) => typeof v !== "string" || v.length === 0 || v.length > 255);
  if (!bad) return names as string[];
  at(
    field.value ?? field.key,
    path,
    `expected a list of protocols such as [h2, http/1.1], got ${describeNode(field.value)}`,
  );
  return [];
}

/** `backend_tls:` at `path` (on a service or a backend), or null when it is not set. */
export function backendTlsOf(
  field: Field | undefined,
  path: string,
  files: TlsFiles,
): BackendTls | null {
  const { at } = files;
  if (!field || !mapping(field, path, "{ca_file: ca.crt}", at)) return null;
  const f = mapFields(field.value, path, BACKEND_TLS_KEYS, at);
  const name = f.get("server_name");
  const rawName = name && isScalar(name.value) ? name.value.value : undefined;
  if (name && (typeof rawName !== "string" || !/^[A-Za-z0-9.-]{1,253}$/.test(rawName))) {
    at(
      name.value ?? name.key,
      `${path}.server_name`,
      `expected a host name, got ${describeNode(name.value)}`,
    );
  }
  const ca = f.get("ca_file") ? caFile(f.get("ca_file")!, `${path}.ca_file`, files) : null;
  const wantsCert = f.has("cert_file") || f.has("key_file");
  return {
    server_name: typeof rawName === "string" ? rawName.toLowerCase() : null,
    ca,
    verify: boolField(f.get("verify"), `${path}.verify`, true, at),
    certificate: wantsCert ? pairOf(f, field.value, path, files) ?? null : null,
  };
}

/** A service's `tls:` with its routes' own certificates; a UDP service has none. */
export function serviceTlsOf(
  fields: Map<string, Field>,
  key: (k: string) => string,
  routeCertificates: RoutesRead["certificates"],
  protocol: "tcp" | "udp",
  files: TlsFiles,
): TlsTerminate | null {
  const field = fields.get("tls");
  const tls = tlsOf(field, key("tls"), files);
  for (const name of ["tls", "backend_tls"]) {
    const f = fields.get(name);
    if (f && protocol === "udp") {
      files.at(f.key, key(name), "is for TCP streams; a UDP service has none");
    }
  }
  const route_certificates: Record<string, TlsCertificate[]> = {};
  for (const { route, field: certs, path } of routeCertificates) {
    if (!tls) {
      files.at(
        certs.key,
        path,
        "needs the service's `tls:`: a route's own certificates are for TLS bal terminates",
      );
    }
    route_certificates[route] = certificatesOf(certs, path, files);
  }
  return tls && { ...tls, route_certificates };
}
