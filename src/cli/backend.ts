/**
 * `bal backend list|drain|disable|enable|weight`: live control of one
 * backend through the control socket, no reload; `bal backend add|remove`:
 * a change saved into the config file and applied as a reload is.
 *
 * @module
 */
import { command } from "../instance/control.ts";
import { type CommandSpec, type Options, type OptionSpec, stringOption } from "./args.ts";
import { statePaths } from "../instance/paths.ts";
import type { ServiceStatus } from "../instance/status_report.ts";
import { out } from "./output.ts";
import { runChange } from "./change.ts";

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

const COMMON: OptionSpec[] = [
  { flags: "-c, --config <file>", help: "config file (the state directory decides which bal)" },
  { flags: "--json", help: "print only JSON" },
];

/** The options every `bal backend` command takes, typed. */
function common(o: Options): BackendOptions {
  return { config: stringOption(o.config), json: o.json === true };
}

/** Sets one backend's state: drain, enable. */
const setter = (action: "drain" | "enable", help: string): CommandSpec => ({
  usage: `${action} <service> <host:port>`,
  help,
  options: COMMON,
  run: ([s, b], o) => setCommand(s, b, { action }, common(o)),
});

/** `--weight 2` and such as an integer, or the text itself for the config's check to refuse. */
function intOf(value: string | boolean | undefined): number | string | undefined {
  if (typeof value !== "string") return undefined;
  return /^-?\d+$/.test(value) ? Number(value) : value;
}

/** The backend `HOST:PORT` and the options of `bal backend add`, as a config entry. */
function entryOf(address: string, o: Options): Record<string, unknown> {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(address.trim());
  const host = m ? m[1].replace(/^\[(.*)\]$/, "$1") : address;
  const entry: Record<string, unknown> = { host, port: m ? Number(m[2]) : undefined };
  if (o.weight !== undefined) entry.weight = intOf(o.weight);
  if (o.backup === true) entry.backup = true;
  if (o.maxConnections !== undefined) entry.max_connections = intOf(o.maxConnections);
  return entry;
}

const ADD: CommandSpec = {
  usage: "add <service> <host:port>",
  help: "add a backend: saved into the config file, applied as a reload (checked before clients)",
  options: [
    ...COMMON,
    { flags: "--weight <n>", help: "its weight, 0-256 (default 1)" },
    { flags: "--backup", help: "used only while no other backend can take a client" },
    { flags: "--max-connections <n>", help: "beyond it, new clients go elsewhere" },
  ],
  run: ([service, address], o) =>
    runChange({ op: "add_backend", service, backend: entryOf(address, o) }, o.json === true),
};

const REMOVE: CommandSpec = {
  usage: "remove <service> <host:port>",
  help: "remove a backend from the config file: no new clients, live ones finish",
  options: COMMON,
  run: ([service, backend], o) =>
    runChange({ op: "remove_backend", service, backend }, o.json === true),
};

/** `bal backend ...`. */
export const backendCommands: CommandSpec = {
  usage: "backend",
  help:
    "list backends; add or remove one (saved in the file); drain, disable, enable or reweight one live",
  commands: [
    {
      usage: "list [service]",
      help: "every backend with its state",
      options: COMMON,
      run: ([service], o) => listCommand(service, common(o)),
    },
    ADD,
    REMOVE,
    setter("drain", "no new connections; live ones finish"),
    setter("enable", "take new connections again"),
    {
      usage: "disable <service> <host:port>",
      help: "no new connections; with --kill the live ones are closed too",
      options: [...COMMON, { flags: "--kill", help: "also close its live connections" }],
      run: ([s, b], o) => setCommand(s, b, { action: "disable", kill: o.kill === true }, common(o)),
    },
    {
      usage: "weight <service> <host:port> <weight>",
      help: "set its weight (0-256; 0 takes no new connections); kept across reloads",
      options: COMMON,
      run: ([s, b, w], o) =>
        setCommand(
          s,
          b,
          { action: "weight", weight: /^-?\d+$/.test(w) ? Number(w) : w },
          common(o),
        ),
    },
  ],
};
