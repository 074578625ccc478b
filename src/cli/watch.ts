/**
 * `bal status --watch`: a compact live table of every service and backend,
 * with rates between two samples, until Ctrl-C. On a terminal each frame
 * replaces the last in one write (cursor home, clear below), so nothing
 * flickers; piped, frames follow one another as plain text.
 *
 * @module
 */
import { liveStatus } from "../instance/control.ts";
import type { StatePaths } from "../instance/paths.ts";
import type { BackendStatus, Status } from "../instance/status_report.ts";
import { kib, plural } from "../text.ts";

const encoder = new TextEncoder();

/** A sample and when it was taken. */
interface Sample {
  status: Status;
  at: number;
}

/** The lines of one frame: a header, then a row per backend with its rates since `before`. */
export function frame(now: Sample, before: Sample | null): string[] {
  const s = now.status;
  if (!s.running) return [`${new Date(now.at).toISOString()}  bal is not running`];
  const seconds = before ? (now.at - before.at) / 1000 : 0;
  const old = new Map<string, BackendStatus>();
  for (const svc of before?.status.services ?? []) {
    for (const b of svc.backends) old.set(`${svc.name}/${b.address}`, b);
  }
  const perSecond = (now: number, then: number | undefined) =>
    then === undefined || seconds <= 0 ? "-" : ((now - then) / seconds).toFixed(1);
  const rows: string[][] = [];
  for (const svc of s.services ?? []) {
    for (const b of svc.backends) {
      const p = old.get(`${svc.name}/${b.address}`);
      rows.push([
        svc.name,
        b.address,
        b.reachable ? "up" : "DOWN",
        b.admin_state,
        String(b.weight),
        String(b.active_connections),
        perSecond(b.connections_served, p?.connections_served),
        String(b.connections_served),
        p && seconds > 0 ? `${kib((b.bytes_in - p.bytes_in) / seconds)}/s` : "-",
        p && seconds > 0 ? `${kib((b.bytes_out - p.bytes_out) / seconds)}/s` : "-",
      ]);
    }
  }
  const head = [
    "SERVICE",
    "BACKEND",
    "STATE",
    "ADMIN",
    "W",
    "ACTIVE",
    "CONN/S",
    "SERVED",
    "IN",
    "OUT",
  ];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => i >= 4 ? c.padStart(widths[i]) : c.padEnd(widths[i])).join("  ").trimEnd();
  const active = (s.services ?? []).reduce((n, x) => n + x.active_connections, 0);
  return [
    `${new Date(now.at).toISOString()}  bal pid ${s.pid}, up ${s.uptime_s} s, ${
      plural(s.services?.length ?? 0, "service")
    }, ${plural(active, "active connection")}`,
    line(head),
    ...rows.map(line),
  ];
}

/** Redraws until Ctrl-C (or `count` frames, for scripts); resolves to the exit code. */
export async function watch(paths: StatePaths, intervalS: number, count?: number): Promise<number> {
  const tty = Deno.stdout.isTerminal();
  let stopped = false;
  let wake = () => {};
  const onInt = () => {
    stopped = true;
    wake();
  };
  Deno.addSignalListener("SIGINT", onInt);
  let before: Sample | null = null;
  try {
    for (let n = 0; !stopped && (count === undefined || n < count); n++) {
      const now = { status: await liveStatus(paths), at: Date.now() };
      const lines = frame(now, before);
      before = now;
      const text = tty ? `\x1b[H\x1b[J${lines.join("\n")}\n` : `${lines.join("\n")}\n\n`;
      Deno.stdout.writeSync(encoder.encode(text));
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, intervalS * 1000);
      });
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
  }
  return 0;
}
