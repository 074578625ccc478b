/**
 * The `bal` command line: parses arguments, runs the command, and turns
 * every failure into `bal: <one line>` on stderr and a non-zero exit code.
 *
 * @module
 */
import { Command, CommanderError, Option } from "commander";
import { VERSION } from "./build.ts";
import {
  configWarnings,
  DEFAULT_CONFIG_TEXT,
  formatAddress,
  type HostLimits,
  readConfig,
} from "./config.ts";
import { graceful, liveStatus, ReloadRefused, stop } from "./control.ts";
import { reportReady, startDaemon } from "./daemon.ts";
import { BalError, ConfigError, describeError } from "./errors.ts";
import type { LogFormat } from "./log.ts";
import { findInstance, readProc } from "./instance.ts";
import { absolute, ensureStateDir, type StatePaths, statePaths } from "./paths.ts";
import { serve } from "./server.ts";
import { diagnose, WHY_PROTECTION, WHY_UNREACHABLE } from "./doctor.ts";

const out = (line: string) => console.log(line);
// Messages that already name bal ("bal is not running") are not prefixed twice.
const err = (line: string) => console.error(line.startsWith("bal ") ? line : `bal: ${line}`);

/** Options of `bal start`. */
interface StartOptions {
  config?: string;
  daemon?: boolean;
  logFormat: LogFormat;
  daemonChild?: string;
}

/**
 * The config file a command uses: `-c FILE` made absolute, else the state
 * directory's `config.yaml`.
 */
function configPathOf(option: string | undefined, paths: StatePaths): string {
  return option ? absolute(option) : paths.config;
}

/** Writes the commented default config when there is none; true if it did. */
async function ensureDefaultConfig(path: string): Promise<boolean> {
  try {
    await Deno.writeTextFile(path, DEFAULT_CONFIG_TEXT, { createNew: true, mode: 0o644 });
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) return false;
    throw new BalError(`cannot write the default config ${path}: ${describeError(e)}`);
  }
}

async function startCommand(options: StartOptions): Promise<number> {
  const paths = statePaths();
  await ensureStateDir(paths);
  const configPath = configPathOf(options.config, paths);

  if (options.daemonChild) {
    const readyFile = options.daemonChild;
    try {
      return await serve({
        configPath,
        paths,
        logFormat: "json",
        daemon: true,
        onReady: (listen) => reportReady(readyFile, { ok: true, pid: Deno.pid, listen }),
      });
    } catch (e) {
      await reportReady(readyFile, { ok: false, error: describeError(e) });
      throw e;
    }
  }

  if (!options.config && await ensureDefaultConfig(configPath)) {
    out(
      `wrote the default config to ${configPath} (port 9295, backends 127.0.0.1:9000 and 127.0.0.1:9100)`,
    );
  }
  const check = await readConfig(configPath);
  if (!check.ok) throw check.errors[0];

  if (options.daemon) {
    const started = await startDaemon(configPath, paths);
    out(`bal started in the background (pid ${started.pid}), listening on ${started.listen}`);
    out(`log: ${paths.log}`);
    return 0;
  }
  return await serve({ configPath, paths, logFormat: options.logFormat, daemon: false });
}

async function initCommand(options: { config?: string }): Promise<number> {
  const paths = statePaths();
  await ensureStateDir(paths);
  const configPath = configPathOf(options.config, paths);
  if (await ensureDefaultConfig(configPath)) out(`wrote the default config to ${configPath}`);
  else out(`${configPath} exists; left as it is`);
  return 0;
}

/** What this machine's kernel says of the limits a config can exceed (Linux only). */
async function hostLimits(): Promise<HostLimits> {
  const somaxconn = Number(await readProc("/proc/sys/net/core/somaxconn"));
  return somaxconn > 0 ? { somaxconn } : {};
}

/** Options of `bal check`. */
interface CheckOptions {
  config?: string;
  json?: boolean;
  verbose?: boolean;
  strict?: boolean;
}

async function checkCommand(options: CheckOptions): Promise<number> {
  const configPath = configPathOf(options.config, statePaths());
  const result = await readConfig(configPath);
  const errors = result.ok ? [] : result.errors.map((e) => e.message);
  const warnings = result.ok ? configWarnings(result.config, await hostLimits()) : [];
  const failed = errors.length > 0 || (options.strict === true && warnings.length > 0);
  if (options.json) {
    out(JSON.stringify({
      config_path: configPath,
      errors,
      warnings,
      backend_count: result.ok ? result.config.backends.length : null,
    }));
    return failed ? 1 : 0;
  }
  if (!result.ok) {
    for (const e of errors) err(e);
    out(
      `what_happened: ${configPath} is not a valid config (${errors.length} error${
        errors.length === 1 ? "" : "s"
      })`,
    );
    out(`why_likely: ${result.errors[0].reason}`);
    out(`do_this_now: fix ${errors[0].split(": ")[0]}, then run \`bal check\` again`);
    return 1;
  }
  const c = result.config;
  out(`config OK: ${configPath}`);
  out(
    `  listen ${
      formatAddress(c.bind_address, c.port)
    }, ${c.method}, log_level ${c.log_level}, workers ${c.workers}`,
  );
  out(
    `  ${c.backends.length} backend${c.backends.length === 1 ? "" : "s"}: ${
      c.backends.map((b) => b.address).join(", ")
    }`,
  );
  if (options.verbose) {
    for (const [key, value] of Object.entries(c.runtime)) out(`  runtime.${key}: ${value}`);
  }
  for (const w of warnings) out(`warning: ${w}`);
  if (failed) {
    out(
      `what_happened: --strict and ${warnings.length} warning${warnings.length === 1 ? "" : "s"}`,
    );
    out("why_likely: the config is valid but does something you may not mean");
    out("do_this_now: change the settings named above, or run without --strict to accept them");
    return 1;
  }
  out(`next: bal start -d -c ${configPath} (or \`bal graceful\` to apply it to the running bal)`);
  return 0;
}

/** Options of `bal status`. */
interface StatusOptions {
  json?: boolean;
  brief?: boolean;
  verbose?: boolean;
}

const kib = (n: number) =>
  n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`;

async function statusCommand(options: StatusOptions): Promise<number> {
  const s = await liveStatus(statePaths());
  if (options.json) {
    out(JSON.stringify(s));
    return 0;
  }
  if (!s.running) {
    out("bal is not running");
    out("next: bal start -d");
    return 0;
  }
  const backends = s.backends!;
  const down = backends.filter((b) => !b.reachable);
  const summary = `bal is running (pid ${s.pid}), ${
    formatAddress(s.bind_address!, s.port!)
  }, ${s.backend_reachable}/${s.backend_total} backends reachable, ${s.active_connections} active connections`;
  if (options.brief) {
    out(summary);
    return 0;
  }
  out(summary);
  out(
    `  up ${s.uptime_s} s, ${s.method}, ${s.workers} data plane${
      s.workers === 1 ? "" : "s"
    }, config ${s.config_path}`,
  );
  out(
    `  connections: ${s.connections_served} served, ${s.rejected_connections} rejected at the limit, ${s.idle_closed_connections} closed idle`,
  );
  for (const b of backends) {
    const failures =
      `failed connects: ${b.counters.timeout} timeout, ${b.counters.refused} refused, ${b.counters.other} other`;
    const cooling = b.cooldown_remaining_ms === null
      ? ""
      : `; cooling down ${b.cooldown_remaining_ms} ms more (${b.connect_failure_streak} failed connects in a row)`;
    out(
      `  ${
        b.reachable ? "up  " : "DOWN"
      } ${b.address}: ${b.active_connections} active, ${b.connections_served} served, in ${
        kib(b.bytes_in)
      }, out ${kib(b.bytes_out)}; ${failures}${cooling}`,
    );
    if (options.verbose || !b.reachable) {
      out(
        `       last check ${b.last_check_time ?? "never"} ${b.last_check_result ?? ""}${
          b.last_error ? `; last failure: ${b.last_error}` : ""
        }; ${b.consecutive_failures} failures, ${b.consecutive_successes} successes in a row`,
      );
    }
  }
  if (options.verbose && s.reloads) {
    const last = s.reloads.last;
    out(
      `  reloads: ${s.reloads.count}${
        last ? `, last ${last.ok ? "ok" : `failed (${last.error})`} at ${last.at}` : ""
      }`,
    );
  }
  const protection = s.protection_mode;
  if (protection.enabled) {
    out(`what_happened: protection mode is on since ${protection.since}: ${protection.reason}`);
    out(`why_likely: ${WHY_PROTECTION}`);
    out(
      "do_this_now: bal status --verbose shows which backends fail; fix or remove them (then bal graceful); protection turns off after enough successes",
    );
  } else if (down.length > 0) {
    out(
      `what_happened: ${down.length} of ${backends.length} backends unreachable: ${
        down.map((b) => `${b.address} (${b.last_error ?? "failed"})`).join(", ")
      }`,
    );
    out(`why_likely: ${WHY_UNREACHABLE}`);
    out(`do_this_now: start it, or remove it from ${s.config_path} and run \`bal graceful\``);
  } else {
    out("next: bal graceful after editing the config; bal stop to drain and stop");
  }
  return 0;
}

async function doctorCommand(options: StatusOptions & { config?: string }): Promise<number> {
  const paths = statePaths();
  // Without -c, the config of the running bal, which is the one that matters.
  const found = options.config ? null : await findInstance(paths);
  const running = found?.kind === "running" ? found.state?.config_path : undefined;
  const diagnosis = await diagnose(paths, running ?? configPathOf(options.config, paths));
  const critical = diagnosis.checks.some((c) => c.level === "critical");
  if (options.json) {
    out(JSON.stringify(diagnosis));
    return critical ? 1 : 0;
  }
  const bad = diagnosis.checks.filter((c) => c.level !== "ok");
  if (options.brief) {
    out(
      bad.length
        ? bad.map((c) => `${c.level} ${c.name}: ${c.summary}`).join("; ")
        : "all checks ok",
    );
    return critical ? 1 : 0;
  }
  for (const c of diagnosis.checks) {
    out(`[${c.level}] ${c.name}: ${c.summary}`);
    if (options.verbose || c.level !== "ok") out(`       hint: ${c.hint}`);
  }
  const worst = bad.find((c) => c.level === "critical") ?? bad.find((c) => !c.expected);
  if (worst) {
    out(`what_happened: ${worst.name}: ${worst.summary}`);
    out(`why_likely: ${worst.why}`);
    out(`do_this_now: ${worst.hint}`);
  } else {
    out("next: bal start -d, or bal status if it runs");
  }
  return critical ? 1 : 0;
}

async function gracefulCommand(): Promise<number> {
  const outcome = await graceful(statePaths());
  if (!outcome.ok) {
    err(`reload failed, the running config is unchanged: ${outcome.error}`);
    return 1;
  }
  out(
    `reloaded: generation ${outcome.generation}, ${outcome.backends} backends, listening on ${outcome.listen}`,
  );
  return 0;
}

async function stopCommand(): Promise<number> {
  const pid = await stop(statePaths());
  out(`bal stopped (pid ${pid})`);
  return 0;
}

/** Builds the command tree; each action stores its exit code in `result`. */
function program(result: { code: number }): Command {
  const run =
    <A extends unknown[]>(action: (...args: A) => Promise<number>) => async (...args: A) => {
      result.code = await action(...args);
    };
  const bal = new Command("bal")
    .description("A small, fast TCP (L4) load balancer. State lives in $BAL_HOME or ~/.bal.")
    .version(VERSION, "-V, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .exitOverride()
    .configureOutput({
      outputError: (message, write) => write(`bal: ${message.replace(/^error: /, "")}`),
    });

  bal.command("start")
    .description("run bal: in the foreground, or with -d as a background daemon logging to bal.log")
    .option(
      "-c, --config <file>",
      "config file (default: $BAL_HOME/config.yaml, written on first start)",
    )
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
    .option("-c, --config <file>", "config file (default: $BAL_HOME/config.yaml)")
    .option("--json", "print only a JSON report: config_path, errors, warnings, backend_count")
    .option("--verbose", "also print every runtime setting in force")
    .option("--strict", "fail (exit 1) on warnings too")
    .action(run((opts: CheckOptions) => checkCommand(opts)));

  bal.command("status")
    .description("show the running bal's live state: backends, connections, counters")
    .option("--json", "print only JSON")
    .option("--brief", "one line")
    .option("--verbose", "also health details and reloads")
    .action(run((opts: StatusOptions) => statusCommand(opts)));

  bal.command("doctor")
    .description(
      "diagnose: pid file, config, listen address, backends; exit 1 on a critical finding",
    )
    .option("-c, --config <file>", "config file (default: $BAL_HOME/config.yaml)")
    .option("--json", "print only JSON")
    .option("--brief", "one line")
    .option("--verbose", "hints for every check")
    .action(run((opts: StatusOptions & { config?: string }) => doctorCommand(opts)));

  bal.command("graceful")
    .description("reload the running bal's config with no dropped connection (SIGHUP)")
    .action(run(() => gracefulCommand()));

  bal.command("stop")
    .description("stop the running bal, letting live connections finish (SIGTERM)")
    .action(run(() => stopCommand()));

  return bal;
}

/** Runs the CLI with `args` (without the program name) and returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const result = { code: 0 };
  try {
    await program(result).parseAsync(args, { from: "user" });
    return result.code;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode;
    if (e instanceof ReloadRefused) {
      for (const c of e.errors) err(c.message);
      err("not reloaded: the running config is unchanged");
      return e.exitCode;
    }
    if (e instanceof ConfigError) err(e.message);
    else if (e instanceof BalError) err(e.message);
    else err(`unexpected error: ${describeError(e)}`);
    return e instanceof BalError ? e.exitCode : 1;
  }
}
