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
/** A DNS name: labels of letters, digits, hyphens and underscores (seen in the wild). */
const HOSTNAME =
  /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

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
  const body = handshakeBytes(buf);
  if (typeof body === "string") return none(body);
  if (body.length < 4) return null;
  if (body[0] !== CLIENT_HELLO) return none("the first handshake message is not a ClientHello");
  const length = (body[1] << 16) | (body[2] << 8) | body[3];
  if (length > HELLO_MAX) return none(`ClientHello of ${length} bytes is over ${HELLO_MAX}`);
  if (body.length < 4 + length) return null;
  const sni = serverName(body.subarray(4, 4 + length));
  return typeof sni === "string" && sni.startsWith("!")
    ? none(sni.slice(1))
    : { kind: "hello", sni };
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

/**
 * A ClientHello body's host name, null without one, or a reason prefixed
 * with `!` when the body does not parse.
 */
function serverName(hello: Uint8Array): string | null {
  const r = reader(hello);
  r.skip(2 + 32); // legacy_version, random
  r.skip(r.u8()); // legacy_session_id
  r.skip(r.u16()); // cipher_suites
  r.skip(r.u8()); // legacy_compression_methods
  if (r.failed()) return "!ClientHello truncated before its extensions";
  // TLS 1.2 allows a ClientHello without any extensions.
  if (r.left() === 0) return null;
  const end = r.u16() + r.pos();
  if (end > hello.length) return "!extensions longer than the ClientHello";
  while (r.pos() < end) {
    const type = r.u16();
    const size = r.u16();
    if (r.failed() || r.pos() + size > end) return "!an extension longer than the extensions";
    if (type === EXT_SERVER_NAME) return hostName(hello.subarray(r.pos(), r.pos() + size));
    r.skip(size);
  }
  return null;
}

/** The host_name entry of a server_name extension (RFC 6066 §3), lowercased. */
function hostName(ext: Uint8Array): string | null {
  const r = reader(ext);
  const end = r.u16() + r.pos();
  if (end > ext.length) return "!server_name list longer than its extension";
  while (r.pos() < end) {
    const type = r.u8();
    const size = r.u16();
    if (r.failed() || r.pos() + size > end) return "!server_name entry longer than its list";
    if (type === HOST_NAME) {
      let name = "";
      for (const byte of ext.subarray(r.pos(), r.pos() + size)) name += String.fromCharCode(byte);
      name = name.toLowerCase().replace(/\.$/, "");
      return HOSTNAME.test(name) ? name : `!server name ${JSON.stringify(name)} is not a DNS name`;
    }
    r.skip(size);
  }
  return null;
}

/** A bounds-checked big-endian cursor: reads past the end give 0 and mark it failed. */
function reader(buf: Uint8Array) {
  let at = 0;
  let over = false;
  const take = (n: number) => {
    if (at + n > buf.length) over = true;
    at = Math.min(at + n, buf.length);
    return at - n;
  };
  return {
    u8: () => over || at + 1 > buf.length ? (take(1), 0) : buf[take(1)],
    u16: () => {
      if (over || at + 2 > buf.length) return take(2), 0;
      const i = take(2);
      return (buf[i] << 8) | buf[i + 1];
    },
    skip: (n: number) => void take(n),
    pos: () => at,
    left: () => buf.length - at,
    failed: () => over,
  };
}
