/**
 * A TLS-terminating TCP proxy on OpenSSL's libssl through FFI, for
 * `bench/tls.ts --probes`: what bal's handshakes and bulk would cost were
 * its TLS the C library HAProxy and nginx use, driven from TypeScript on
 * libc's sockets and epoll (src/engine/linux/ffi.ts), with no Deno or Node
 * socket in the way. A probe, not a design: one certificate, no SNI, no
 * client certificates, a blocking `epoll_wait` (nothing else runs on its
 * thread), and every TLS call checked only as far as a benchmark needs.
 *
 *   deno run --allow-read --allow-ffi bench/tls_openssl.ts PORT CERT KEY BACKEND_PORT
 *
 * @module
 */
import * as sys from "../src/engine/linux/ffi.ts";
import { encodeAddress, familyOf } from "../src/engine/linux/sockaddr.ts";

const [port, certFile, keyFile, backendPort] = Deno.args;

const ssl = Deno.dlopen("libssl.so.3", {
  TLS_server_method: { parameters: [], result: "pointer" },
  SSL_CTX_new: { parameters: ["pointer"], result: "pointer" },
  SSL_CTX_use_certificate_chain_file: { parameters: ["pointer", "buffer"], result: "i32" },
  SSL_CTX_use_PrivateKey_file: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  SSL_new: { parameters: ["pointer"], result: "pointer" },
  SSL_set_fd: { parameters: ["pointer", "i32"], result: "i32" },
  SSL_set_accept_state: { parameters: ["pointer"], result: "void" },
  SSL_do_handshake: { parameters: ["pointer"], result: "i32" },
  SSL_get_error: { parameters: ["pointer", "i32"], result: "i32" },
  SSL_read: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  SSL_write: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  SSL_shutdown: { parameters: ["pointer"], result: "i32" },
  SSL_free: { parameters: ["pointer"], result: "void" },
}).symbols;
const crypto = Deno.dlopen("libcrypto.so.3", {
  ERR_clear_error: { parameters: [], result: "void" },
}).symbols;

/** SSL_get_error's answers this probe tells apart. */
const WANT_READ = 2;
const WANT_WRITE = 3;
/** SSL_FILETYPE_PEM. */
const PEM = 1;

const cString = (s: string) => new TextEncoder().encode(s + "\0");
const ctx = ssl.SSL_CTX_new(ssl.TLS_server_method());
if (
  ssl.SSL_CTX_use_certificate_chain_file(ctx, cString(certFile)) !== 1 ||
  ssl.SSL_CTX_use_PrivateKey_file(ctx, cString(keyFile), PEM) !== 1
) throw new Error("libssl refused the certificate or key");

sys.loadLibc();
const ep = sys.epollCreate();
const backend = encodeAddress("127.0.0.1", Number(backendPort));

/** One client: its TLS state, its backend once connected, and bytes not yet sent on. */
interface Conn {
  fd: number;
  tls: Deno.PointerValue;
  up: number;
  step: "handshake" | "connect" | "relay";
  /** Plain bytes read from the client that the backend has not taken yet. */
  toBackend: Uint8Array | null;
  /** Plain bytes read from the backend that TLS has not taken yet. */
  toClient: Uint8Array | null;
  /** What the client's socket is watched for now (an epoll_ctl only when it changes). */
  clientEvents: number;
}

/** Tokens are fds: a client's fd as is, its backend's with the top bit set. */
const UP = 0x80000000;
const conns = new Map<number, Conn>();
const buf = new Uint8Array(64 * 1024);

function watch(fd: number, token: number, events: number, add = false): void {
  sys.epollCtl(ep, add ? sys.C.EPOLL_CTL_ADD : sys.C.EPOLL_CTL_MOD, fd, events, token);
}

function watchClient(c: Conn, events: number): void {
  if (c.clientEvents === events) return;
  c.clientEvents = events;
  watch(c.fd, c.fd, events);
}

function end(c: Conn): void {
  if (c.step === "relay") ssl.SSL_shutdown(c.tls);
  crypto.ERR_clear_error();
  ssl.SSL_free(c.tls);
  conns.delete(c.fd);
  sys.close(c.fd);
  if (c.up < 0) return;
  conns.delete(c.up);
  sys.close(c.up);
}

/** Waits for what SSL wants after `r`, or ends the connection on anything else. */
function wantOrEnd(c: Conn, r: number): void {
  const why = ssl.SSL_get_error(c.tls, r);
  if (why === WANT_READ) return watchClient(c, sys.C.EPOLLIN);
  if (why === WANT_WRITE) return watchClient(c, sys.C.EPOLLOUT);
  end(c);
}

function handshake(c: Conn): void {
  const r = ssl.SSL_do_handshake(c.tls);
  if (r !== 1) return wantOrEnd(c, r);
  c.up = sys.socket(familyOf(backend));
  conns.set(c.up, c);
  sys.setIntOption(c.up, sys.C.IPPROTO_TCP, sys.C.TCP_NODELAY, 1);
  const started = sys.connect(c.up, backend);
  if (started < 0 && started !== -sys.E.EINPROGRESS) return end(c);
  c.step = "connect";
  watchClient(c, 0);
  watch(c.up, c.up | UP, sys.C.EPOLLOUT, true);
}

/** Client to backend: decrypted records sent on until TLS has no more or the backend is full. */
function fromClient(c: Conn): void {
  for (;;) {
    if (c.toBackend) {
      const pending: Uint8Array = c.toBackend;
      const n = sys.send(c.up, pending, pending.length);
      if (n === -sys.E.EAGAIN) {
        // Full: the client is not read until the backend takes these.
        watchClient(c, 0);
        return watch(c.up, c.up | UP, sys.C.EPOLLIN | sys.C.EPOLLOUT);
      }
      if (n < 0) return end(c);
      c.toBackend = n < pending.length ? pending.subarray(n) : null;
      if (c.toBackend) continue;
      watch(c.up, c.up | UP, sys.C.EPOLLIN);
      watchClient(c, sys.C.EPOLLIN);
    }
    const r = ssl.SSL_read(c.tls, buf, buf.length);
    if (r <= 0) return wantOrEnd(c, r);
    c.toBackend = buf.slice(0, r);
  }
}

/** Backend to client: its bytes written through TLS. */
function fromBackend(c: Conn): void {
  for (;;) {
    if (c.toClient) {
      const r = ssl.SSL_write(c.tls, c.toClient, c.toClient.length);
      if (r <= 0) return wantOrEnd(c, r);
      c.toClient = null;
      watchClient(c, sys.C.EPOLLIN);
    }
    const n = sys.recv(c.up, buf, buf.length);
    if (n === -sys.E.EAGAIN) return;
    if (n <= 0) return end(c);
    c.toClient = buf.slice(0, n);
  }
}

function onEvent(token: number): void {
  const c = conns.get(token & ~UP);
  if (!c) return;
  if (c.step === "handshake") return handshake(c);
  if (c.step === "connect") {
    if (sys.getIntOption(c.up, sys.C.SOL_SOCKET, sys.C.SO_ERROR) !== 0) return end(c);
    c.step = "relay";
    watch(c.up, c.up | UP, sys.C.EPOLLIN);
    watchClient(c, sys.C.EPOLLIN);
    return fromClient(c);
  }
  // Each side's event also flushes what waits to be written to it.
  if (token & UP) {
    if (c.toBackend) fromClient(c);
    if (conns.get(c.up) === c) fromBackend(c);
  } else {
    if (c.toClient) fromBackend(c);
    if (conns.get(c.fd) === c) fromClient(c);
  }
}

const address = encodeAddress("127.0.0.1", Number(port));
const listener = sys.socket(familyOf(address));
sys.setIntOption(listener, sys.C.SOL_SOCKET, sys.C.SO_REUSEADDR, 1);
if (sys.bind(listener, address) < 0 || sys.listen(listener, 1024) < 0) throw new Error("listen");
const LISTENER = 0x7fffffff;
watch(listener, LISTENER, sys.C.EPOLLIN, true);
const events = sys.eventBuffer(256);
const peer = new Uint8Array(sys.SOCKADDR_MAX);
for (;;) {
  const n = sys.epollWait(ep, events, 1000);
  for (let i = 0; i < n; i++) {
    const token = sys.tokenAt(events, i);
    if (token !== LISTENER) {
      onEvent(token);
      continue;
    }
    for (let fd = sys.accept(listener, peer); fd >= 0; fd = sys.accept(listener, peer)) {
      const tls = ssl.SSL_new(ctx);
      ssl.SSL_set_fd(tls, fd);
      ssl.SSL_set_accept_state(tls);
      const c: Conn = {
        fd,
        tls,
        up: -1,
        step: "handshake",
        toBackend: null,
        toClient: null,
        clientEvents: sys.C.EPOLLIN,
      };
      conns.set(fd, c);
      watch(fd, fd, sys.C.EPOLLIN, true);
      handshake(c);
    }
  }
}
