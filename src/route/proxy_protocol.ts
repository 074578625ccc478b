/**
 * The PROXY protocol (HAProxy's, versions 1 and 2): the header a proxy
 * writes before the first byte of a connection to say whose connection it
 * is. Reading takes the bytes received so far and says whether they are a
 * whole header, the start of one, or not one; writing builds a header,
 * and for a client whose TLS bal terminated, v2's TLS fields (TLVs).
 * Pure: bytes in, bytes or a verdict out.
 *
 * @module
 */
import { ipText, ipv4Bytes, ipv6Bytes } from "../net/address.ts";
import { addressBytes } from "./acl.ts";

/** An address and port as sockets report them. */
export interface Endpoint {
  hostname: string;
  port: number;
}

/** What the bytes received so far are. */
export type ProxyParse =
  | { kind: "incomplete" }
  | { kind: "invalid"; reason: string }
  | {
    kind: "header";
    /** Bytes the header takes; what follows is the client's own data. */
    length: number;
    version: 1 | 2;
    /** The client, or null to keep the connection's own peer (v2 LOCAL, v1 UNKNOWN, other families). */
    source: Endpoint | null;
    destination: Endpoint | null;
  };

/** Longest v1 header, CRLF included (the specification's limit). */
const V1_MAX = 107;
/** Longest v2 header bal reads: 16 bytes, the addresses and room for TLVs it skips. */
export const V2_MAX = 16 + 2048;
const V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
const V1_PREFIX = [0x50, 0x52, 0x4f, 0x58, 0x59, 0x20]; // "PROXY "

/**
 * Reads a PROXY header (v1 or v2, told apart by their first bytes) at the
 * start of `buf`. A v2 header's addresses are taken when it names the
 * transport bal reads it on: a stream (TCP), or datagrams (UDP).
 */
export function parseProxyHeader(
  buf: Uint8Array,
  transport: "stream" | "dgram" = "stream",
): ProxyParse {
  if (startsLike(buf, V2_SIGNATURE)) {
    return buf.length < V2_SIGNATURE.length ? { kind: "incomplete" } : parseV2(buf, transport);
  }
  if (startsLike(buf, V1_PREFIX)) {
    return buf.length < V1_PREFIX.length ? { kind: "incomplete" } : parseV1(buf);
  }
  return { kind: "invalid", reason: "no PROXY protocol header" };
}

/** Whether `buf` and `prefix` agree on their common length. */
function startsLike(buf: Uint8Array, prefix: readonly number[]): boolean {
  const n = Math.min(buf.length, prefix.length);
  for (let i = 0; i < n; i++) if (buf[i] !== prefix[i]) return false;
  return true;
}

function parseV1(buf: Uint8Array): ProxyParse {
  const end = buf.subarray(0, Math.min(buf.length, V1_MAX)).indexOf(0x0a);
  if (end < 0) {
    return buf.length >= V1_MAX
      ? { kind: "invalid", reason: `v1 header longer than ${V1_MAX} bytes` }
      : { kind: "incomplete" };
  }
  if (end === 0 || buf[end - 1] !== 0x0d) {
    return { kind: "invalid", reason: "v1 header without CRLF" };
  }
  const line = String.fromCharCode(...buf.subarray(0, end - 1));
  const parts = line.split(" ");
  const header = { kind: "header" as const, length: end + 1, version: 1 as const };
  if (parts[1] === "UNKNOWN") return { ...header, source: null, destination: null };
  if ((parts[1] !== "TCP4" && parts[1] !== "TCP6") || parts.length !== 6) {
    return {
      kind: "invalid",
      reason: `v1 header is not TCP4, TCP6 or UNKNOWN: ${quoteLine(line)}`,
    };
  }
  const family = parts[1] === "TCP4" ? 4 : 16;
  const source = endpoint(parts[2], parts[4], family);
  const destination = endpoint(parts[3], parts[5], family);
  if (!source || !destination) {
    return { kind: "invalid", reason: `v1 header with a bad address or port: ${quoteLine(line)}` };
  }
  return { ...header, source, destination };
}

function quoteLine(line: string): string {
  return JSON.stringify(line.length > 60 ? line.slice(0, 60) + "..." : line);
}

function endpoint(address: string, port: string, family: 4 | 16): Endpoint | null {
  if (!/^(0|[1-9]\d{0,4})$/.test(port) || Number(port) > 65535) return null;
  if (family === 4) return ipv4Bytes(address) ? { hostname: address, port: Number(port) } : null;
  const bytes = ipv6Bytes(address);
  return bytes ? { hostname: ipText(bytes), port: Number(port) } : null;
}

function parseV2(buf: Uint8Array, transport: "stream" | "dgram"): ProxyParse {
  if (buf.length < 16) return { kind: "incomplete" };
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const version = buf[12] >> 4;
  const command = buf[12] & 0x0f;
  if (version !== 2) return { kind: "invalid", reason: `v2 header of version ${version}` };
  if (command > 1) return { kind: "invalid", reason: `v2 header with command ${command}` };
  const length = 16 + view.getUint16(14);
  if (length > V2_MAX) return { kind: "invalid", reason: `v2 header longer than ${V2_MAX} bytes` };
  if (buf.length < length) return { kind: "incomplete" };
  const header = { kind: "header" as const, length, version: 2 as const };
  const family = buf[13] >> 4;
  const wanted = transport === "stream" ? 1 : 2;
  // LOCAL (a proxy's own health check), other families and transports keep the socket's peer.
  if (command === 0 || (family !== 1 && family !== 2) || (buf[13] & 0x0f) !== wanted) {
    return { ...header, source: null, destination: null };
  }
  const size = family === 1 ? 4 : 16;
  if (length < 16 + size * 2 + 4) {
    return { kind: "invalid", reason: "v2 header too short for its addresses" };
  }
  const text = (at: number) => ipText(buf.subarray(at, at + size));
  return {
    ...header,
    source: { hostname: text(16), port: view.getUint16(16 + size * 2) },
    destination: { hostname: text(16 + size), port: view.getUint16(16 + size * 2 + 2) },
  };
}

/** A header read: who the client is (null: keep the socket's peer) and what followed the header. */
export interface ProxyHeaderRead {
  source: Endpoint | null;
  destination: Endpoint | null;
  rest: Uint8Array;
}

/** Room for one read while a header is awaited: the longest header bal reads, and some. */
export const HEADER_READ_MAX = V2_MAX + 512;

/**
 * Collects a client's first bytes as they arrive: each chunk in gives the
 * header (and what followed it), why there is none, or null while more
 * is needed.
 */
export function proxyHeaderReader(): (chunk: Uint8Array) => ProxyHeaderRead | string | null {
  let got = new Uint8Array(0);
  return (chunk) => {
    const joined = new Uint8Array(got.length + chunk.length);
    joined.set(got);
    joined.set(chunk, got.length);
    got = joined;
    const r = parseProxyHeader(got);
    if (r.kind === "invalid") return r.reason;
    if (r.kind === "header") {
      return { source: r.source, destination: r.destination, rest: got.slice(r.length) };
    }
    return got.length > V2_MAX ? `PROXY header longer than ${V2_MAX} bytes` : null;
  };
}

/** An IPv4 address in its canonical dotted form (no leading zeros). */
const DOTTED = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** The PROXY header version a service or backend sends. */
export type ProxyVersion = "v1" | "v2";

/**
 * The header that says a client at `source` reached bal at `destination`.
 * Both sides are written in one family: IPv4 when both are IPv4 (an
 * IPv4-mapped IPv6 address counts as IPv4), else IPv6, IPv4 ones mapped.
 * Addresses that are not IP addresses (or no destination) make the header
 * that says nothing: `PROXY UNKNOWN`, or v2's LOCAL. v2 names the
 * transport: a stream (TCP) or datagrams (UDP, a header on each one).
 */
export function writeProxyHeader(
  version: ProxyVersion,
  source: Endpoint,
  destination: Endpoint | null,
  transport: "stream" | "dgram" = "stream",
): Uint8Array {
  // The common case, per connection: addresses as sockets give them, written as they are.
  if (
    version === "v1" && destination && DOTTED.test(source.hostname) &&
    DOTTED.test(destination.hostname)
  ) {
    return new TextEncoder().encode(
      `PROXY TCP4 ${source.hostname} ${destination.hostname} ${source.port} ${destination.port}\r\n`,
    );
  }
  const src = addressBytes(source.hostname);
  const dst = destination && addressBytes(destination.hostname);
  if (!src || !dst || !destination) return unknownHeader(version);
  const v4 = src.length === 4 && dst.length === 4;
  const [a, b] = v4 ? [src, dst] : [toV6(src), toV6(dst)];
  if (version === "v1") {
    const line = `PROXY ${v4 ? "TCP4" : "TCP6"} ${ipText(a)} ${
      ipText(b)
    } ${source.port} ${destination.port}\r\n`;
    return new TextEncoder().encode(line);
  }
  const size = v4 ? 4 : 16;
  const out = new Uint8Array(16 + size * 2 + 4);
  out.set(V2_SIGNATURE);
  out[12] = 0x21; // version 2, PROXY
  // The family (IPv4 0x10, IPv6 0x20) and the transport (stream 1, datagram 2).
  out[13] = (v4 ? 0x10 : 0x20) | (transport === "dgram" ? 0x02 : 0x01);
  const view = new DataView(out.buffer);
  view.setUint16(14, size * 2 + 4);
  out.set(a, 16);
  out.set(b, 16 + size);
  view.setUint16(16 + size * 2, source.port);
  view.setUint16(16 + size * 2 + 2, destination.port);
  return out;
}

function unknownHeader(version: ProxyVersion): Uint8Array {
  if (version === "v1") return new TextEncoder().encode("PROXY UNKNOWN\r\n");
  const out = new Uint8Array(16);
  out.set(V2_SIGNATURE);
  out[12] = 0x20; // version 2, LOCAL; family UNSPEC, no addresses
  return out;
}

function toV6(bytes: Uint8Array): Uint8Array {
  if (bytes.length === 16) return bytes;
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(bytes, 12);
  return out;
}

// PROXY v2's TLS fields: what bal's TLS termination learned, for the backend.

/** What the handshake said of a client, for its backend. */
export interface TlsFacts {
  /** `TLSv1.2` or `TLSv1.3`. */
  version: string;
  /** The server name it asked for, or null. */
  sni: string | null;
  /** The protocol ALPN settled on, or null. */
  alpn: string | null;
  /** Whether it showed a certificate (one bal verified: an unverified one is refused). */
  clientCert: boolean;
  /** That certificate's common name, or null. */
  clientCn: string | null;
}

const PP2_TYPE_ALPN = 0x01;
const PP2_TYPE_AUTHORITY = 0x02;
const PP2_TYPE_SSL = 0x20;
const PP2_SUBTYPE_SSL_VERSION = 0x21;
const PP2_SUBTYPE_SSL_CN = 0x22;
/** The client connected over TLS. */
const PP2_CLIENT_SSL = 0x01;
/** It showed a certificate on this connection, and in this session. */
const PP2_CLIENT_CERT_CONN = 0x02;
const PP2_CLIENT_CERT_SESS = 0x04;

/** One TLV: type, 16-bit length, value. */
function tlv(type: number, value: Uint8Array): Uint8Array {
  const out = new Uint8Array(3 + value.length);
  out[0] = type;
  out[1] = value.length >> 8;
  out[2] = value.length & 0xff;
  out.set(value, 3);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The TLVs that carry `facts`, in the order HAProxy writes them. */
export function tlsTlvs(facts: TlsFacts): Uint8Array {
  const text = (s: string) => new TextEncoder().encode(s);
  const ssl = new Uint8Array(5);
  ssl[0] = PP2_CLIENT_SSL | (facts.clientCert ? PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS : 0);
  // verify: 0 only for a certificate shown and verified; none shown is not verified.
  new DataView(ssl.buffer).setUint32(1, facts.clientCert ? 0 : 1);
  const sub = [tlv(PP2_SUBTYPE_SSL_VERSION, text(facts.version))];
  if (facts.clientCn) sub.push(tlv(PP2_SUBTYPE_SSL_CN, text(facts.clientCn)));
  const parts: Uint8Array[] = [];
  if (facts.alpn) parts.push(tlv(PP2_TYPE_ALPN, text(facts.alpn)));
  if (facts.sni) parts.push(tlv(PP2_TYPE_AUTHORITY, text(facts.sni)));
  parts.push(tlv(PP2_TYPE_SSL, concat([ssl, ...sub])));
  return concat(parts);
}

/**
 * A v2 header with `tlvs` appended: its length field grown by theirs. A v1
 * header has no room for them and is returned as it is.
 */
export function withTlvs(header: Uint8Array, tlvs: Uint8Array): Uint8Array {
  if (header.length < 16 || header[12] >> 4 !== 2) return header;
  const out = concat([header, tlvs]);
  const view = new DataView(out.buffer);
  view.setUint16(14, view.getUint16(14) + tlvs.length);
  return out;
}
