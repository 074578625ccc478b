/**
 * `bal doctor`: diagnoses a bal installation in one command, checking in
 * order the pid file, the config, the listen address and the backends.
 * Each check has a level (`ok`, `warn`, `critical`) and a hint.
 *
 * @module
 */
import { chooseEngine } from "../engine/choose.ts";
import { allBackends, type Config, type Service } from "../config/schema.ts";
import { readConfig } from "../config/mod.ts";
import { formatAddress } from "../net/address.ts";
import { WHY_PROTECTION, WHY_UNREACHABLE } from "./status_report.ts";
import { dial } from "../net/dial.ts";
import { describeError, ioReason } from "../errors.ts";
import { liveStatus } from "./control.ts";
import { findInstance, isPaused, readPid, readState } from "./state_file.ts";
import type { StatePaths } from "./paths.ts";
import { PROTECTION_OFF, type ProtectionMode, type Status } from "./status_report.ts";

/** How bad a finding is. */
export type Level = "ok" | "warn" | "critical";

/** One finding. */
export interface Check {
  name: "pid" | "socket" | "config" | "engine" | "bind" | "admin" | "backend" | "state";
  level: Level;
  summary: string;
  hint: string;
  /** Why it is likely so; on every check that is not ok. */
  why?: string;
  /**
   * A warning that a running bal causes by design (its own port is in use):
   * reported, but nothing to act on.
   */
  expected?: true;
}

/** What `bal doctor --json` prints. */
export interface Diagnosis {
  checks: Check[];
  /** The running bal's pid, or null. */
  pid: number | null;
  /** The running bal's protection mode; off when none runs. */
  protection_mode: ProtectionMode;
}

async function pidCheck(paths: StatePaths): Promise<{ check: Check; running: number | null }> {
  const exists = await Deno.stat(paths.pid).then(() => true, () => false);
  if (!exists) {
    return {
      running: null,
      check: {
        name: "pid",
        level: "ok",
        summary: "no pid file: bal is not running",
        hint: "bal start -d starts it",
      },
    };
  }
  if ((await readPid(paths)) === null) {
    return {
      running: null,
      check: {
        name: "pid",
        level: "warn",
        summary: `${paths.pid} is unreadable or holds no pid`,
        why: "the file was truncated, edited, or written by something other than bal",
        hint: `remove ${paths.pid} if no bal runs (bal start replaces it)`,
      },
    };
  }
  const found = await findInstance(paths);
  if (found.kind === "running") {
    return {
      running: found.pid,
      check: {
        name: "pid",
        level: "ok",
        summary: `bal is running as pid ${found.pid}`,
        hint: "bal status shows it live",
      },
    };
  }
  const pid = found.kind === "stale" ? found.pid : 0;
  return {
    running: null,
    check: {
      name: "pid",
      level: "warn",
      summary: `stale pid file: pid ${pid} is not a running bal`,
      why: "bal ended without cleaning up: killed with SIGKILL, crashed, or the machine restarted",
      hint: "bal start replaces it; bal stop removes it",
    },
  };
}

function bindCheck(
  service: Service,
  several: boolean,
  running: number | null,
  runningListen: readonly string[],
): Check {
  const address = `${formatAddress(service.bind_address, service.port)}${
    several ? ` (service ${service.name})` : ""
  }`;
  try {
    Deno.listen({ hostname: service.bind_address, port: service.port }).close();
    return {
      name: "bind",
      level: "ok",
      summary: `${address} is free to listen on`,
      hint: "bal start -d listens there",
    };
  } catch (err) {
    if (!(err instanceof Deno.errors.AddrInUse)) {
      return {
        name: "bind",
        level: "critical",
        summary: `cannot listen on ${address}: ${err instanceof Error ? err.message : err}`,
        why: "bind_address is not an address of this machine, or the port needs privileges",
        hint: "check bind_address and port; ports below 1024 need root or CAP_NET_BIND_SERVICE",
      };
    }
    if (
      running !== null && runningListen.includes(formatAddress(service.bind_address, service.port))
    ) {
      return {
        name: "bind",
        level: "ok",
        summary: `${address} is in use by the running bal (pid ${running}), as it should be`,
        hint: "bal stop frees it",
        expected: true,
      };
    }
    return {
      name: "bind",
      level: "critical",
      summary: `${address} is in use by another process`,
      why: "another program, or a bal with another state directory, listens on that port",
      hint: `find it with: ss -ltnp 'sport = :${service.port}'; or choose another port`,
    };
  }
}

/** How long the admin endpoint has to answer doctor. */
const ADMIN_ANSWER_MS = 2000;

/** Whether the running bal's admin endpoint answers an HTTP request (any status will do). */
async function adminCheck(listen: { host: string; port: number }, pid: number): Promise<Check> {
  const host = listen.host === "0.0.0.0" ? "127.0.0.1" : listen.host === "::" ? "::1" : listen.host;
  const url = `http://${formatAddress(host, listen.port)}/metrics`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(ADMIN_ANSWER_MS) });
    await res.body?.cancel();
    return {
      name: "admin",
      level: "ok",
      summary: `the admin endpoint answers on ${formatAddress(listen.host, listen.port)}`,
      hint: `open ${url.replace("/metrics", "/")} for the dashboard`,
    };
  } catch (err) {
    return {
      name: "admin",
      level: "critical",
      summary: `the admin endpoint of bal (pid ${pid}) does not answer on ${
        formatAddress(listen.host, listen.port)
      }: ${describeError(err)}`,
      why: "the process ran out of file descriptors, or admin.listen changed without a reload",
      hint: "bal status shows open descriptors; bal graceful reopens the endpoint if it moved",
    };
  }
}

async function backendCheck(config: Config, live: Status | null): Promise<Check> {
  const backends = allBackends(config);
  const timeout = config.runtime.health_check_timeout_ms;
  const results = await Promise.all(backends.map(async (b) => {
    try {
      (await dial(b.host, b.port, timeout)).close();
      return null;
    } catch (err) {
      const name = config.single ? b.address : b.id;
      return `${name} (${describeError(err)})`;
    }
  }));
  const failed = results.filter((r): r is string => r !== null);
  const reachable = backends.length - failed.length;
  const summary = `${reachable}/${backends.length} backends reachable${
    failed.length ? `; unreachable: ${failed.join(", ")}` : ""
  }`;
  const protection = live?.services?.map((s) => s.protection_mode).find((p) => p.enabled) ??
    live?.protection_mode;
  if (failed.length === 0 && !protection?.enabled) {
    return { name: "backend", level: "ok", summary, hint: "nothing to do" };
  }
  return {
    name: "backend",
    level: reachable === 0 ? "critical" : "warn",
    summary: protection?.enabled
      ? `${summary}; protection mode on since ${protection.since}: ${protection.reason}`
      : summary,
    why: protection?.enabled ? WHY_PROTECTION : WHY_UNREACHABLE,
    hint: protection?.enabled
      ? "bal status --verbose shows which backends fail connects; fix or remove them (bal graceful). Protection turns off by itself after enough successes"
      : "start the unreachable backends, or remove them from the config and run bal graceful",
  };
}

/** The control socket: answering, stale, or held by a bal that does not answer. */
async function socketCheck(
  paths: StatePaths,
  running: number | null,
  live: Status | null,
): Promise<Check> {
  const exists = await Deno.lstat(paths.sock).then(() => true, () => false);
  if (running === null) {
    return exists
      ? {
        name: "socket",
        level: "warn",
        summary: `${paths.sock} is stale: no bal runs`,
        why: "bal was killed (kill -9) or crashed and could not remove it",
        hint: `bal start replaces it; or remove ${paths.sock}`,
      }
      : {
        name: "socket",
        level: "ok",
        summary: "no control socket (bal is not running)",
        hint: "none needed",
      };
  }
  if (live) {
    return {
      name: "socket",
      level: "ok",
      summary: `${paths.sock} answers`,
      hint: "bal status reads it",
    };
  }
  const paused = await isPaused(running);
  return {
    name: "socket",
    level: "critical",
    summary: `bal (pid ${running}) holds its ports but does not answer its control socket${
      paused ? ": the process is stopped (SIGSTOP)" : ""
    }`,
    why: paused
      ? "someone stopped it (kill -STOP, Ctrl-Z, a debugger); it serves nothing until resumed"
      : "it is overloaded or stuck",
    hint: paused
      ? `kill -CONT ${running} resumes it`
      : `look at ${paths.log}; bal stop (or kill ${running}) ends it`,
  };
}

/** Free space below this in the state directory is worth a warning (the log grows there). */
const LOW_SPACE_KIB = 10 * 1024;

/** The state directory: there (or creatable), writable, with room for the log. */
async function stateCheck(paths: StatePaths): Promise<Check> {
  const info = await Deno.stat(paths.dir).catch(() => null);
  if (!info) {
    return {
      name: "state",
      level: "ok",
      summary: `${paths.dir} does not exist yet`,
      hint: "bal start creates it",
    };
  }
  const probe = `${paths.dir}/.bal-doctor-${Deno.pid}`;
  const error = await Deno.writeTextFile(probe, "").then(() => null, (e) => ioReason(e));
  await Deno.remove(probe).catch(() => {});
  if (!info.isDirectory || error) {
    return {
      name: "state",
      level: "critical",
      summary: `bal cannot write in ${paths.dir}: ${info.isDirectory ? error : "not a directory"}`,
      why: "a read-only mount, another owner, or a file where the directory should be",
      hint: "set BAL_HOME to a directory bal can write, or fix the permissions",
    };
  }
  const free = await freeKiB(paths.dir);
  if (free !== null && free < LOW_SPACE_KIB) {
    return {
      name: "state",
      level: "warn",
      summary: `${paths.dir} has only ${Math.floor(free / 1024)} MiB free`,
      why: "the disk is nearly full; bal.log grows there",
      hint: "free some space, or rotate bal.log (SIGUSR1 reopens it)",
    };
  }
  return { name: "state", level: "ok", summary: `${paths.dir} is writable`, hint: "nothing to do" };
}

/** Free KiB on the file system of `dir` (`df`; Deno has no statfs), or null if unknown. */
async function freeKiB(dir: string): Promise<number | null> {
  const out = await new Deno.Command("df", { args: ["-Pk", dir], stdout: "piped", stderr: "null" })
    .output().catch(() => null);
  const last = out?.success ? new TextDecoder().decode(out.stdout).trim().split("\n").pop() : "";
  const free = Number(last?.split(/\s+/)[3]);
  return Number.isFinite(free) ? free : null;
}

/**
 * Which engine moves the bytes (the running bal's, else what `start` would
 * pick), and why auto passed over a faster one: a warning, as io_uring
 * refused by a seccomp profile costs CPU per connection.
 */
function engineCheck(config: Config, live: Status | null): Check {
  let name: string = live?.engine ?? "";
  let fallback = live?.engine_fallback ?? null;
  if (!live) {
    try {
      const decision = chooseEngine(config.engine, Deno.env.get("BAL_ENGINE"));
      [name, fallback] = [decision.name, decision.fallback];
    } catch (err) {
      return {
        name: "engine",
        level: "critical",
        summary: describeError(err),
        why: "the engine asked for by name cannot run on this machine",
        hint: "engine: auto picks the fastest that runs here",
      };
    }
  }
  if (!fallback) {
    return {
      name: "engine",
      level: "ok",
      summary: `${name} engine`,
      hint: "docs/performance.md compares the engines",
    };
  }
  return {
    name: "engine",
    level: "warn",
    summary: `${name} engine, as auto falls back: ${fallback}`,
    why:
      "io_uring is off in this kernel or blocked by a seccomp profile (Docker's and containerd's default ones block it)",
    hint:
      "allow io_uring_setup, io_uring_enter and io_uring_register to run the faster engine; bal works as it is",
  };
}

/** Runs every check on the config at `configPath` and the state in `paths`. */
export async function diagnose(paths: StatePaths, configPath: string): Promise<Diagnosis> {
  const checks: Check[] = [];
  const pid = await pidCheck(paths);
  checks.push(pid.check);
  // A running bal that does not answer is diagnosed from the files alone.
  const live = pid.running !== null ? await liveStatus(paths).catch(() => null) : null;
  checks.push(await socketCheck(paths, pid.running, live));
  const result = await readConfig(configPath);
  if (!result.ok) {
    checks.push({
      name: "config",
      level: "critical",
      summary: `${configPath} is not valid: ${result.errors[0].message}`,
      why: "the file has a typo, a value out of range, or a key bal does not know",
      hint: `bal check -c ${configPath} lists every error`,
    });
  } else {
    checks.push({
      name: "config",
      level: "ok",
      summary: `${configPath} is valid (${allBackends(result.config).length} backends)`,
      hint: "bal check --verbose shows every setting",
    });
    checks.push(engineCheck(result.config, live));
    // What the running bal listens on: from its answer, else from its state file.
    const state = pid.running !== null ? await readState(paths) : null;
    const listening = live?.services?.map((s) => formatAddress(s.bind_address, s.port)) ??
      Object.values(state?.listening ?? {});
    const { services } = result.config;
    for (const s of services) {
      checks.push(bindCheck(s, services.length > 1, pid.running, listening));
    }
    const admin = result.config.admin.listen;
    if (admin && pid.running !== null) checks.push(await adminCheck(admin, pid.running));
    checks.push(await backendCheck(result.config, live));
  }
  checks.push(await stateCheck(paths));
  return { checks, pid: pid.running, protection_mode: live?.protection_mode ?? PROTECTION_OFF };
}
