/**
 * The `bal` command line: parses arguments, runs the command, and turns
 * every failure into `bal: <one line>` on stderr and a non-zero exit code.
 * Each command lives in its own module beside this one.
 *
 * @module
 */
import { Command, CommanderError, Option } from "commander";
import { VERSION } from "../build.ts";
import { ReloadRefused } from "../control.ts";
import { BalError, ConfigError, describeError } from "../errors.ts";
import { addBackendCommands } from "./backend.ts";
import { checkCommand, type CheckOptions } from "./check.ts";
import { doctorCommand } from "./doctor.ts";
import {
  gracefulCommand,
  restartCommand,
  stopCommand,
  type StopCommandOptions,
} from "./lifecycle.ts";
import { err, type Run } from "./output.ts";
import { initCommand, startCommand, type StartOptions } from "./start.ts";
import { statusCommand, type StatusOptions } from "./status.ts";

const CONFIG_HELP = "config file (default: $BAL_HOME/config.yaml)";

/** `--json`, `--brief` (one of them) and `--verbose`, as status and doctor take them. */
function reportOptions(command: Command, verbose: string): Command {
  return command
    .addOption(new Option("--json", "print only JSON").conflicts("brief"))
    .option("--brief", "one line")
    .option("--verbose", verbose);
}

/** Builds the command tree; each action stores its exit code in `result`. */
function program(result: { code: number }): Command {
  const run: Run = (action) => async (...args) => {
    result.code = await action(...args);
  };
  const bal = new Command("bal")
    .description("A small, fast TCP (L4) load balancer. State lives in $BAL_HOME or ~/.bal.")
    .version(`bal ${VERSION}`, "-v, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .exitOverride()
    .configureOutput({
      outputError: (message, write) => write(`bal: ${message.replace(/^error: /, "")}`),
    });
  addConfigCommands(bal, run);
  addReportCommands(bal, run);
  addControlCommands(bal, run);
  addBackendCommands(bal, run);
  return bal;
}

/** start, init, check: commands that read or write a config file. */
function addConfigCommands(bal: Command, run: Run): void {
  bal.command("start")
    .description("run bal: in the foreground, or with -d as a background daemon logging to bal.log")
    .option("-c, --config <file>", `${CONFIG_HELP}, written on first start`)
    .option("-d, --daemon", "run in the background and return once it is listening")
    .addOption(
      new Option("--log-format <format>", "terminal log format").choices(["text", "json"]).default(
        "text",
      ),
    )
    .addOption(new Option("--daemon-child <ready-file>").hideHelp())
    .action(run((opts: StartOptions) => startCommand(opts)));

  bal.command("init")
    .description("write the commented default config, unless the file exists")
    .option("-c, --config <file>", "where (default: $BAL_HOME/config.yaml)")
    .action(run((opts: { config?: string }) => initCommand(opts)));

  bal.command("check")
    .description("validate a config file without touching the running bal")
    .option("-c, --config <file>", CONFIG_HELP)
    .option(
      "--json",
      "print only a JSON report: config_path, errors, warnings, backend_count, services",
    )
    .option("--verbose", "also print every backend's settings and every runtime setting in force")
    .option("--strict", "fail (exit 1) on warnings too")
    .action(run((opts: CheckOptions) => checkCommand(opts)));
}

/** status and doctor: what the running bal and its installation look like. */
function addReportCommands(bal: Command, run: Run): void {
  reportOptions(
    bal.command("status")
      .description("show the running bal's live state: services, backends, connections, counters")
      .option("-c, --config <file>", `${CONFIG_HELP}; notes when the running bal uses another`),
    "also health details and reloads",
  )
    .addOption(
      new Option("--watch", "redraw a live table with rates until Ctrl-C").conflicts([
        "json",
        "brief",
      ]),
    )
    .option("--interval <seconds>", "seconds between --watch frames (default 2)")
    .addOption(new Option("--count <frames>").hideHelp())
    .action(run((opts: StatusOptions) => statusCommand(opts)));

  reportOptions(
    bal.command("doctor")
      .description(
        "diagnose: pid file, config, listen addresses, backends; exit 1 on a critical finding",
      )
      .option("-c, --config <file>", CONFIG_HELP),
    "hints for every check",
  ).action(run((opts: StatusOptions) => doctorCommand(opts)));
}

/** graceful, stop, restart: acting on the running bal. */
function addControlCommands(bal: Command, run: Run): void {
  bal.command("graceful")
    .alias("reload")
    .description("reload the running bal's config with no dropped connection (SIGHUP)")
    .option("-c, --config <file>", `${CONFIG_HELP}; must be the one bal runs with`)
    .action(run((opts: { config?: string }) => gracefulCommand(opts)));

  bal.command("stop")
    .description("stop the running bal, letting live connections finish (SIGTERM)")
    .option("-c, --config <file>", `${CONFIG_HELP}; must be the one bal runs with`)
    .option("--timeout <seconds>", "close the connections still open after this long")
    .addOption(new Option("--force", "close live connections at once").conflicts("timeout"))
    .action(run((opts: StopCommandOptions) => stopCommand(opts)));

  bal.command("restart")
    .description(
      "stop the running bal (draining) and start it again as a daemon with the config it was running",
    )
    .option("-c, --config <file>", `${CONFIG_HELP}; must be the one bal runs with`)
    .action(run((opts: { config?: string }) => restartCommand(opts)));
}

/** Runs the CLI with `args` (without the program name) and returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const result = { code: 0 };
  // -V is what the first bal printed its version with; -v and --version are the usual forms.
  const argv = args.map((a, i) => i === 0 && a === "-V" ? "--version" : a);
  try {
    await program(result).parseAsync(argv, { from: "user" });
    return result.code;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode;
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
