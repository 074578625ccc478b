/**
 * The `bal` command line: parses arguments, runs the command, and turns
 * every failure into `bal: <one line>` on stderr and a non-zero exit code.
 * Each command lives in its own module beside this one.
 *
 * @module
 */
import { VERSION } from "../build.ts";
import { ReloadRefused } from "../instance/control.ts";
import { BalError, ConfigError, describeError } from "../errors.ts";
import {
  type CommandSpec,
  type Options,
  type OptionSpec,
  parseArgs,
  stringOption,
  UsageError,
} from "./args.ts";
import { backendCommands } from "./backend.ts";
import { serviceCommands } from "./service.ts";
import { err, out } from "./output.ts";
import type { StatusOptions } from "./status.ts";

const CONFIG_HELP = "config file (default: $BAL_HOME/config.yaml)";
const config = (help = CONFIG_HELP): OptionSpec => ({ flags: "-c, --config <file>", help });
const RUNNING_CONFIG = `${CONFIG_HELP}; must be the one bal runs with`;

/** `--json`, `--brief` (one of them) and `--verbose`, as status and doctor take them. */
const reportOptions = (verbose: string): OptionSpec[] => [
  { flags: "--json", help: "print only JSON", conflicts: ["brief"] },
  { flags: "--brief", help: "one line" },
  { flags: "--verbose", help: verbose },
];

function statusOptions(o: Options): StatusOptions {
  return {
    config: stringOption(o.config),
    json: o.json === true,
    brief: o.brief === true,
    verbose: o.verbose === true,
    watch: o.watch === true,
    interval: stringOption(o.interval),
    count: stringOption(o.count),
  };
}

/** start, init, check: commands that read or write a config file. */
const CONFIG_COMMANDS: CommandSpec[] = [
  {
    usage: "start",
    help: "run bal: in the foreground, or with -d as a background daemon logging to bal.log",
    options: [
      config(`${CONFIG_HELP}, written on first start`),
      { flags: "-d, --daemon", help: "run in the background and return once it is listening" },
      {
        flags: "--log-format <format>",
        help: "terminal log format",
        choices: ["text", "json"],
        default: "text",
      },
      { flags: "--daemon-child <ready-file>", help: "", hidden: true },
      { flags: "--upgrade-timeout <ms>", help: "", hidden: true },
      { flags: "--stderr-log <format>", help: "", hidden: true },
    ],
    run: async (_, o) =>
      (await import("./start.ts")).startCommand({
        config: stringOption(o.config),
        daemon: o.daemon === true,
        logFormat: o.logFormat === "json" ? "json" : "text",
        daemonChild: stringOption(o.daemonChild),
        upgradeTimeoutMs: Number(stringOption(o.upgradeTimeout) ?? 0) || undefined,
        stderrLog: o.stderrLog === "json" ? "json" : o.stderrLog === "text" ? "text" : undefined,
      }),
  },
  {
    usage: "init",
    help: "write the commented default config, unless the file exists",
    options: [config("where (default: $BAL_HOME/config.yaml)")],
    run: async (_, o) =>
      (await import("./start.ts")).initCommand({ config: stringOption(o.config) }),
  },
  {
    usage: "check",
    help: "validate a config file without touching the running bal",
    options: [
      config(),
      {
        flags: "--json",
        help: "print only a JSON report: config_path, errors, warnings, backend_count, services",
      },
      {
        flags: "--verbose",
        help: "also print every backend's settings and every runtime setting in force",
      },
      { flags: "--strict", help: "fail (exit 1) on warnings too" },
    ],
    run: async (_, o) =>
      (await import("./check.ts")).checkCommand({
        config: stringOption(o.config),
        json: o.json === true,
        verbose: o.verbose === true,
        strict: o.strict === true,
      }),
  },
];

/** status and doctor: what the running bal and its installation look like. */
const REPORT_COMMANDS: CommandSpec[] = [
  {
    usage: "status",
    help: "show the running bal's live state: services, backends, connections, counters",
    options: [
      config(`${CONFIG_HELP}; notes when the running bal uses another`),
      ...reportOptions("also health details and reloads"),
      {
        flags: "--watch",
        help: "redraw a live table with rates until Ctrl-C",
        conflicts: ["json", "brief"],
      },
      { flags: "--interval <seconds>", help: "seconds between --watch frames (default 2)" },
      { flags: "--count <frames>", help: "", hidden: true },
    ],
    run: async (_, o) => (await import("./status.ts")).statusCommand(statusOptions(o)),
  },
  {
    usage: "doctor",
    help: "diagnose: pid file, config, listen addresses, backends; exit 1 on a critical finding",
    options: [config(), ...reportOptions("hints for every check")],
    run: async (_, o) => (await import("./doctor.ts")).doctorCommand(statusOptions(o)),
  },
];

/** graceful, stop, restart: acting on the running bal. */
const CONTROL_COMMANDS: CommandSpec[] = [
  {
    usage: "graceful",
    alias: "reload",
    help: "reload the running bal's config with no dropped connection (SIGHUP)",
    options: [config(RUNNING_CONFIG)],
    run: async (_, o) =>
      (await import("./graceful_stop_restart.ts")).gracefulCommand({
        config: stringOption(o.config),
      }),
  },
  {
    usage: "stop",
    help: "stop the running bal, letting live connections finish (SIGTERM)",
    options: [
      config(RUNNING_CONFIG),
      { flags: "--timeout <seconds>", help: "close the connections still open after this long" },
      { flags: "--force", help: "close live connections at once", conflicts: ["timeout"] },
    ],
    run: async (_, o) =>
      (await import("./graceful_stop_restart.ts")).stopCommand({
        config: stringOption(o.config),
        timeout: stringOption(o.timeout),
        force: o.force === true,
      }),
  },
  {
    usage: "restart",
    help:
      "restart the running bal with no refused client: the same hand-over as upgrade, with the config it runs",
    options: [
      config(RUNNING_CONFIG),
      { flags: "--wait", help: "return only once the old bal has drained and exited" },
      { flags: "--timeout <seconds>", help: "how long the new bal has to take over (default 30)" },
    ],
    run: async (_, o) =>
      (await import("./graceful_stop_restart.ts")).restartCommand({
        config: stringOption(o.config),
        wait: o.wait === true,
        timeout: stringOption(o.timeout),
      }),
  },
  {
    usage: "upgrade",
    help:
      "run the program on disk in place of the running bal: the new bal takes its listening sockets, the old one drains and exits; no client is refused, and on any failure the old bal serves on unchanged",
    details: [
      "What it does (Linux): checks the config; starts the new bal, which receives every listening",
      "socket and the lock from the running bal over the control socket (SCM_RIGHTS), with its",
      "health and admin states; serves on them; then the old bal stops accepting, drains its live",
      "connections (up to shutdown_drain_timeout_ms) and exits. Prints the old and new pids, the",
      "sockets handed over and the connections left to drain.",
      "",
      "What it never does: close a listening socket, cut a live connection, or leave a second pid",
      "file or a stray process. An invalid config, a new bal that fails, crashes or does not serve",
      "within --timeout, or an old bal that does not answer: exit 1, the old bal serves unchanged.",
    ].join("\n"),
    options: [
      config("config for the new bal (default: the one the running bal uses)"),
      { flags: "--wait", help: "return only once the old bal has drained and exited" },
      {
        flags: "--timeout <seconds>",
        help: "how long the new bal has to take over and serve (default 30)",
      },
    ],
    run: async (_, o) =>
      (await import("./upgrade.ts")).upgradeCommand({
        config: stringOption(o.config),
        wait: o.wait === true,
        timeout: stringOption(o.timeout),
      }),
  },
];

/**
 * The whole command tree. Each command's module is imported when it runs,
 * so `bal status` does not load the data plane, the health checkers and
 * the config checker that only `start` needs.
 */
const PROGRAM: CommandSpec = {
  usage: "bal",
  help: "A small, fast TCP (L4) load balancer. State lives in $BAL_HOME or ~/.bal.",
  options: [{ flags: "-v, --version", help: "print the version" }],
  commands: [
    ...CONFIG_COMMANDS,
    ...REPORT_COMMANDS,
    ...CONTROL_COMMANDS,
    backendCommands,
    serviceCommands,
  ],
};

/** Runs the CLI with `args` (without the program name) and returns the exit code. */
export async function main(args: string[]): Promise<number> {
  // -V is what the first bal printed its version with; -v and --version are the usual forms.
  if (["-v", "-V", "--version"].includes(args[0])) {
    out(`bal ${VERSION}`);
    return 0;
  }
  try {
    const parsed = parseArgs(PROGRAM, args);
    if (parsed.kind === "help") {
      if (parsed.missing) console.error(parsed.text);
      else out(parsed.text);
      return parsed.missing ? 1 : 0;
    }
    return await parsed.command.run!(parsed.args, parsed.options);
  } catch (e) {
    if (e instanceof UsageError) {
      err(e.message);
      return 1;
    }
    if (e instanceof ReloadRefused) {
      for (const c of e.errors) err(c.message);
      err(e.outcome);
      return e.exitCode;
    }
    if (e instanceof ConfigError) err(e.message);
    else if (e instanceof BalError) err(e.message);
    else err(`unexpected error: ${describeError(e)}`);
    return e instanceof BalError ? e.exitCode : 1;
  }
}
