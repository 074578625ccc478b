/**
 * The commented config `bal start` and `bal init` write when there is none:
 * the single-service form, with the `services:` form shown in comments.
 *
 * @module
 */
import { RUNTIME_NOTES, RUNTIME_RULES } from "./runtime.ts";
import { DEFAULTS, type IntSettings } from "./schema.ts";

/** The commented `runtime:` lines, from the one table of settings. */
function runtimeDefaultsText(): string {
  const lines = Object.entries(RUNTIME_RULES).map(([key, rule]) => {
    const [small, mid, large] = rule.tuned;
    const tuned = small === mid && mid === large ? "" : ` (3-5 backends: ${mid}, 6+: ${large})`;
    return [`#   ${key}: ${small}`, `${RUNTIME_NOTES[key as keyof IntSettings]}${tuned}`];
  });
  lines.push(["#   overload_policy: reject", RUNTIME_NOTES.overload_policy]);
  const width = Math.max(...lines.map(([code]) => code.length)) + 2;
  return lines.map(([code, note]) => `${code.padEnd(width)}# ${note}`).join("\n");
}

/** The commented config `bal start` writes when there is none. */
export const DEFAULT_CONFIG_TEXT =
  `# bal configuration. Check it with \`bal check\`, apply it with \`bal graceful\`.

# Port and address bal listens on. 0.0.0.0 accepts connections from any
# interface; use 127.0.0.1 to accept only local clients.
port: ${DEFAULTS.port}
bind_address: ${DEFAULTS.bind_address}

# How a backend is chosen for each new connection: round_robin (in turn,
# by weight), least_connections, source_hash (the same client IP keeps its
# backend) or random_two (the less busy of two picked at random).
method: ${DEFAULTS.method}

# debug | info | warn | error
log_level: ${DEFAULTS.log_level}

# Data-plane threads accepting on the port: a number, or auto for one per
# CPU. Takes effect at start (a reload keeps the running count).
workers: ${DEFAULTS.workers}

# What moves the bytes: native (Linux: epoll through libc, the least CPU
# and memory per connection), deno (Deno's own sockets, everywhere), or
# auto: native where its start-up self-check passes, else deno. Takes
# effect at start.
engine: ${DEFAULTS.engine}

# The servers bal forwards to. host is an IP address or a hostname. A
# backend may also set weight (0-256, default 1; 0 takes no new clients),
# backup: true (used only while no other backend can take a client) and
# max_connections (beyond it new clients go elsewhere); "HOST:PORT" is short
# for {host, port}.
backends:
  - host: 127.0.0.1
    port: 9000
  - host: 127.0.0.1
    port: 9100

# The admin endpoint: a live dashboard, /metrics for Prometheus and
# /status.json; off unless set. An address other than loopback needs a token.
# admin: {listen: "127.0.0.1:9296"}

# One JSON line per finished connection (client, backend, bytes, how it
# ended), into access_log_path (relative to this file) or bal.log.
# access_log: true
# access_log_path: access.log

# Who may connect: addresses or CIDR blocks, IPv4 or IPv6. deny wins;
# without allow, everyone not denied. A refused client is closed at once.
# Per-client limits are the runtime keys max_connections_per_client and
# connection_rate_per_client (below).
# allow: ["10.0.0.0/8", "127.0.0.1"]
# deny: ["10.0.0.66"]

# PROXY protocol: tell backends who the client is (v1 or v2; per backend
# too), and/or read the header of proxies in front (only from proxy_trusted).
# send_proxy: v2
# accept_proxy: true
# proxy_trusted: ["10.0.0.5"]

# Active health checks beyond a TCP connect: send_expect, http, tls, agent.
# health_check: {type: http, path: /health}

# Several services in one bal: replace port, bind_address, method and
# backends above with a list (each service may override runtime keys):
# services:
#   - name: api
#     port: 8080
#     method: least_connections
#     backends:
#       - {host: 10.0.0.1, port: 8080, weight: 2}
#       - {host: 10.0.0.3, port: 8080, backup: true}
#   - name: db
#     bind_address: 127.0.0.1
#     port: 5433
#     method: source_hash
#     backends: ["10.0.0.5:5432", "10.0.0.6:5432"]
#     runtime:
#       connection_idle_timeout_ms: 0

# Optional failure-handling and limit knobs. The values shown are the
# defaults with 1-2 backends; some grow with more backends (in brackets).
# A key you set overrides only itself; all apply on reload (tcp_backlog when
# bal next opens its listener).
# runtime:
${runtimeDefaultsText()}
`;
