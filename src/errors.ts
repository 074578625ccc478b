/**
 * Errors bal reports to the operator. Their messages are complete, one-line
 * sentences: the CLI prints them as they are, without a stack trace.
 *
 * @module
 */

/** Base class of every error meant for the operator rather than a developer. */
export class BalError extends Error {
  /** The exit code the CLI ends with when this error reaches it. */
  readonly exitCode: number;

  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = "BalError";
    this.exitCode = exitCode;
  }
}

/** Where in a config file something is wrong. */
export interface ConfigLocation {
  /** The config file's path. */
  file: string;
  /** 1-based line, when known. */
  line?: number;
  /** 1-based column, when known. */
  col?: number;
}

/**
 * A config file that cannot be read, parsed or validated. The message reads
 * `FILE:LINE:COL: KEY.PATH: what is wrong`.
 */
export class ConfigError extends BalError {
  readonly location: ConfigLocation;
  /** Dotted key path such as `runtime.health_check_interval_ms`, or "" for the file. */
  readonly keyPath: string;
  /** What is wrong, without the location. */
  readonly reason: string;

  constructor(location: ConfigLocation, keyPath: string, reason: string) {
    const where = [location.file, location.line, location.col].filter((p) => p !== undefined)
      .join(":");
    super(`${where}: ${keyPath ? `${keyPath}: ` : ""}${reason}`);
    this.name = "ConfigError";
    this.location = location;
    this.keyPath = keyPath;
    this.reason = reason;
  }
}

/** bal is, or is not, running when the command needs the opposite. */
export class StateError extends BalError {
  constructor(message: string) {
    super(message);
    this.name = "StateError";
  }
}

/** The listener could not be opened (port in use, permission, bad address). */
export class ListenError extends BalError {
  constructor(message: string) {
    super(message);
    this.name = "ListenError";
  }
}

/** Turns anything thrown into a one-line message fit for the operator. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message.split("\n")[0];
  return String(err);
}
