/**
 * The admin HTTP endpoint (`admin.listen`), served by the control plane:
 * `GET /` (the dashboard page), `GET /metrics` (Prometheus text format) and
 * `GET /status.json` (what `bal status --json` prints), and the JSON API under `/api/` (api.ts).
 * With `admin.token` or `admin.tokens`, every request must send one as `Authorization: Bearer
 * TOKEN` (auth.ts). The HTTP itself is `http_server.ts`.
 *
 * @module
 */
import type { AdminSettings } from "../config/schema.ts";
import { formatAddress } from "../net/address.ts";
import { ListenError } from "../errors.ts";
import { DASHBOARD_HTML } from "./dashboard.ts";
import { serveHttp } from "./http_server.ts";
import { callerOf } from "./auth.ts";
import { answerApi, type RunCommand } from "./api.ts";

/** What the endpoint serves. */
export interface AdminHandlers {
  metrics(): Promise<string>;
  status(): Promise<unknown>;
  /** Runs a control command for an API request. */
  command: RunCommand;
}

/** A running admin endpoint. */
export interface AdminServer {
  /** `host:port` it listens on. */
  address: string;
  close(): Promise<void>;
}

/** Whether two settings listen on the same address (a new token needs no new listener). */
export function sameListen(a: AdminSettings, b: AdminSettings): boolean {
  return a.listen?.host === b.listen?.host && a.listen?.port === b.listen?.port;
}

/**
 * Starts the endpoint on `listen`, or returns null when it is not set. The
 * settings are read again per request and connection, so a reload that
 * changes only the token or the limits keeps the listener.
 */
export function startAdmin(
  listen: AdminSettings["listen"],
  settings: () => AdminSettings,
  handlers: AdminHandlers,
  held: ReadonlySet<string> = new Set(),
): AdminServer | null {
  if (!listen) return null;
  const { host, port } = listen;
  const address = formatAddress(host, port);
  let listener: Deno.TcpListener;
  try {
    listener = listenShared(host, port, held.has(address));
  } catch (err) {
    const why = err instanceof Deno.errors.AddrInUse ? "address already in use" : String(err);
    throw new ListenError(`cannot listen on ${address} (admin.listen): ${why}`, { cause: err });
  }
  const server = serveHttp(listener, (req) => answer(req, settings(), handlers), () => {
    const s = settings();
    return {
      headerTimeoutMs: s.header_timeout_ms,
      idleTimeoutMs: s.idle_timeout_ms,
      maxConnections: s.max_connections,
    };
  });
  return { address, close: () => server.close() };
}

/**
 * On Linux the admin listener sets SO_REUSEPORT, so the next bal can
 * listen beside it during `bal upgrade` (Deno cannot take its descriptor
 * over). The port is claimed first with a plain bind, so no other process
 * shares it unnoticed, except when the bal before holds it (`join`).
 */
function listenShared(hostname: string, port: number, join: boolean): Deno.TcpListener {
  const reusePort = Deno.build.os === "linux";
  if (reusePort && !join) Deno.listen({ hostname, port, transport: "tcp" }).close();
  return Deno.listen({ hostname, port, transport: "tcp", reusePort });
}

async function answer(req: Request, settings: AdminSettings, h: AdminHandlers): Promise<Response> {
  const path = new URL(req.url).pathname;
  // The page holds no data: it loads without the token, then asks for it.
  if (path === "/" && req.method === "GET") {
    return new Response(DASHBOARD_HTML, {
      headers: { "content-type": "text/html; charset=utf-8" },
    });
  }
  const caller = callerOf(req.headers.get("authorization"), settings);
  if (caller === null) {
    return new Response("a bearer token is required (admin.token or admin.tokens)\n", {
      status: 401,
      headers: { "www-authenticate": 'Bearer realm="bal"' },
    });
  }
  if (path.startsWith("/api/")) return answerApi(req, caller, h.command);
  if (req.method !== "GET" && req.method !== "HEAD") {
    return new Response("only GET\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  switch (path) {
    case "/metrics":
      return new Response(await h.metrics(), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      });
    case "/status.json":
      return Response.json(await h.status());
    default:
      return new Response("not found; try /metrics or /status.json\n", { status: 404 });
  }
}
