// Starts the two sample backends in the background (pid files in .pids/),
// or stops exactly the processes it started. Never a broad pkill.
//
//   node run.js start | stop
import { spawn } from "node:child_process";
import { mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import process from "node:process";

const here = new URL(".", import.meta.url).pathname;
const pidDir = `${here}.pids`;
const ports = [9000, 9100];

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function readPid(port) {
  try {
    return Number(readFileSync(`${pidDir}/${port}.pid`, "utf8"));
  } catch {
    return null;
  }
}

if (process.argv[2] === "start") {
  mkdirSync(pidDir, { recursive: true });
  for (const port of ports) {
    const old = readPid(port);
    if (old && alive(old)) {
      console.log(`backend ${port} already running (pid ${old})`);
      continue;
    }
    const log = openSync(`${pidDir}/${port}.log`, "a");
    const child = spawn(process.execPath, [`${here}backend.js`, String(port)], {
      detached: true,
      stdio: ["ignore", log, log],
    });
    writeFileSync(`${pidDir}/${port}.pid`, String(child.pid));
    child.unref();
    console.log(`backend ${port} started (pid ${child.pid}, log ${pidDir}/${port}.log)`);
  }
} else if (process.argv[2] === "stop") {
  for (const port of ports) {
    const pid = readPid(port);
    if (pid && alive(pid)) {
      process.kill(pid, "SIGTERM");
      console.log(`backend ${port} stopped (pid ${pid})`);
    } else {
      console.log(`backend ${port} was not running`);
    }
    rmSync(`${pidDir}/${port}.pid`, { force: true });
  }
} else {
  console.error("usage: node run.js start|stop");
  process.exit(1);
}
