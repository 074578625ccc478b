/**
 * Reading an agent check's answer (HAProxy's agent-check, a documented
 * subset): one line of words separated by spaces or commas.
 *
 * - `up`, `ready`: healthy, and taking clients (ends drain and maint);
 * - `down`, `fail`, `failed`, `stopped`: the check fails;
 * - `drain`: healthy but no new clients; `maint`: no new clients;
 * - `N%`: the weight in force is N % of the configured one (0-100).
 *
 * Unknown words are ignored, as HAProxy does.
 *
 * @module
 */
import type { AgentState } from "./state.ts";

/** What one answer means: whether the check passed, the agent's state, and why not. */
export interface AgentAnswer {
  ok: boolean;
  agent: AgentState;
  error?: string;
}

/** Reads one agent line, starting from the state the agent last reported. */
export function parseAgent(line: string, before: AgentState | null): AgentAnswer {
  let mode = before?.mode ?? "ready";
  let weight = before?.weight_percent ?? null;
  let down: string | null = null;
  const words = line.trim().toLowerCase().split(/[\s,]+/).filter((w) => w);
  if (words.length === 0) {
    return {
      ok: false,
      agent: { mode, weight_percent: weight },
      error: "the agent answered nothing",
    };
  }
  for (const word of words) {
    const pct = /^(\d{1,3})%$/.exec(word);
    if (pct && Number(pct[1]) <= 100) weight = Number(pct[1]);
    else if (word === "up" || word === "ready") mode = "ready";
    else if (word === "drain" || word === "maint") mode = word;
    else if (["down", "fail", "failed", "stopped"].includes(word)) down = word;
  }
  const agent: AgentState = { mode, weight_percent: weight };
  return down ? { ok: false, agent, error: `the agent says ${down}` } : { ok: true, agent };
}
