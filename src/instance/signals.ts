/**
 * Signals: SIGHUP reloads, SIGUSR1 reopens the log, SIGTERM and SIGINT stop (a second one closes
 * what is left).
 *
 * @module
 */
import { reopenLog } from "../log.ts";
import { plural } from "../text.ts";
import { queueReload } from "./reload.ts";
import type { Running } from "./running.ts";
import { logger } from "../log.ts";

const log = logger("server");

/** Signal handlers: SIGHUP reloads, SIGUSR1 reopens the log, SIGTERM/SIGINT stop. */
export function listenForSignals(running: Running) {
  let requested: (signal: string) => void = () => {};
  const stopRequested = new Promise<string>((resolve) => (requested = resolve));
  let signals = 0;
  const onStop = (signal: Deno.Signal) => () => {
    signals++;
    if (signals === 1) return requested(signal);
    // A second Ctrl-C or TERM means "now": close what is left without waiting.
    const left = running.stats().reduce((sum, p) => sum + p.active, 0);
    // A terminal's Ctrl-C can arrive twice (the process group, and a wrapper forwarding it):
    // only a second signal that cuts something is worth a line.
    if (left > 0) {
      log.warn(`{signal} again: closing ${plural(left, "connection")} still open`, {
        event: "drain_forced",
        signal,
        left,
      });
    }
    running.engine.drain(0);
    running.pool?.force();
  };
  const onHup = () => void queueReload(running).catch(() => {});
  // logrotate: `postrotate kill -USR1 $(cat ~/.bal/bal.pid)`.
  const onUsr1 = () => {
    reopenLog();
    log.info("log file reopened", { event: "log_reopened" });
  };
  const handlers: [Deno.Signal, () => void][] = [
    ["SIGHUP", onHup],
    ["SIGUSR1", onUsr1],
    ["SIGTERM", onStop("SIGTERM")],
    ["SIGINT", onStop("SIGINT")],
  ];
  for (const [signal, handler] of handlers) Deno.addSignalListener(signal, handler);
  return {
    requested: stopRequested,
    /** Stops as the first signal would, for `reason` (an upgrade's retire). */
    stop: (reason: string) => {
      signals++;
      requested(reason);
    },
    remove: () => {
      for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
    },
  };
}
