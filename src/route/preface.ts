/**
 * What bal reads from a new client before it picks a backend: a PROXY
 * protocol header (`accept_proxy`), then a TLS ClientHello (a service with
 * `routes`). Pure: engines feed it the bytes they receive and arm one timer
 * at its `deadline`; it says when it has what it needs.
 *
 * @module
 */
import { type Endpoint, type ProxyHeaderRead, proxyHeaderReader } from "./proxy_protocol.ts";
import { type HelloRead, parseClientHello } from "./client_hello.ts";

/** What a client's first bytes told: who it is, what it asks for, and the bytes to pass on. */
export interface Preface {
  /** From the PROXY header; null: keep the socket's own. */
  source: Endpoint | null;
  destination: Endpoint | null;
  /** The ClientHello read (null: the service does not route by name). */
  hello: HelloRead | null;
  /** Everything read after the PROXY header, for the backend, unchanged; null when nothing. */
  early: Uint8Array | null;
}

/** What to read, and how long each part may take. */
export interface PrefaceWanted {
  /** `proxy_header_timeout_ms` with `accept_proxy`, else null (no header read). */
  proxyMs: number | null;
  /** `tls_hello_timeout_ms` for a service with routes, else null (no ClientHello read). */
  helloMs: number | null;
  /** The PROXY header is in: false refuses the client (the decision is the caller's). */
  onProxy(header: ProxyHeaderRead): boolean;
}

/** A feed's answer: done, refused (why; `""` when onProxy refused), or null for more bytes. */
export type PrefaceStep = Preface | string | null;

/** An incremental reader of one client's preface. */
export interface PrefaceReader {
  /** Epoch ms by which the part being read must be complete: arm a timer at it. */
  readonly deadline: number;
  /** Bytes the client sent, at epoch ms `now`. */
  feed(chunk: Uint8Array, now: number): PrefaceStep;
  /** The client closed, or the deadline passed: what that means now. */
  end(why: "closed" | "timeout"): Preface | string;
}

/** A reader for what `wanted` asks, started at `now`. */
export function prefaceReader(wanted: PrefaceWanted, now: number): PrefaceReader {
  let proxy = wanted.proxyMs !== null ? proxyHeaderReader() : null;
  let header: ProxyHeaderRead | null = null;
  let got: Uint8Array | null = null;
  let deadline = now + (wanted.proxyMs ?? wanted.helloMs ?? 0);
  const done = (hello: HelloRead | null): Preface => ({
    source: header?.source ?? null,
    destination: header?.destination ?? null,
    hello,
    early: got !== null && got.length > 0 ? got : null,
  });
  // The bytes are kept (a copy: the caller's buffer is reused), joined when they come in parts.
  const append = (chunk: Uint8Array) => {
    if (got === null) return void (got = chunk.slice());
    const joined = new Uint8Array(got.length + chunk.length);
    joined.set(got);
    joined.set(chunk, got.length);
    got = joined;
  };
  const onHello = (): PrefaceStep => {
    if (wanted.helloMs === null) return done(null);
    const hello = parseClientHello(got ?? new Uint8Array(0));
    return hello === null ? null : done(hello);
  };
  return {
    get deadline() {
      return deadline;
    },
    feed(chunk, now) {
      if (!proxy) {
        append(chunk);
        return onHello();
      }
      const read = proxy(chunk);
      if (read === null || typeof read === "string") return read;
      proxy = null;
      header = read;
      if (!wanted.onProxy(read)) return "";
      deadline = now + (wanted.helloMs ?? 0);
      append(read.rest);
      // The header may have come alone: the ClientHello is still to come.
      return wanted.helloMs !== null && !got?.length ? null : onHello();
    },
    end(why) {
      if (proxy) {
        return why === "closed"
          ? "closed before a complete PROXY header"
          : `no complete PROXY header within ${wanted.proxyMs} ms`;
      }
      const reason = why === "closed"
        ? "closed before a complete ClientHello"
        : `no complete ClientHello within ${wanted.helloMs} ms`;
      return done({ kind: "none", reason });
    },
  };
}
