/**
 * The running bal's half of `bal upgrade` (handover.ts carries it): the
 * `handover` and `retire` control commands; and the new bal's parts that
 * lifecycle.ts runs: its planes' seed from what it received, and systemd's
 * notification once it serves.
 *
 * @module
 */
import type { Command } from "../admin/registry.ts";
import { describeError } from "../errors.ts";
import {
  type HandedListener,
  type Handover,
  handoverSocket,
  type HandoverState,
  sendHandover,
} from "./handover.ts";
import { type Config, workerCount } from "../config/mod.ts";
import { sendDatagram } from "../engine/linux/ffi_unix.ts";
import type { PlaneSeed } from "./planes.ts";
import type { Running, Upgraded } from "./running.ts";
import { processStatus } from "./state_file.ts";
import { logger } from "../log.ts";
import { plural } from "../text.ts";

const log = logger("server");

/** How long the main thread waits for the workers' listening descriptors. */
const WORKER_FDS_MS = 1000;

/** Every listening socket of every data plane, with the plane that serves it. */
async function listeners(running: Running): Promise<HandedListener[]> {
  await running.pool?.refresh(WORKER_FDS_MS);
  const all = running.engine.listenerFds().map((l) => ({ ...l, plane: 0 }));
  for (const [plane, fds] of running.pool?.listenerFds() ?? []) {
    all.push(...fds.map((l) => ({ ...l, plane })));
  }
  return all;
}

/** Why this bal cannot hand over now, or null. */
async function refusal(running: Running, pid: number, socket: unknown): Promise<string | null> {
  const { upgrade } = running;
  if (upgrade.retired) return "this bal is draining after an upgrade; upgrade the one that serves";
  if (upgrade.to !== null && (await processStatus(upgrade.to)) === "running") {
    return `an upgrade is already under way (new bal pid ${upgrade.to}); wait for it to finish`;
  }
  if (running.lock.fd === null) {
    return `this bal's lock cannot be handed over on ${Deno.build.os}; bal stop, then bal start`;
  }
  if (!Number.isInteger(pid) || socket !== handoverSocket(running.options.paths, pid)) {
    return "bad handover request";
  }
  return null;
}

/** The state the new bal starts from. */
function handoverState(running: Running): HandoverState {
  const { runtime } = running;
  const admin = running.runtime.snapshot.config.admin.listen;
  return {
    pid: Deno.pid,
    upgrades: running.upgrade.count,
    health: [...runtime.health],
    admin: [...runtime.admin],
    discovered: [...running.discovery.known],
    held: [
      ...Object.values(running.engine.listening()),
      ...(admin && running.adminServer ? [running.adminServer.address] : []),
    ],
  };
}

/** `handover`: sends the sockets and lock to the new bal, answers with the rest. */
const handover = (running: Running): Command => async (req) => {
  const pid = Number(req.pid);
  const refused = await refusal(running, pid, req.socket);
  if (refused) return { error: refused };
  try {
    const sockets = await listeners(running);
    sendHandover(String(req.socket), running.lock.fd!, sockets);
    running.upgrade.to = pid;
    log.info(`handed ${plural(sockets.length, "listening socket")} to the new bal (pid {to})`, {
      event: "handover",
      sockets: sockets.length,
      to: pid,
    });
    return handoverState(running);
  } catch (err) {
    return { error: `cannot hand over: ${describeError(err)}` };
  }
};

/**
 * `retire`: the new bal serves. This one gives up its control socket's
 * name and state file, stops accepting and drains (as on SIGTERM).
 */
const retire = (running: Running): Command => async (req) => {
  if (running.upgrade.to === null || Number(req.pid) !== running.upgrade.to) {
    return { error: "no hand-over to that pid is under way" };
  }
  running.upgrade.retired = true;
  running.state.status = "draining";
  // Answered once bal.sock is gone, so the new bal's socket is made after, never removed.
  await running.upgrade.moveControl();
  const active = running.stats().reduce((sum, p) => sum + p.active, 0);
  running.upgrade.stop("upgrade");
  return { ok: true, pid: Deno.pid, active };
};

/** The control commands of an upgrade's running side. */
export function upgradeCommands(running: Running): [string, Command][] {
  return [["handover", handover(running)], ["retire", retire(running)]];
}

/** The planes' seed from a hand-over: sockets by plane, health and admin states. */
export function seedOf(handover: Handover, config: Config): PlaneSeed {
  const held = new Set(handover.held);
  const byPlane = assignSockets(handover.listeners, workerCount(config.workers));
  return {
    inherited: (plane) => ({ fds: byPlane.get(plane) ?? new Map(), held }),
    health: handover.health,
    admin: handover.admin,
  };
}

/**
 * Which data plane takes each handed-over socket, as descriptors by plane
 * and address. A socket stays on its plane where this bal runs it; the rest
 * go to a plane that has none for that address, else to plane 0, served
 * beside its own: closing one would reset the clients queued in it.
 */
export function assignSockets(
  listeners: readonly HandedListener[],
  planes: number,
): Map<number, Map<string, number[]>> {
  const out = new Map<number, Map<string, number[]>>();
  const give = (plane: number, l: HandedListener) => {
    const fds = out.get(plane) ?? new Map<string, number[]>();
    fds.set(l.address, [...(fds.get(l.address) ?? []), l.fd]);
    out.set(plane, fds);
  };
  const has = (plane: number, address: string) => out.get(plane)?.has(address) ?? false;
  const rest: HandedListener[] = [];
  for (const l of listeners) {
    if (l.plane < planes && !has(l.plane, l.address)) give(l.plane, l);
    else rest.push(l);
  }
  for (const l of rest) {
    const free = Array.from({ length: planes }, (_, p) => p).find((p) => !has(p, l.address));
    give(free ?? 0, l);
  }
  return out;
}

/**
 * Under systemd (`Type=notify`, NOTIFY_SOCKET set): ready, and after an
 * upgrade, that this process is the service's main one now.
 */
export function notifySystemd(upgraded: Upgraded | null): void {
  let socket: string | undefined;
  try {
    socket = Deno.env.get("NOTIFY_SOCKET");
  } catch {
    return;
  }
  if (!socket) return;
  const text = upgraded ? `MAINPID=${Deno.pid}\nREADY=1\n` : "READY=1\n";
  const r = sendDatagram(socket, text);
  if (r < 0) {
    log.warn("cannot notify systemd at {socket}: errno {errno}", {
      event: "notify_failed",
      socket,
      errno: -r,
    });
  }
}

/** Whether the test-only fault `name` is asked for (BAL_TEST_FAULT); never in normal use. */
export function faultInjected(name: string): boolean {
  try {
    return Deno.env.get("BAL_TEST_FAULT") === name;
  } catch {
    return false;
  }
}
