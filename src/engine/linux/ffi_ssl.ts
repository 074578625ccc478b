/**
 * The module that loads OpenSSL (libssl.so.3 and libcrypto.so.3), the TLS
 * stack HAProxy and nginx run on, for the epoll engine's TLS termination
 * (../epoll/tls_accept.ts); the only code that calls it. Every buffer
 * handed to OpenSSL is checked against the length passed with it.
 *
 * No callback into JavaScript is ever given to OpenSSL: Deno's callbacks
 * need an unscoped `--allow-ffi`, and the release binary scopes it to the
 * libraries it loads. So the certificate for a server name is chosen
 * before the handshake (from the peeked ClientHello), and ALPN, which
 * OpenSSL offers only through a callback, stays on `node:tls`.
 *
 * Strings OpenSSL returns are read by copying them with libc (ffi.ts), as
 * the rest of bal's FFI does: pointer views need an unscoped `--allow-ffi`.
 *
 * @module
 */
import { checkRange, copyFrom, libc, ret } from "./ffi.ts";

const SSL_SYMBOLS = {
  TLS_server_method: { parameters: [], result: "pointer" },
  SSL_CTX_new: { parameters: ["pointer"], result: "pointer" },
  SSL_CTX_free: { parameters: ["pointer"], result: "void" },
  SSL_CTX_ctrl: { parameters: ["pointer", "i32", "i64", "pointer"], result: "i64" },
  SSL_CTX_set_options: { parameters: ["pointer", "u64"], result: "u64" },
  SSL_CTX_use_certificate: { parameters: ["pointer", "pointer"], result: "i32" },
  SSL_CTX_use_PrivateKey: { parameters: ["pointer", "pointer"], result: "i32" },
  SSL_CTX_check_private_key: { parameters: ["pointer"], result: "i32" },
  SSL_CTX_set_verify: { parameters: ["pointer", "i32", "pointer"], result: "void" },
  SSL_CTX_get_cert_store: { parameters: ["pointer"], result: "pointer" },
  SSL_CTX_get0_certificate: { parameters: ["pointer"], result: "pointer" },
  SSL_new: { parameters: ["pointer"], result: "pointer" },
  SSL_free: { parameters: ["pointer"], result: "void" },
  SSL_set_fd: { parameters: ["pointer", "i32"], result: "i32" },
  SSL_set_rfd: { parameters: ["pointer", "i32"], result: "i32" },
  SSL_set0_rbio: { parameters: ["pointer", "pointer"], result: "void" },
  SSL_set_accept_state: { parameters: ["pointer"], result: "void" },
  SSL_set_num_tickets: { parameters: ["pointer", "usize"], result: "i32" },
  SSL_do_handshake: { parameters: ["pointer"], result: "i32" },
  SSL_get_error: { parameters: ["pointer", "i32"], result: "i32" },
  SSL_read: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  SSL_peek: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  SSL_write: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  SSL_shutdown: { parameters: ["pointer"], result: "i32" },
  SSL_get_servername: { parameters: ["pointer", "i32"], result: "usize" },
  SSL_get_version: { parameters: ["pointer"], result: "usize" },
  SSL_get1_peer_certificate: { parameters: ["pointer"], result: "pointer" },
  SSL_get_verify_result: { parameters: ["pointer"], result: "i64" },
} as const;

const CRYPTO_SYMBOLS = {
  BIO_new: { parameters: ["pointer"], result: "pointer" },
  BIO_s_mem: { parameters: [], result: "pointer" },
  BIO_write: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  BIO_ctrl: { parameters: ["pointer", "i32", "i64", "pointer"], result: "i64" },
  BIO_free: { parameters: ["pointer"], result: "i32" },
  PEM_read_bio_X509: {
    parameters: ["pointer", "pointer", "pointer", "pointer"],
    result: "pointer",
  },
  PEM_read_bio_PrivateKey: {
    parameters: ["pointer", "pointer", "pointer", "pointer"],
    result: "pointer",
  },
  X509_free: { parameters: ["pointer"], result: "void" },
  EVP_PKEY_free: { parameters: ["pointer"], result: "void" },
  X509_STORE_add_cert: { parameters: ["pointer", "pointer"], result: "i32" },
  X509_get_subject_name: { parameters: ["pointer"], result: "pointer" },
  X509_NAME_get_text_by_NID: { parameters: ["pointer", "i32", "buffer", "i32"], result: "i32" },
  X509_check_host: {
    parameters: ["pointer", "buffer", "usize", "u32", "pointer"],
    result: "i32",
  },
  X509_verify_cert_error_string: { parameters: ["i64"], result: "usize" },
  ERR_get_error: { parameters: [], result: "u64" },
  ERR_error_string_n: { parameters: ["u64", "buffer", "usize"], result: "void" },
  ERR_clear_error: { parameters: [], result: "void" },
} as const;

/** Where OpenSSL 3 lives, by architecture (Debian's multiarch paths, then the loader's search). */
const PATHS: Record<string, { ssl: string[]; crypto: string[] }> = {
  x86_64: {
    ssl: ["/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib64/libssl.so.3", "libssl.so.3"],
    crypto: ["/lib/x86_64-linux-gnu/libcrypto.so.3", "/usr/lib64/libcrypto.so.3", "libcrypto.so.3"],
  },
  aarch64: {
    ssl: ["/lib/aarch64-linux-gnu/libssl.so.3", "/usr/lib64/libssl.so.3", "libssl.so.3"],
    crypto: [
      "/lib/aarch64-linux-gnu/libcrypto.so.3",
      "/usr/lib64/libcrypto.so.3",
      "libcrypto.so.3",
    ],
  },
};

type Ssl = Deno.DynamicLibrary<typeof SSL_SYMBOLS>["symbols"];
type Crypto = Deno.DynamicLibrary<typeof CRYPTO_SYMBOLS>["symbols"];

let ssl: Ssl | null = null;
let crypto: Crypto | null = null;
let problem: string | null | undefined;

function open<S extends Deno.ForeignLibraryInterface>(paths: string[], symbols: S) {
  let last: unknown;
  for (const path of paths) {
    try {
      return Deno.dlopen(path, symbols).symbols;
    } catch (err) {
      last = err;
    }
  }
  throw last;
}

/**
 * Loads OpenSSL once per thread (libc must be loaded): null when it runs
 * here, else why not (not installed, not OpenSSL 3, or `--allow-ffi` does
 * not name it).
 */
export function loadSsl(): string | null {
  if (problem !== undefined) return problem;
  const paths = PATHS[Deno.build.arch];
  try {
    if (Deno.build.os !== "linux" || !paths) throw new Error(`not on ${Deno.build.target}`);
    crypto = open(paths.crypto, CRYPTO_SYMBOLS) as unknown as Crypto;
    ssl = open(paths.ssl, SSL_SYMBOLS) as unknown as Ssl;
    problem = null;
  } catch (err) {
    problem = `cannot load OpenSSL 3: ${err instanceof Error ? err.message : err}`;
  }
  return problem;
}

function lib(): { ssl: Ssl; crypto: Crypto } {
  if (!ssl || !crypto) throw new Error("OpenSSL is not loaded: call loadSsl() first");
  return { ssl, crypto };
}

/** An SSL_CTX: the certificate, key and settings new handshakes start from. */
export type Context = NonNullable<Deno.PointerValue>;
/** One connection's TLS (an SSL). */
export type Tls = NonNullable<Deno.PointerValue>;

const SSL_CTRL_MODE = 33;
const SSL_CTRL_SET_READ_AHEAD = 41;
const SSL_CTRL_CHAIN_CERT = 89;
const SSL_CTRL_SET_MIN_PROTO_VERSION = 123;
/** SSL_write may take part of a buffer (as send does), the rest given again from elsewhere. */
const MODES = 0x1 | 0x2 | 0x10; // ENABLE_PARTIAL_WRITE | ACCEPT_MOVING_WRITE_BUFFER | RELEASE_BUFFERS
/**
 * A peer that closes without close_notify is an end of stream, as TCP's
 * FIN is (OpenSSL 3 calls it an error otherwise); renegotiation is refused.
 */
const OPTIONS = (1n << 7n) | (1n << 30n); // IGNORE_UNEXPECTED_EOF | NO_RENEGOTIATION
const VERSIONS = { "1.2": 0x0303, "1.3": 0x0304 } as const;
const VERIFY_PEER = 0x1;
const VERIFY_FAIL_IF_NO_PEER_CERT = 0x2;
const BIO_C_SET_BUF_MEM_EOF_RETURN = 130;
const BIO_CTRL_PENDING = 10;
const NID_COMMON_NAME = 13;

/** SSL_get_error's answers bal tells apart. */
export const SSL_ERROR = { SSL: 1, WANT_READ: 2, WANT_WRITE: 3, SYSCALL: 5, ZERO_RETURN: 6 };

/** What a server context is made of. */
export interface ContextSpec {
  /** The certificate first, then its chain, in PEM. */
  certPem: string;
  keyPem: string;
  minVersion: "1.2" | "1.3";
  /** CAs client certificates must chain to, in PEM, or null: none asked for. */
  clientCaPem: string | null;
  /** With a CA: a client without a certificate fails the handshake. */
  clientCertRequired: boolean;
}

/** A server context for `spec`; throws an Error naming what OpenSSL refused. */
export function serverContext(spec: ContextSpec): Context {
  const { ssl } = lib();
  const ctx = ssl.SSL_CTX_new(ssl.TLS_server_method());
  if (!ctx) throw new Error(`SSL_CTX_new: ${lastError() ?? "no reason given"}`);
  try {
    ssl.SSL_CTX_ctrl(ctx, SSL_CTRL_MODE, BigInt(MODES), null);
    ssl.SSL_CTX_set_options(ctx, OPTIONS);
    // Records are read from the socket as many as fit in one recv, not header then body.
    ssl.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_READ_AHEAD, 1n, null);
    ssl.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, BigInt(VERSIONS[spec.minVersion]), null);
    useCertificates(ctx, spec.certPem);
    const key = readPem(spec.keyPem, "key")[0];
    const used = ssl.SSL_CTX_use_PrivateKey(ctx, key);
    lib().crypto.EVP_PKEY_free(key);
    if (used !== 1 || ssl.SSL_CTX_check_private_key(ctx) !== 1) {
      throw new Error(`the key does not fit the certificate: ${lastError() ?? "no reason given"}`);
    }
    if (spec.clientCaPem !== null) trustClientCas(ctx, spec);
    return ctx;
  } catch (err) {
    ssl.SSL_CTX_free(ctx);
    throw err;
  }
}

const X509_CHECK_FLAG_NO_WILDCARDS = 0x2;

/**
 * Whether the certificate of `ctx` is for `name` (its DNS names, or its
 * common name when it has none): `exact` takes names as written, else a
 * `*.` wildcard may match one label.
 */
export function certificateFor(ctx: Context, name: string, exact: boolean): boolean {
  const { ssl, crypto } = lib();
  const cert = ssl.SSL_CTX_get0_certificate(ctx);
  const bytes = new TextEncoder().encode(name);
  if (!cert || bytes.length === 0) return false;
  const flags = exact ? X509_CHECK_FLAG_NO_WILDCARDS : 0;
  return crypto.X509_check_host(cert, bytes, BigInt(bytes.length), flags, null) === 1;
}

/** Frees a context; connections made from it keep their own reference. */
export function freeContext(ctx: Context): void {
  lib().ssl.SSL_CTX_free(ctx);
}

function useCertificates(ctx: Context, pem: string): void {
  const { ssl } = lib();
  const [leaf, ...chain] = readPem(pem, "cert");
  const used = ssl.SSL_CTX_use_certificate(ctx, leaf);
  lib().crypto.X509_free(leaf);
  if (used !== 1) {
    for (const c of chain) lib().crypto.X509_free(c);
    throw new Error(`the certificate was refused: ${lastError() ?? "no reason given"}`);
  }
  // add0: the context owns each chain certificate from here on.
  for (const c of chain) ssl.SSL_CTX_ctrl(ctx, SSL_CTRL_CHAIN_CERT, 0n, c);
}

function trustClientCas(ctx: Context, spec: ContextSpec): void {
  const { ssl, crypto } = lib();
  const store = ssl.SSL_CTX_get_cert_store(ctx);
  for (const ca of readPem(spec.clientCaPem!, "cert")) {
    crypto.X509_STORE_add_cert(store, ca);
    crypto.X509_free(ca);
  }
  const mode = VERIFY_PEER | (spec.clientCertRequired ? VERIFY_FAIL_IF_NO_PEER_CERT : 0);
  ssl.SSL_CTX_set_verify(ctx, mode, null);
}

/** Every certificate (or the one key) of a PEM text, as OpenSSL objects the caller frees. */
function readPem(pem: string, kind: "cert" | "key"): NonNullable<Deno.PointerValue>[] {
  const { crypto } = lib();
  const bio = memoryBio(new TextEncoder().encode(pem));
  const out: NonNullable<Deno.PointerValue>[] = [];
  try {
    for (;;) {
      const read = kind === "cert"
        ? crypto.PEM_read_bio_X509(bio, null, null, null)
        : crypto.PEM_read_bio_PrivateKey(bio, null, null, null);
      if (!read) break;
      out.push(read);
      if (kind === "key") break;
    }
  } finally {
    crypto.BIO_free(bio);
    crypto.ERR_clear_error();
  }
  if (out.length === 0) throw new Error(`no PEM ${kind === "cert" ? "certificate" : "key"} found`);
  return out;
}

/** A memory BIO holding a copy of `bytes`; empty, it asks to retry (as a socket with nothing). */
function memoryBio(bytes: Uint8Array): NonNullable<Deno.PointerValue> {
  const { crypto } = lib();
  const bio = crypto.BIO_new(crypto.BIO_s_mem());
  if (!bio) throw new Error(`BIO_new: ${lastError() ?? "no reason given"}`);
  checkRange(bytes, bytes.length);
  if (bytes.length > 0 && crypto.BIO_write(bio, bytes, bytes.length) !== bytes.length) {
    crypto.BIO_free(bio);
    throw new Error(`BIO_write: ${lastError() ?? "no reason given"}`);
  }
  crypto.BIO_ctrl(bio, BIO_C_SET_BUF_MEM_EOF_RETURN, -1n, null);
  return bio;
}

/**
 * A server-side TLS for the accepted socket `fd`, from `ctx`. `early`:
 * bytes of the handshake read off the socket already (after a PROXY
 * header); OpenSSL reads them first, then the socket ({@link handshake}).
 * Null when OpenSSL is out of memory.
 */
export function accepting(ctx: Context, fd: number, early: Uint8Array | null): Tls | null {
  const { ssl } = lib();
  const tls = ssl.SSL_new(ctx);
  if (!tls) return null;
  if (ssl.SSL_set_fd(tls, fd) !== 1) {
    ssl.SSL_free(tls);
    return null;
  }
  if (early && early.length > 0) {
    const bio = memoryBio(early);
    ssl.SSL_set0_rbio(tls, bio);
    readingEarly.set(tls, bio);
  }
  ssl.SSL_set_accept_state(tls);
  return tls;
}

/**
 * The handshake sends no session ticket: for a client whose connection is
 * gone, where OpenSSL would make both tickets (random bytes, encryption)
 * and try to write each, ignoring the broken pipe.
 */
export function noTickets(tls: Tls): void {
  lib().ssl.SSL_set_num_tickets(tls, 0n);
}

/** Connections whose OpenSSL still reads early bytes from memory, with that memory. */
const readingEarly = new Map<Tls, NonNullable<Deno.PointerValue>>();

/**
 * Takes the handshake a step: 0 once done, else an {@link SSL_ERROR}
 * (WANT_READ, WANT_WRITE: wait for the socket; anything else: failed).
 * The early bytes used up, OpenSSL reads the socket itself.
 */
export function handshake(tls: Tls, fd: number): number {
  const { ssl, crypto } = lib();
  for (;;) {
    const r = ssl.SSL_do_handshake(tls);
    if (r === 1) return 0;
    const why = ssl.SSL_get_error(tls, r);
    const rbio = why === SSL_ERROR.WANT_READ ? readingEarly.get(tls) : undefined;
    if (!rbio || crypto.BIO_ctrl(rbio, BIO_CTRL_PENDING, 0n, null) > 0n) return why;
    readingEarly.delete(tls);
    ssl.SSL_set_rfd(tls, fd);
  }
}

/**
 * Reads decrypted bytes into the start of `buf`: bytes read, 0 at the end
 * of the stream (close_notify, or the socket's FIN), -EAGAIN while TLS
 * waits for the socket (either way), else a negative errno-like failure.
 */
export function read(tls: Tls, buf: Uint8Array, len: number): number {
  checkRange(buf, len);
  const r = lib().ssl.SSL_read(tls, buf, len);
  return r > 0 ? r : failure(tls, r);
}

/** One byte to peek into: {@link left} asks whether there is any, not what it is. */
const peeked = new Uint8Array(1);

/**
 * Whether the peer has ended its stream (close_notify, FIN or a reset)
 * with nothing to read before that end: what the socket holds is
 * decrypted and kept for the next {@link read}, not taken.
 */
export function left(tls: Tls): boolean {
  const r = lib().ssl.SSL_peek(tls, peeked, peeked.length);
  return r <= 0 && failure(tls, r) !== -EAGAIN;
}

/** Encrypts and sends up to `len` bytes of `buf`: bytes taken, or as {@link read} says. */
export function write(tls: Tls, buf: Uint8Array, len: number): number {
  checkRange(buf, len);
  if (len === 0) return 0;
  const r = lib().ssl.SSL_write(tls, buf, len);
  return r > 0 ? r : failure(tls, r);
}

/** errno values the relay knows; a TLS protocol error is told as EPROTO. */
const EAGAIN = 11;
const EPROTO = 71;
const ECONNRESET = 104;

function failure(tls: Tls, r: number): number {
  const why = lib().ssl.SSL_get_error(tls, r);
  if (why === SSL_ERROR.WANT_READ || why === SSL_ERROR.WANT_WRITE) return -EAGAIN;
  if (why === SSL_ERROR.ZERO_RETURN) return 0;
  const errno = why === SSL_ERROR.SYSCALL ? -ret(-1) : 0;
  lib().crypto.ERR_clear_error();
  if (why === SSL_ERROR.SYSCALL) return errno > 0 && errno !== EAGAIN ? -errno : -ECONNRESET;
  return -EPROTO;
}

/** Sends close_notify (no more writes), not waiting for the peer's. */
export function closeNotify(tls: Tls): void {
  lib().ssl.SSL_shutdown(tls);
  lib().crypto.ERR_clear_error();
}

/** Frees a connection's TLS (its socket is the caller's to close). */
export function free(tls: Tls): void {
  readingEarly.delete(tls);
  lib().ssl.SSL_free(tls);
}

/** What a finished handshake settled. */
export interface Settled {
  version: string;
  /** The server name the client asked for (as sent), or null. */
  sni: string | null;
  /** Whether the client showed a certificate (one OpenSSL verified, or the handshake failed). */
  clientCert: boolean;
  clientCn: string | null;
}

const text = new Uint8Array(256);

/** What the handshake of `tls` settled. */
export function settled(tls: Tls): Settled {
  const { ssl, crypto } = lib();
  const version = cString(ssl.SSL_get_version(tls)) ?? "";
  const sni = cString(ssl.SSL_get_servername(tls, 0));
  const cert = ssl.SSL_get1_peer_certificate(tls);
  let clientCn: string | null = null;
  if (cert) {
    const n = crypto.X509_NAME_get_text_by_NID(
      crypto.X509_get_subject_name(cert),
      NID_COMMON_NAME,
      text,
      text.length,
    );
    clientCn = n > 0
      ? new TextDecoder().decode(text.subarray(0, Math.min(n, text.length - 1)))
      : null;
    crypto.X509_free(cert);
  }
  crypto.ERR_clear_error();
  return { version, sni, clientCert: cert !== null, clientCn };
}

/** Why a handshake failed, in OpenSSL's words (the first error queued, or the verify result). */
export function handshakeError(tls: Tls, why: number): string {
  const { ssl, crypto } = lib();
  const verify = Number(ssl.SSL_get_verify_result(tls));
  const reason = lastError();
  if (verify !== 0) {
    return `client certificate: ${cString(crypto.X509_verify_cert_error_string(BigInt(verify)))}`;
  }
  if (reason !== null) return reason;
  if (why === SSL_ERROR.SYSCALL) {
    const errno = -ret(-1);
    return errno > 0 ? `socket error (errno ${errno})` : "closed by the client";
  }
  return why === SSL_ERROR.ZERO_RETURN ? "closed by the client" : `TLS error ${why}`;
}

/** The first OpenSSL error queued, in words, or null when none is; the queue is cleared. */
function lastError(): string | null {
  const { crypto } = lib();
  const code = crypto.ERR_get_error();
  crypto.ERR_clear_error();
  if (code === 0n) return null;
  crypto.ERR_error_string_n(code, text, BigInt(text.length));
  const end = text.indexOf(0);
  return new TextDecoder().decode(text.subarray(0, end < 0 ? text.length : end));
}

/** A NUL-terminated string at `address` (at most 255 bytes), or null for a null address. */
function cString(address: number | bigint): string | null {
  const at = BigInt(address);
  if (at === 0n) return null;
  const len = Number(libc().strnlen(at, BigInt(text.length - 1)));
  if (len === 0) return "";
  copyFrom(at, text, len);
  return new TextDecoder().decode(text.subarray(0, len));
}
