/**
 * Errors bal reports to the operator. Their messages are complete, one-line
 * sentences: the CLI prints them as they are, without a stack trace.
 *
 * @module
 */
import { errnoOf, errnoReason } from "./net/errno.ts";

/** Base class of every error meant for the operator rather than a developer. */
export class BalError extends Error {
  /** The exit code the CLI ends with when this error reaches it. */
  readonly exitCode: number;

  /** `options.cause`: the error this one explains, kept for whoever debugs it. */
  constructor(message: string, exitCode = 1, options?: ErrorOptions) {
    super(message, options);
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
  constructor(message: string, options?: ErrorOptions) {
    super(message, 1, options);
    this.name = "StateError";
  }
}

/** The listener could not be opened (port in use, permission, bad address). */
export class ListenError extends BalError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 1, options);
    this.name = "ListenError";
  }
}

/** Turns anything thrown into a one-line message fit for the operator. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message.split("\n")[0];
  return String(err);
}

/**
 * Why a file-system call failed, in bal's words rather than the runtime's
 * ("Not a directory (os error 20)", "Requires all access to ...").
 */
export function ioReason(err: unknown): string {
  if (err instanceof Deno.errors.NotFound) return "does not exist";
  if (err instanceof Deno.errors.NotCapable) {
    return "bal may not use /proc, /sys or /dev for its files";
  }
  if (err instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (err instanceof Deno.errors.AlreadyExists) return "already exists";
  if (err instanceof Deno.errors.NotADirectory) {
    return "a part of the path is a file, not a directory";
  }
  if (err instanceof Deno.errors.IsADirectory) return "is a directory";
  const errno = errnoOf(err);
  return (errno !== null && errnoReason(errno)) || describeError(err);
}
