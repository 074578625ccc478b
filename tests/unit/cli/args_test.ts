/** The command-line parser, without running anything: options, arguments, mistakes and help. */
import assert from "node:assert/strict";
import { type CommandSpec, parseArgs, UsageError } from "../../../src/cli/args.ts";

const run = () => Promise.resolve(0);
const PROGRAM: CommandSpec = {
  usage: "bal",
  help: "the program",
  commands: [
    {
      usage: "start",
      help: "start it",
      options: [
        { flags: "-c, --config <file>", help: "config" },
        { flags: "-d, --daemon", help: "background" },
        {
          flags: "--log-format <format>",
          help: "format",
          choices: ["text", "json"],
          default: "text",
        },
        { flags: "--daemon-child <file>", help: "", hidden: true },
        { flags: "--json", help: "json", conflicts: ["daemon"] },
      ],
      run,
    },
    { usage: "graceful", alias: "reload", help: "reload it", run },
    {
      usage: "backend",
      help: "backends",
      commands: [{ usage: "weight <service> <address> [weight]", help: "reweight", run }],
    },
  ],
};

const parse = (...argv: string[]) => {
  const p = parseArgs(PROGRAM, argv);
  assert.equal(p.kind, "run");
  return p as Extract<typeof p, { kind: "run" }>;
};
const mistake = (argv: string[], message: string) =>
  assert.throws(
    () => parseArgs(PROGRAM, argv),
    (e) => e instanceof UsageError && e.message === message,
  );

Deno.test("args: flags, values in both spellings, defaults, camelCase keys, aliases", () => {
  assert.deepEqual(parse("start", "-c", "a.yaml", "-d").options, {
    config: "a.yaml",
    daemon: true,
    logFormat: "text",
  });
  assert.deepEqual(parse("start", "--config=b.yaml", "--log-format", "json").options, {
    config: "b.yaml",
    logFormat: "json",
  });
  assert.equal(parse("start", "--daemon-child", "/r").options.daemonChild, "/r");
  assert.equal(parse("reload").command.usage, "graceful");
  assert.deepEqual(parse("backend", "weight", "web", "10.0.0.1:80", "5").args, [
    "web",
    "10.0.0.1:80",
    "5",
  ]);
  assert.deepEqual(parse("backend", "weight", "web", "--", "-x").args, ["web", "-x"]);
  assert.deepEqual(parse("backend", "weight", "web", "10.0.0.1:80", "-1").args, [
    "web",
    "10.0.0.1:80",
    "-1",
  ]);
});

Deno.test("args: each mistake is one line saying what is wrong", () => {
  mistake(["frob"], "unknown command 'frob'");
  mistake(["start", "--frob"], "unknown option '--frob'");
  mistake(["start", "-c"], "option '-c, --config <file>' argument missing");
  mistake(["start", "--daemon=yes"], "option '-d, --daemon' takes no value");
  mistake(
    ["start", "--log-format", "xml"],
    "option '--log-format <format>' argument 'xml' is invalid. Allowed choices are text, json.",
  );
  mistake(["start", "--json", "-d"], "option '--json' cannot be used with option '-d, --daemon'");
  mistake(["backend", "weight", "web"], "missing required argument 'address'");
  mistake(
    ["graceful", "x"],
    "too many arguments for 'graceful'. Expected 0 arguments but got 1: x.",
  );
});

Deno.test("args: help from the same data; none for hidden options; a missing command is a mistake", () => {
  const help = parseArgs(PROGRAM, ["start", "--help"]);
  assert.ok(help.kind === "help" && !help.missing);
  assert.match(help.text, /^Usage: bal start \[options\]/);
  assert.match(help.text, /-c, --config <file>\s+config/);
  assert.match(
    help.text,
    /--log-format <format>\s+format \(choices: "text", "json", default: "text"\)/,
  );
  assert.doesNotMatch(help.text, /daemon-child/);
  const top = parseArgs(PROGRAM, []);
  assert.ok(top.kind === "help" && top.missing, "no command: help, as an error");
  assert.match(top.text, /graceful\|reload\s+reload it/);
  const named = parseArgs(PROGRAM, ["help", "backend"]);
  assert.ok(named.kind === "help" && named.text.includes("weight <service> <address> [weight]"));
});
