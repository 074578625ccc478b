/**
 * Which engine a data plane runs: the config's `engine:` (or the
 * `BAL_ENGINE` environment variable, which overrides it: the test matrix
 * runs every suite under each), checked against what this machine can do.
 * `auto` takes the first that works of uring, epoll and deno; `native` is
 * the old name of epoll.
 *
 * @module
 */
import type { EngineChoice } from "../config/schema.ts";
import { BalError } from "../errors.ts";
import type { Runtime } from "../snapshot.ts";
import { createDenoEngine } from "./deno/engine.ts";
import type { Engine, EngineName, EngineOptions } from "./engine.ts";
import { createNativeEngine } from "./epoll/engine.ts";
import { nativeSelfCheck } from "./epoll/self_check.ts";
import { createUringEngine } from "./uring/engine.ts";
import { uringSelfCheck } from "./uring/self_check.ts";

/** The engine in force, and why `auto` passed over a faster one (null when it did not). */
export interface EngineDecision {
  name: EngineName;
  /** Why `auto` passed over the faster engines, e.g. io_uring refused by the kernel. */
  fallback: string | null;
}

/** The values `BAL_ENGINE` may take. */
const OVERRIDES: readonly string[] = ["auto", "uring", "epoll", "native", "deno"];

/** Null when `name` runs here, else why not (each check runs once per process). */
const problems = new Map<EngineName, string | null>();

function problemOf(name: "uring" | "epoll"): string | null {
  if (!problems.has(name)) {
    problems.set(name, name === "uring" ? uringSelfCheck() : nativeSelfCheck());
  }
  return problems.get(name)!;
}

/**
 * Decides the engine for `configured` (overridden by `override`, the value
 * of BAL_ENGINE, when set). Throws a BalError when an engine is asked for
 * by name and cannot run here, or the override is not an engine.
 */
export function chooseEngine(configured: EngineChoice, override?: string): EngineDecision {
  if (override !== undefined && override !== "" && !OVERRIDES.includes(override)) {
    throw new BalError(`BAL_ENGINE: expected auto, uring, epoll or deno, got "${override}"`);
  }
  const asked = (override || configured) as EngineChoice;
  const wanted = asked === "native" ? "epoll" : asked;
  if (wanted === "deno") return { name: "deno", fallback: null };
  if (wanted !== "auto") {
    const problem = problemOf(wanted);
    if (problem === null) return { name: wanted, fallback: null };
    throw new BalError(
      `engine: ${asked} cannot run here: ${problem}; use engine: auto to fall back`,
    );
  }
  const uring = problemOf("uring");
  if (uring === null) return { name: "uring", fallback: null };
  const epoll = problemOf("epoll");
  if (epoll === null) return { name: "epoll", fallback: uring };
  return { name: "deno", fallback: `${uring}; epoll: ${epoll}` };
}

/** Creates a data plane's engine of the decided kind. */
export function createEngine(name: EngineName, runtime: Runtime, options: EngineOptions): Engine {
  if (name === "uring") return createUringEngine(runtime, options);
  if (name === "epoll") return createNativeEngine(runtime, options);
  return createDenoEngine(runtime, options);
}
