/**
 * Reading the server name (SNI) out of a TLS ClientHello without
 * decrypting anything (RFC 8446 §4.1.2, RFC 6066 §3). Pure: bytes in, a
 * name or a reason out. The reader is incremental because a ClientHello
 * may arrive over several TCP segments and several TLS records; what it
 * read is returned unchanged, so the backend completes the handshake.
 *
 * With Encrypted Client Hello the name read is the outer one (the public
 * name), which is what a passthrough balancer can see.
 *
 * @module
 */

/** The most bytes read while waiting for a ClientHello (records and headers included). */
export const HELLO_MAX = 16 * 1024;

/** TLS record layer: content type, version, length. */
const RECORD_HEADER = 5;
const HANDSHAKE = 0x16;
const CLIENT_HELLO = 0x01;
/** Largest TLSPlaintext fragment (2^14). */
const RECORD_MAX = 16384;
const EXT_SERVER_NAME = 0x0000;
const HOST_NAME = 0;

/** What the first bytes of a connection held. */
export type HelloRead =
  /** A whole ClientHello: its server name (lowercase), or null when it sent none. */
  | { readonly kind: "hello"; readonly sni: string | null }
  /** Not a ClientHello (not TLS, malformed, too long): why. */
  | { readonly kind: "none"; readonly reason: string };

/**
 * Looks at the bytes a client sent so far: the ClientHello's server name,
 * why they are not a ClientHello, or null while more bytes are needed.
 */
export function parseClientHello(buf: Uint8Array): HelloRead | null {
  const read = helloIn(buf);
  return read === null && buf.length >= HELLO_MAX
    ? none(`no complete ClientHello in ${HELLO_MAX} bytes`)
    : read;
}

function helloIn(buf: Uint8Array): HelloRead | null {
  if (buf.length === 0) return null;
  if (buf[0] !== HANDSHAKE) return none("not TLS (the first byte is not a handshake record)");
  // The usual case, read without copying: the whole ClientHello in the first record.
  if (buf.length >= RECORD_HEADER + 4 && buf[1] === 3 && buf[5] === CLIENT_HELLO) {
    const record = (buf[3] << 8) | buf[4];
    const length = (buf[6] << 16) | (buf[7] << 8) | buf[8];
    const end = RECORD_HEADER + 4 + length;
    if (record <= RECORD_MAX && 4 + length <= record && end <= buf.length) {
      return verdict(serverName(buf, RECORD_HEADER + 4, end));
    }
  }
  const body = handshakeBytes(buf);
  if (typeof body === "string") return none(body);
  if (body.length < 4) return null;
  if (body[0] !== CLIENT_HELLO) return none("the first handshake message is not a ClientHello");
  const length = (body[1] << 16) | (body[2] << 8) | body[3];
  if (length > HELLO_MAX) return none(`ClientHello of ${length} bytes is over ${HELLO_MAX}`);
  if (body.length < 4 + length) return null;
  return verdict(serverName(body, 4, 4 + length));
}

/** What {@link serverName} found, as a HelloRead. */
function verdict(sni: string | null): HelloRead {
  return sni !== null && sni.startsWith("!") ? none(sni.slice(1)) : { kind: "hello", sni };
}

function none(reason: string): HelloRead {
  return { kind: "none", reason };
}

/**
 * The handshake bytes carried by the complete records at the start of
 * `buf`, joined, up to the record that completes the first message (what
 * follows, such as TLS 1.3's early data, is not looked at); or why the
 * records are not a handshake.
 */
function handshakeBytes(buf: Uint8Array): Uint8Array | string {
  const parts: Uint8Array[] = [];
  let got = 0;
  let at = 0;
  while (at + RECORD_HEADER <= buf.length && !(got >= 4 && got >= 4 + messageLength(parts))) {
    if (buf[at] !== HANDSHAKE) return "a record other than handshake inside the ClientHello";
    if (buf[at + 1] !== 3) return "not TLS (record version is not 3.x)";
    const length = (buf[at + 3] << 8) | buf[at + 4];
    if (length === 0 || length > RECORD_MAX) return `a record of ${length} bytes`;
    if (at + RECORD_HEADER + length > buf.length) break;
    parts.push(buf.subarray(at + RECORD_HEADER, at + RECORD_HEADER + length));
    got += length;
    at += RECORD_HEADER + length;
  }
  if (parts.length === 1) return parts[0];
  const joined = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    joined.set(p, o);
    o += p.length;
  }
  return joined;
}

/** The length a handshake message's header (its first 4 bytes, over `parts`) gives. */
function messageLength(parts: readonly Uint8Array[]): number {
  const head: number[] = [];
  for (const p of parts) {
    for (const byte of p) {
      if (head.length === 4) break;
      head.push(byte);
    }
  }
  return (head[1] << 16) | (head[2] << 8) | head[3];
}

/** Big-endian 16 bits at `at`. */
function u16(b: Uint8Array, at: number): number {
  return (b[at] << 8) | b[at + 1];
}

/**
 * The host name in the ClientHello body `b[start..end)`, null without one,
 * or a reason prefixed with `!` when the body does not parse. Every offset
 * is checked against `end` before it is read.
 */
function serverName(b: Uint8Array, start: number, end: number): string | null {
  // legacy_version and random, then the session id, cipher suites and compression methods.
  let at = start + 2 + 32;
  if (at + 1 > end) return "!ClientHello truncated before its session id";
  at += 1 + b[at];
  if (at + 2 > end) return "!ClientHello truncated before its cipher suites";
  at += 2 + u16(b, at);
  if (at + 1 > end) return "!ClientHello truncated before its compression methods";
  at += 1 + b[at];
  if (at > end) return "!ClientHello truncated before its extensions";
  // TLS 1.2 allows a ClientHello without any extensions.
  if (at === end) return null;
  if (at + 2 > end) return "!ClientHello truncated in its extensions' length";
  const last = at + 2 + u16(b, at);
  if (last > end) return "!extensions longer than the ClientHello";
  for (at += 2; at + 4 <= last;) {
    const type = u16(b, at);
    const size = u16(b, at + 2);
    at += 4;
    if (at + size > last) return "!an extension longer than the extensions";
    if (type === EXT_SERVER_NAME) return hostName(b, at, at + size);
    at += size;
  }
  return at === last ? null : "!extensions end inside an extension header";
}

/** The host_name entry of a server_name extension `b[start..end)` (RFC 6066 §3), lowercased. */
function hostName(b: Uint8Array, start: number, end: number): string | null {
  if (start + 2 > end) return "!server_name list cut short";
  const last = start + 2 + u16(b, start);
  if (last > end) return "!server_name list longer than its extension";
  for (let at = start + 2; at + 3 <= last;) {
    const type = b[at];
    const size = u16(b, at + 1);
    at += 3;
    if (at + size > last) return "!server_name entry longer than its list";
    if (type === HOST_NAME) return dnsName(b, at, at + size);
    at += size;
  }
  return null;
}

const DOT = 0x2e;
const HYPHEN = 0x2d;
const UNDERSCORE = 0x5f;

/**
 * The DNS name in `b[start..end)`, lowercased, without its trailing dot:
 * labels of 1-63 letters, digits, hyphens and underscores (seen in the
 * wild), not starting or ending with a hyphen, 253 characters at most; or
 * "!why". One pass over the bytes and one string: every routed client
 * comes through here.
 */
function dnsName(b: Uint8Array, start: number, end: number): string {
  const stop = end > start && b[end - 1] === DOT ? end - 1 : end;
  let ok = stop - start >= 1 && stop - start <= 253;
  let label = 0;
  let upper = false;
  for (let i = start; ok && i < stop; i++) {
    const c = b[i] | (b[i] >= 0x41 && b[i] <= 0x5a ? 0x20 : 0);
    if (c !== b[i]) upper = true;
    if (c === DOT) {
      ok = label > 0 && b[i - 1] !== HYPHEN;
      label = 0;
    } else {
      ok = ++label <= 63 && ((c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) ||
        c === UNDERSCORE || (c === HYPHEN && label > 1));
    }
  }
  ok = ok && label > 0 && b[stop - 1] !== HYPHEN;
  const name = String.fromCharCode.apply(null, b.subarray(start, stop) as unknown as number[]);
  if (!ok) return `!server name ${JSON.stringify(name.toLowerCase())} is not a DNS name`;
  return upper ? name.toLowerCase() : name;
}
