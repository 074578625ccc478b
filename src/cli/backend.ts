/**
 * `bal backend list|drain|disable|enable|weight`: live control of one
 * backend through the control socket, no reload.
 *
 * @module
 */
import type { Command } from "commander";
import { command } from "../control.ts";
import { statePaths } from "../paths.ts";
import type { ServiceStatus } from "../status.ts";
import { out, type Run } from "./output.ts";

/** Options every `bal backend` command takes. */
interface BackendOptions {
  config?: string;
  json?: boolean;
}

async function listCommand(service: string | undefined, options: BackendOptions): Promise<number> {
  const reply = await command(statePaths(), { cmd: "backend_list", service });
  const services = reply.services as ServiceStatus[];
  if (options.json) {
    out(JSON.stringify(reply));
    return 0;
  }
  for (const s of services) {
    out(`${s.name} (${s.method}):`);
    for (const b of s.backends) {
      const traits = [b.backup ? "backup" : "", b.max_connections ? `max ${b.max_connections}` : ""]
        .filter((t) => t).join(", ");
      out(
        `  ${b.address}  ${b.admin_state}  weight ${b.weight}  ${
          b.reachable ? "up" : "DOWN"
        }  ${b.active_connections} active${traits ? `  (${traits})` : ""}`,
      );
    }
  }
  return 0;
}

async function setCommand(
  service: string,
  backend: string,
  request: Record<string, unknown>,
  options: BackendOptions,
): Promise<number> {
  const reply = await command(statePaths(), { cmd: "backend_set", service, backend, ...request });
  if (options.json) {
    out(JSON.stringify(reply));
    return 0;
  }
  const killed = reply.killed ? `, closed ${reply.killed} live connections` : "";
  out(
    `${reply.service} ${reply.backend}: ${reply.admin_state}, weight ${reply.weight}${killed}`,
  );
  return 0;
}

/** Adds `bal backend ...` to the program. */
export function addBackendCommands(bal: Command, run: Run): void {
  const group = bal.command("backend")
    .description("list backends, or drain, disable, enable or reweight one live (no reload)");
  const common = (c: Command) =>
    c.option("-c, --config <file>", "config file (the state directory decides which bal)")
      .option("--json", "print only JSON");
  common(group.command("list [service]").description("every backend with its state"))
    .action(run((service: string | undefined, o: BackendOptions) => listCommand(service, o)));
  const actions: [string, string][] = [
    ["drain", "no new connections; live ones finish"],
    ["enable", "take new connections again"],
  ];
  for (const [action, what] of actions) {
    common(group.command(`${action} <service> <host:port>`).description(what))
      .action(run((s: string, b: string, o: BackendOptions) => setCommand(s, b, { action }, o)));
  }
  common(
    group.command("disable <service> <host:port>").description(
      "no new connections; with --kill the live ones are closed too",
    ),
  ).option("--kill", "also close its live connections")
    .action(
      run((s: string, b: string, o: BackendOptions & { kill?: boolean }) =>
        setCommand(s, b, { action: "disable", kill: o.kill === true }, o)
      ),
    );
  common(
    group.command("weight <service> <host:port> <weight>").description(
      "set its weight (0-256; 0 takes no new connections); kept across reloads",
    ),
  ).action(
    run((s: string, b: string, w: string, o: BackendOptions) =>
      setCommand(s, b, { action: "weight", weight: /^\d+$/.test(w) ? Number(w) : w }, o)
    ),
  );
}
