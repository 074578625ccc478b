/**
 * The control socket's commands: each subsystem registers the commands it
 * answers (`status`, `backend_list`, `backend_set`, ...), and a request is
 * dispatched by its `cmd`, as HAProxy's modules register their CLI
 * keywords.
 *
 * @module
 */

/** Answers one request: a JSON-serialisable value (`{error}` for a refusal). */
export type Command = (request: Record<string, unknown>) => unknown | Promise<unknown>;

/** Commands by name. */
export type Registry = Map<string, Command>;

/** Answers a request with its command, or says which commands exist. */
export function dispatch(registry: Registry, request: Record<string, unknown>): unknown {
  const command = typeof request.cmd === "string" ? registry.get(request.cmd) : undefined;
  if (!command) {
    const known = [...registry.keys()].map((k) => JSON.stringify(k)).join(", ");
    return { error: `unknown cmd ${JSON.stringify(request.cmd)}; known: ${known}` };
  }
  return command(request);
}
