/**
 * Logging: one JSON object per line in `bal.log` (daemon) or readable lines
 * on the terminal.
 *
 * Modules log through {@link logger} with a stable `event` name in the
 * properties; every other property lands in `fields`. A message may name
 * properties in braces (`{backend} is down`), filled in when it is written.
 * Its own code rather than a logging library: the one bal used (LogTape)
 * came from npm and cost start-up Deno's Node compatibility layer.
 *
 * @module
 */
/** Log levels, least severe first (the config's `log_level` takes one). */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
/** A log level. */
export type LogLevel = typeof LOG_LEVELS[number];

/** One line to log, before it is formatted. */
export interface LogRecord {
  /** The module that logged it, e.g. `proxy`. */
  module: string;
  level: LogLevel;
  /** The message with its `{property}` names filled in. */
  message: string;
  properties: Record<string, unknown>;
  /** Epoch ms. */
  timestamp: number;
}

/** What a module logs with. */
export interface Logger {
  debug(message: string, properties?: Record<string, unknown>): void;
  info(message: string, properties?: Record<string, unknown>): void;
  warn(message: string, properties?: Record<string, unknown>): void;
  error(message: string, properties?: Record<string, unknown>): void;
}

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Where records go once logging is set up, and the least severe level written; none before. */
const route = { sink: null as ((record: LogRecord) => void) | null, lowest: RANK.info };

/** How log lines are written. */
export type LogFormat = "text" | "json";

/** Where and how to log. */
export interface LogOptions {
  level: LogLevel;
  format: LogFormat;
  /** Append to this file; without it, lines go to standard error. */
  file?: string;
  /** Hand every record to this function instead (a worker thread posting to the control plane). */
  forward?: (record: LogRecord) => void;
  /** Access-log lines go to this file; without it, where the other lines go. */
  accessFile?: string | null;
}

/** The logger of one module, e.g. `logger("proxy")`. */
export function logger(module: string): Logger {
  const at = (level: LogLevel) => (message: string, properties: Record<string, unknown> = {}) => {
    if (!route.sink || RANK[level] < route.lowest) return;
    route.sink({
      module,
      level,
      message: fillIn(message, properties),
      properties,
      timestamp: Date.now(),
    });
  };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/** `{name}` in a message replaced by that property (text as is, anything else as JSON). */
function fillIn(message: string, properties: Record<string, unknown>): string {
  return message.replace(/\{(\w+)\}/g, (whole, name: string) => {
    if (!(name in properties)) return whole;
    const value = properties[name];
    return typeof value === "string" ? value : JSON.stringify(value) ?? String(value);
  });
}

const encoder = new TextEncoder();
let output: Deno.FsFile | null = null;
let current: LogOptions | null = null;

/**
 * (Re)configures logging. Called at start and again on reload when the
 * level changes; the log file is opened in append mode and written
 * synchronously, so no line is lost when the process exits.
 */
export function setupLogging(options: LogOptions): void {
  if (options.file !== current?.file) {
    output?.close();
    output = options.file ? openAppend(options.file) : null;
  }
  if ((options.accessFile ?? null) !== access.path) {
    flushAccessLog();
    access.file?.close();
    access.path = options.accessFile ?? null;
    access.file = access.path ? openAppend(access.path) : null;
  }
  current = options;
  const format = options.format === "json" ? formatJson : formatText;
  const target = output;
  const write = (line: string) => {
    const bytes = encoder.encode(line + "\n");
    if (target) target.writeSync(bytes);
    else Deno.stderr.writeSync(bytes);
  };
  route.sink = options.forward ?? ((record: LogRecord) => write(format(record)));
  route.lowest = RANK[options.level];
  access.write = write;
}

function openAppend(path: string): Deno.FsFile {
  return Deno.openSync(path, { append: true, create: true, mode: 0o600 });
}

/** The access log: its file (or null: with the other lines), and lines not written yet. */
const access = {
  path: null as string | null,
  file: null as Deno.FsFile | null,
  pending: [] as string[],
  bytes: 0,
  timer: undefined as ReturnType<typeof setTimeout> | undefined,
  write: (_line: string) => {},
};
/** Access lines are written at least this often, and whenever this many bytes wait. */
const ACCESS_FLUSH_MS = 200;
const ACCESS_FLUSH_BYTES = 64 * 1024;

/** What an access line says of one finished connection. */
export interface AccessFields {
  service: string;
  client: string;
  backend: string | null;
  bytes_in: number;
  bytes_out: number;
  connect_ms: number | null;
  duration_ms: number;
  ended: string;
  /** A TCP connection's bytes were copied to its service's mirror. */
  mirrored?: boolean;
}

/** Where access lines go: this process's buffer, or (in a worker) the control plane. */
let accessSink: (line: string) => void = (line) => queueAccess(line);

/** Sends this thread's access lines elsewhere (a worker batches them to the control plane). */
export function routeAccessLines(sink: (line: string) => void): void {
  accessSink = sink;
}

/**
 * One access line: NDJSON in the shape of every other log line, event
 * `access`, written whatever `log_level` says. Built and buffered directly,
 * not through LogTape: one per connection adds up.
 */
export function logAccessLine(f: AccessFields): void {
  accessSink(JSON.stringify({
    timestamp: new Date().toISOString(),
    level: "info",
    message: `${f.client} ${f.service} ${f.backend ?? "-"} ${f.ended}`,
    module: "access",
    event: "access",
    fields: f,
  }));
}

/** Lines from a worker, written as if logged here. */
export function writeAccessLines(lines: readonly string[]): void {
  for (const line of lines) queueAccess(line);
}

function queueAccess(line: string): void {
  access.pending.push(line);
  access.bytes += line.length + 1;
  if (access.bytes >= ACCESS_FLUSH_BYTES) return flushAccessLog();
  if (access.timer === undefined) {
    access.timer = setTimeout(flushAccessLog, ACCESS_FLUSH_MS);
    Deno.unrefTimer(access.timer);
  }
}

/** Writes the access lines waiting in the buffer (at stop, and before a log file is reopened). */
export function flushAccessLog(): void {
  clearTimeout(access.timer);
  access.timer = undefined;
  if (access.pending.length === 0) return;
  const text = access.pending.join("\n");
  access.pending = [];
  access.bytes = 0;
  if (access.file) access.file.writeSync(encoder.encode(text + "\n"));
  else access.write(text);
}

/**
 * Reopens the log file, for SIGUSR1 after logrotate moved it away: new lines
 * go to a fresh file at the same path. Without a file, nothing to do.
 */
export function reopenLog(): void {
  if (!current) return;
  const options = current;
  flushAccessLog();
  access.file?.close();
  access.file = null;
  access.path = null;
  output?.close();
  output = null;
  current = { ...options, file: undefined };
  setupLogging(options);
}

/** Writes a record a worker thread forwarded (it kept only what its level lets through). */
export function emitForwarded(record: LogRecord): void {
  route.sink?.(record);
}

/** Changes only where access-log lines go (a reload's new `access_log_path`). */
export function setAccessFile(path: string | null): void {
  if (current && (current.accessFile ?? null) !== path) {
    setupLogging({ ...current, accessFile: path });
  }
}

/** Changes only the level, keeping the destination and format. */
export function setLogLevel(level: LogLevel): void {
  if (current && current.level !== level) setupLogging({ ...current, level });
}

function splitProperties(
  record: LogRecord,
): { event: string | null; fields: Record<string, unknown> } {
  const { event, ...fields } = record.properties;
  return { event: typeof event === "string" ? event : null, fields };
}

/** `{timestamp, level, message, module, event, fields}` on one line. */
export function formatJson(record: LogRecord): string {
  const { event, fields } = splitProperties(record);
  return JSON.stringify({
    timestamp: new Date(record.timestamp).toISOString(),
    level: record.level,
    message: record.message,
    module: record.module,
    event,
    fields,
  });
}

/** `TIME LEVEL module: message (event)`, for people. */
export function formatText(record: LogRecord): string {
  const { event } = splitProperties(record);
  const level = record.level.toUpperCase().padEnd(5);
  const time = new Date(record.timestamp).toISOString();
  return `${time} ${level} ${record.module}: ${record.message}${event ? ` [${event}]` : ""}`;
}

/**
 * Returns a gate that opens at most once per `intervalMs`: it returns how
 * many calls it swallowed since it last opened, or null while closed. Keeps
 * a flood of identical failures to one log line a second.
 */
export function rateLimited(intervalMs: number): () => number | null {
  let last = -Infinity;
  let swallowed = 0;
  return () => {
    const now = Date.now();
    if (now - last < intervalMs) {
      swallowed++;
      return null;
    }
    last = now;
    const n = swallowed;
    swallowed = 0;
    return n;
  };
}

/**
 * Tracks a failure that lasts (out of file descriptors): `fail()` is true
 * only for the first failure of an episode; `recover()`, called on each
 * success, returns how many failures the episode had once it is over (no
 * failure for a second: a shortage flaps as descriptors free and fill),
 * else null. One line when it starts and one when it ends.
 */
export function episode(): { fail(): boolean; recover(): number | null } {
  let failures = 0;
  let last = 0;
  return {
    fail() {
      last = Date.now();
      return ++failures === 1;
    },
    recover() {
      if (failures === 0 || Date.now() - last < 1000) return null;
      const n = failures;
      failures = 0;
      return n;
    },
  };
}
