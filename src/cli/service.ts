/**
 * `bal service list|add|remove`: the running bal's services, and services
 * added or removed through the control socket, saved into the config file.
 *
 * @module
 */
import { BalError } from "../errors.ts";
import { command } from "../instance/control.ts";
import { statePaths } from "../instance/paths.ts";
import type { ServiceView } from "../instance/config_change.ts";
import type { CommandSpec, OptionSpec } from "./args.ts";
import { runChange } from "./change.ts";
import { out } from "./output.ts";

const JSON_OPTION: OptionSpec = { flags: "--json", help: "print only JSON" };

async function listCommand(json: boolean): Promise<number> {
  const reply = await command(statePaths(), { cmd: "service_list" });
  if (json) {
    out(JSON.stringify(reply));
    return 0;
  }
  for (const s of reply.services as ServiceView[]) {
    const live = s.live;
    const where = live ? `${live.bind_address}:${live.port}` : "not running";
    const backends = live ? `${live.backend_reachable}/${live.backend_total} backends up` : "";
    out(`${s.name}  ${where}  ${live?.method ?? ""}  ${backends}`);
  }
  return 0;
}

/** The service a file holds: one mapping in the config's own shape. */
async function serviceFile(path: string | undefined): Promise<Record<string, unknown>> {
  if (!path) throw new BalError("give the service's file with -f SERVICE.yaml");
  // Loaded here alone: `bal status` and the other commands load no YAML parser.
  const { plainYaml } = await import("../config/yaml.ts");
  let value: unknown;
  try {
    value = plainYaml(await Deno.readTextFile(path));
  } catch (err) {
    throw new BalError(`${path}: ${err instanceof Error ? err.message.split("\n")[0] : err}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new BalError(`${path}: expected one service, a mapping such as {name, port, backends}`);
  }
  return value as Record<string, unknown>;
}

/** `bal service ...`. */
export const serviceCommands: CommandSpec = {
  usage: "service",
  help: "list the running services; add or remove one (saved in the config file)",
  commands: [
    {
      usage: "list",
      help: "every service: address, method, backends up",
      options: [JSON_OPTION],
      run: (_, o) => listCommand(o.json === true),
    },
    {
      usage: "add",
      help: "add the service a YAML file holds (the keys of one `services:` entry)",
      options: [{ flags: "-f, --file <file>", help: "the service's YAML" }, JSON_OPTION],
      run: async (_, o) =>
        runChange(
          { op: "add_service", service: await serviceFile(o.file as string | undefined) },
          o.json === true,
        ),
    },
    {
      usage: "remove <name>",
      help: "remove a service: its listener closes, its connections finish",
      options: [JSON_OPTION],
      run: ([name], o) => runChange({ op: "remove_service", name }, o.json === true),
    },
  ],
};
