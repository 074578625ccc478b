/**
 * The `admin:` block: where the admin HTTP endpoint listens and the tokens
 * it asks for. Off unless `listen` is set; a non-loopback address needs a
 * token, since the endpoint shows every backend and counter.
 *
 * @module
 */
import { isMap, isScalar, isSeq } from "./yaml.ts";
import { isLoopback, normalizeHost } from "../net/address.ts";
import { describeNode, type Field, intField, isEmpty, mapFields, type Report } from "./fields.ts";
import type { AdminSettings, AdminToken } from "./schema.ts";

/**
 * The admin endpoint's limits: as nginx's client_header_timeout and
 * keepalive_timeout, shorter, since a scrape or a page load is quick.
 */
const LIMITS = {
  header_timeout_ms: { default: 10_000, min: 100, max: 600_000 },
  idle_timeout_ms: { default: 30_000, min: 100, max: 3_600_000 },
  max_connections: { default: 100, min: 1, max: 10_000 },
};

/** The limits when the file sets none. */
export const ADMIN_LIMITS_DEFAULTS = {
  header_timeout_ms: LIMITS.header_timeout_ms.default,
  idle_timeout_ms: LIMITS.idle_timeout_ms.default,
  max_connections: LIMITS.max_connections.default,
};

/** The admin settings at `admin`, off when the block is absent. */
export function adminOf(field: Field | undefined, at: Report): AdminSettings {
  const off: AdminSettings = { listen: null, token: null, tokens: [], ...ADMIN_LIMITS_DEFAULTS };
  if (isEmpty(field)) return off;
  if (!isMap(field!.value)) {
    at(
      field!.value,
      "admin",
      `expected a mapping such as {listen: "127.0.0.1:9296"}, got ${describeNode(field!.value)}`,
    );
    return off;
  }
  const keys = ["listen", "token", "tokens", ...Object.keys(LIMITS)];
  const f = mapFields(field!.value, "admin", keys, at);
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
  const tokens = tokensOf(f.get("tokens"), token, at);
  const listen = host && listenF ? { host, port } : null;
  if (listen && !isLoopback(listen.host) && token === null && tokens.length === 0) {
    at(
      listenF!.value,
      "admin.listen",
      `${listen.host} is reachable from other machines, so admin.token or admin.tokens is required (every request must send one as a bearer token)`,
    );
  }
  const limits = Object.fromEntries(
    Object.entries(LIMITS).map((
      [key, rule],
    ) => [key, intField(f.get(key), `admin.${key}`, rule, at)]),
  ) as Pick<AdminSettings, keyof typeof LIMITS>;
  return { listen, token, tokens, ...limits };
}

const TOKEN_NAME = /^[A-Za-z0-9_.@-]{1,64}$/;

/** `admin.tokens`: each `{name, token, role}`, names and secrets unique (`token` counts too). */
function tokensOf(field: Field | undefined, single: string | null, at: Report): AdminToken[] {
  if (isEmpty(field)) return [];
  if (!isSeq(field!.value)) {
    const example = '[{name: deploy, token: "...", role: write}]';
    at(
      field!.value,
      "admin.tokens",
      `expected a list such as ${example}, got ${describeNode(field!.value)}`,
    );
    return [];
  }
  const out: AdminToken[] = [];
  const secrets = new Map<string, string>(single === null ? [] : [[single, "admin.token"]]);
  field!.value.items.forEach((item, i) => {
    const path = `admin.tokens[${i}]`;
    const f = mapFields(item, path, ["name", "token", "role"], at);
    const name = stringOf(f.get("name"));
    const secret = stringOf(f.get("token"));
    const role = stringOf(f.get("role")) ?? "read";
    if (name === undefined || !TOKEN_NAME.test(name)) {
      at(
        f.get("name")?.value ?? item,
        `${path}.name`,
        "expected a name of letters, digits and _.@- (logged with each change)",
      );
    } else if (out.some((t) => t.name === name)) {
      at(f.get("name")!.value, `${path}.name`, `the name ${name} is used twice`);
    }
    if (secret === undefined || secret.length < 16) {
      at(
        f.get("token")?.value ?? item,
        `${path}.token`,
        "expected a secret of at least 16 characters",
      );
    } else if (secrets.has(secret)) {
      at(
        f.get("token")!.value,
        `${path}.token`,
        `the same token as ${secrets.get(secret)}; each needs its own`,
      );
    }
    if (role !== "read" && role !== "write") {
      at(
        f.get("role")!.value,
        `${path}.role`,
        `expected read or write, got ${JSON.stringify(role)}`,
      );
    }
    if (name && secret && (role === "read" || role === "write")) {
      secrets.set(secret, path);
      out.push({ name, token: secret, role });
    }
  });
  return out;
}

function stringOf(field: Field | undefined): string | undefined {
  const v = field && isScalar(field.value) ? field.value.value : undefined;
  return typeof v === "string" ? v : undefined;
}
