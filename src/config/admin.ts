/**
 * The `admin:` block: where the admin HTTP endpoint listens and the token
 * it asks for. Off unless `listen` is set; a non-loopback address needs a
 * token, since the endpoint shows every backend and counter.
 *
 * @module
 */
import { isMap, isScalar } from "./yaml.ts";
import { isLoopback, normalizeHost } from "./address.ts";
import { describeNode, type Field, isEmpty, mapFields, type Report } from "./fields.ts";
import type { AdminSettings } from "./schema.ts";

/** The admin settings at `admin`, off when the block is absent. */
export function adminOf(field: Field | undefined, at: Report): AdminSettings {
  const off: AdminSettings = { listen: null, token: null };
  if (isEmpty(field)) return off;
  if (!isMap(field!.value)) {
    at(
      field!.value,
      "admin",
      `expected a mapping such as {listen: "127.0.0.1:9296"}, got ${describeNode(field!.value)}`,
    );
    return off;
  }
  const f = mapFields(field!.value, "admin", ["listen", "token"], at);
  const listenF = f.get("listen");
  const raw = listenF && isScalar(listenF.value) ? listenF.value.value : undefined;
  const m = typeof raw === "string" ? /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(raw.trim()) : null;
  const host = m ? normalizeHost(m[1]) : undefined;
  const port = m ? Number(m[2]) : 0;
  if (listenF && (!host || port < 1 || port > 65535)) {
    at(
      listenF.value ?? listenF.key,
      "admin.listen",
      `expected "HOST:PORT" such as "127.0.0.1:9296", got ${describeNode(listenF.value)}`,
    );
  }
  const tokenF = f.get("token");
  const tokenRaw = tokenF && isScalar(tokenF.value) ? tokenF.value.value : undefined;
  const token = typeof tokenRaw === "string" && tokenRaw.length > 0 ? tokenRaw : null;
  if (tokenF && (token === null || token.length < 16)) {
    at(tokenF.value ?? tokenF.key, "admin.token", "expected a secret of at least 16 characters");
  }
  const listen = host && listenF ? { host, port } : null;
  if (listen && !isLoopback(listen.host) && token === null) {
    at(
      listenF!.value,
      "admin.listen",
      `${listen.host} is reachable from other machines, so admin.token is required (every request must send it as a bearer token)`,
    );
  }
  return { listen, token };
}
