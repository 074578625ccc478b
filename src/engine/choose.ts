/**
 * Which engine a data plane runs: the config's `engine:` (or the
 * `BAL_ENGINE` environment variable, which overrides it: the test matrix
 * runs every suite under both), checked against what this machine can do.
 *
 * @module
 */
import type { EngineChoice } from "../config/mod.ts";
import { BalError } from "../errors.ts";
import type { Runtime } from "../snapshot.ts";
import { createDenoEngine } from "./deno/engine.ts";
import type { Engine, EngineName, EngineOptions } from "./engine.ts";
import { createNativeEngine } from "./epoll/engine.ts";
import { nativeSelfCheck } from "./epoll/self_check.ts";

/** The engine in force, and why it is not native when it is not (null when it is). */
export interface EngineDecision {
  name: EngineName;
  /** Why `auto` fell back to deno; null otherwise. */
  fallback: string | null;
}

/** The values `BAL_ENGINE` may take. */
const OVERRIDES: readonly string[] = ["auto", "native", "deno"];

/**
 * Decides the engine for `configured` (overridden by `override`, the value
 * of BAL_ENGINE, when set). Throws a BalError when native is asked for and
 * cannot run here, or the override is not an engine.
 */
export function chooseEngine(configured: EngineChoice, override?: string): EngineDecision {
  if (override !== undefined && override !== "" && !OVERRIDES.includes(override)) {
    throw new BalError(`BAL_ENGINE: expected auto, native or deno, got "${override}"`);
  }
  const wanted = (override || configured) as EngineChoice;
  if (wanted === "deno") return { name: "deno", fallback: null };
  const problem = nativeSelfCheck();
  if (problem === null) return { name: "native", fallback: null };
  if (wanted === "native") {
    throw new BalError(`engine: native cannot run here: ${problem}; use engine: auto or deno`);
  }
  return { name: "deno", fallback: problem };
}

/** Creates a data plane's engine of the decided kind. */
export function createEngine(name: EngineName, runtime: Runtime, options: EngineOptions): Engine {
  return name === "native"
    ? createNativeEngine(runtime, options)
    : createDenoEngine(runtime, options);
}
