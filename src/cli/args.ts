/**
 * Command-line parsing for a tree of commands written as plain data: flags
 * with or without a value, choices, defaults, conflicts, positional
 * arguments, and the help text made from the same data. Small on purpose:
 * an npm argument parser costs bal's start-up Deno's Node compatibility
 * layer (about 27 ms and 14 MB), which a `bal status` should not pay.
 *
 * @module
 */

/** One option: `-c, --config <file>`, `--json`, `--log-format <format>`. */
export interface OptionSpec {
  readonly flags: string;
  readonly help: string;
  readonly choices?: readonly string[];
  readonly default?: string;
  /** Left out of help (an internal flag). */
  readonly hidden?: boolean;
  /** Option keys (camelCase) it may not be given with. */
  readonly conflicts?: readonly string[];
}

/** Parsed options by key: `--log-format` is `logFormat`; a flag is true. */
export type Options = Record<string, string | boolean | undefined>;

/** A command, or a group of subcommands (`bal backend ...`). */
export interface CommandSpec {
  /** Its name and arguments: `weight <service> <host:port> <weight>`, `list [service]`. */
  readonly usage: string;
  readonly alias?: string;
  readonly help: string;
  /** More lines for the command's own `--help`, after `help`. */
  readonly details?: string;
  readonly options?: readonly OptionSpec[];
  readonly commands?: readonly CommandSpec[];
  run?(args: string[], options: Options): Promise<number>;
}

/** An option's text value, or undefined (absent, or a flag). */
export function stringOption(value: string | boolean | undefined): string | undefined {
  return typeof value === "string" ? value : undefined;
}

/** A command line bal does not understand; its message is what to print after `bal: `. */
export class UsageError extends Error {
  override name = "UsageError";
}

/**
 * What a command line asks for: help text to print (on stderr with exit 1
 * when a command was missing, as for a mistake), or a command to run.
 */
export type Parsed =
  | { kind: "help"; text: string; missing?: boolean }
  | { kind: "run"; command: CommandSpec; args: string[]; options: Options };

const HELP: OptionSpec = { flags: "-h, --help", help: "show help" };

/** Parses `argv` against the program `root` (whose own usage is the program's name). */
export function parseArgs(root: CommandSpec, argv: readonly string[]): Parsed {
  let command = root;
  let path = [nameOf(root)];
  let rest = [...argv];
  while (command.commands) {
    const word = rest[0];
    if (word === undefined || word === "-h" || word === "--help") {
      return { kind: "help", text: helpOf(command, path), missing: word === undefined };
    }
    if (word === "help" && command === root) {
      const target = rest[1] === undefined ? null : find(root, rest[1]);
      return {
        kind: "help",
        text: target ? helpOf(target, [...path, nameOf(target)]) : helpOf(root, path),
      };
    }
    const next = find(command, word);
    if (!next) {
      throw new UsageError(
        word.startsWith("-") ? `unknown option '${word}'` : `unknown command '${word}'`,
      );
    }
    command = next;
    path = [...path, nameOf(next)];
    rest = rest.slice(1);
  }
  const read = readOptions(command, rest);
  if (read === "help") return { kind: "help", text: helpOf(command, path) };
  checkArguments(command, path, read.args);
  return { kind: "run", command, ...read };
}

function nameOf(c: CommandSpec): string {
  return c.usage.split(" ")[0];
}

function find(group: CommandSpec, word: string): CommandSpec | undefined {
  return group.commands?.find((c) => nameOf(c) === word || c.alias === word);
}

/** The long name of an option and its key: `--log-format` and `logFormat`. */
function namesOf(o: OptionSpec): { short?: string; long: string; key: string; value: boolean } {
  const m = /^(?:(-\w), )?(--[\w-]+)(?: <[^>]+>)?$/.exec(o.flags)!;
  const key = m[2].slice(2).replace(/-(\w)/g, (_, c: string) => c.toUpperCase());
  return { short: m[1], long: m[2], key, value: o.flags.endsWith(">") };
}

/** Options and positional arguments of one command's words. */
function readOptions(
  command: CommandSpec,
  words: string[],
): "help" | { args: string[]; options: Options } {
  const specs = command.options ?? [];
  const options: Options = {};
  const args: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const word = words[i];
    if (word === "--") {
      args.push(...words.slice(i + 1));
      break;
    }
    if (word === "-h" || word === "--help") return "help";
    // A negative number is a value (`weight ... -1`), which its command then judges.
    if (!word.startsWith("-") || word === "-" || /^-\d/.test(word)) {
      args.push(word);
      continue;
    }
    const [flag, inline] = word.startsWith("--") && word.includes("=")
      ? [word.slice(0, word.indexOf("=")), word.slice(word.indexOf("=") + 1)]
      : [word, undefined];
    const spec = specs.find((o) => [namesOf(o).short, namesOf(o).long].includes(flag));
    if (!spec) throw new UsageError(`unknown option '${flag}'`);
    const { key, value } = namesOf(spec);
    if (!value) {
      if (inline !== undefined) throw new UsageError(`option '${spec.flags}' takes no value`);
      options[key] = true;
      continue;
    }
    const given = inline ?? words[++i];
    if (given === undefined) throw new UsageError(`option '${spec.flags}' argument missing`);
    if (spec.choices && !spec.choices.includes(given)) {
      throw new UsageError(
        `option '${spec.flags}' argument '${given}' is invalid. Allowed choices are ${
          spec.choices.join(", ")
        }.`,
      );
    }
    options[key] = given;
  }
  checkConflicts(specs, options);
  for (const o of specs) if (o.default !== undefined) options[namesOf(o).key] ??= o.default;
  return { args, options };
}

function checkConflicts(specs: readonly OptionSpec[], options: Options): void {
  for (const o of specs) {
    const { key } = namesOf(o);
    const clash = o.conflicts?.find((other) =>
      options[key] !== undefined && options[other] !== undefined
    );
    if (clash) {
      const other = specs.find((s) => namesOf(s).key === clash)!;
      throw new UsageError(`option '${o.flags}' cannot be used with option '${other.flags}'`);
    }
  }
}

/** Required (`<x>`) and optional (`[x]`) arguments, counted. */
function checkArguments(command: CommandSpec, path: string[], args: string[]): void {
  const declared = command.usage.split(" ").slice(1);
  const required = declared.filter((a) => a.startsWith("<"));
  if (args.length < required.length) {
    throw new UsageError(`missing required argument '${required[args.length].slice(1, -1)}'`);
  }
  if (args.length > declared.length) {
    throw new UsageError(
      `too many arguments for '${path.slice(1).join(" ")}'. Expected ${declared.length} argument${
        declared.length === 1 ? "" : "s"
      } but got ${args.length}: ${args.join(", ")}.`,
    );
  }
}

/** The help of a command: usage, what it does, its options and subcommands. */
export function helpOf(command: CommandSpec, path: readonly string[]): string {
  const [, ...args] = command.usage.split(" ");
  const usage = [...path, command.commands ? "[options] [command]" : "[options]", ...args];
  const lines = [
    `Usage: ${usage.join(" ")}`,
    "",
    command.help,
    ...(command.details ? ["", command.details] : []),
    "",
    "Options:",
  ];
  const options = [...(command.options ?? []).filter((o) => !o.hidden), HELP];
  lines.push(...columns(options.map((o) => [o.flags, describe(o)])));
  if (command.commands) {
    lines.push("", "Commands:");
    lines.push(...columns(command.commands.map((c) => [commandLabel(c), c.help])));
  }
  return lines.join("\n");
}

function describe(o: OptionSpec): string {
  const extra = [
    o.choices ? `choices: ${o.choices.map((c) => `"${c}"`).join(", ")}` : "",
    o.default !== undefined ? `default: "${o.default}"` : "",
  ].filter((x) => x);
  return extra.length ? `${o.help} (${extra.join(", ")})` : o.help;
}

function commandLabel(c: CommandSpec): string {
  const [name, ...args] = c.usage.split(" ");
  const options = c.options?.length ? ["[options]"] : [];
  return [c.alias ? `${name}|${c.alias}` : name, ...options, ...args].join(" ");
}

/** Two columns, the first padded to its longest entry. */
function columns(rows: [string, string][]): string[] {
  const width = Math.max(...rows.map(([left]) => left.length));
  return rows.map(([left, right]) => `  ${left.padEnd(width)}  ${right}`);
}
