/**
 * `deno run -A bench/compare.ts REV [--rounds N] [--secs S] [--engine uring|epoll|deno]`:
 * bal at git revision REV against bal in this checkout (its uncommitted
 * changes too, labelled "here"), in interleaved pairs
 * (the order swapped every round, so a machine that speeds up or slows down
 * favours neither): CPU per short connection, per keep-alive request and
 * per MiB of one bulk stream, user + system time of the bal process from /proc, after 2 s of
 * unmeasured short connections (V8's compile). REV is checked out in a
 * temporary worktree, removed afterwards. With `taskset`, the load and the
 * backends run on cpu0 and bal on cpu1, as in `deno task bench`.
 *
 * @module
 */
import { RUN_FLAGS } from "../src/build.ts";
import { freePort } from "../tests/ports.ts";
import { cpuMeter, loadArgv, onCpu, waitPort } from "./proc.ts";

const args = Deno.args;
const rev = args[0];
if (!rev || rev.startsWith("--")) {
  console.error(
    "usage: deno run -A bench/compare.ts REV [--rounds N] [--secs S] [--engine uring|epoll|deno]",
  );
  Deno.exit(2);
}
const opt = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i < 0 ? fallback : args[i + 1];
};
const rounds = Number(opt("rounds", "5"));
const secs = Number(opt("secs", "4"));
const engine = opt("engine", "uring");
const root = new URL("..", import.meta.url).pathname;
/** The label of this checkout's side. */
const HERE = "here";

function run(argv: string[], env: Record<string, string> = {}): Deno.ChildProcess {
  return new Deno.Command(argv[0], { args: argv.slice(1), env, stdout: "piped", stderr: "null" })
    .spawn();
}

/** Where the load goes: the HTTP backends, and a sink for bulk streams. */
interface Backends {
  http: number[];
  sink: number;
}

/** bal from `checkout`, in front of `backends`; measured under each workload. */
async function measure(checkout: string, backends: Backends): Promise<Record<string, number>> {
  const [port, bulkPort] = [freePort(), freePort()];
  const home = Deno.makeTempDirSync({ prefix: "bal-compare-" });
  const service = (name: string, at: number, to: number[]) =>
    `  - name: ${name}\n    bind_address: 127.0.0.1\n    port: ${at}\n    backends: [${
      to.map((b) => `"127.0.0.1:${b}"`).join(", ")
    }]\n`;
  Deno.writeTextFileSync(
    `${home}/c.yaml`,
    `engine: ${engine}\nservices:\n${service("web", port, backends.http)}${
      service("bulk", bulkPort, [backends.sink])
    }`,
  );
  const child = run(
    onCpu(1, [
      Deno.execPath(),
      "run",
      ...RUN_FLAGS,
      `${checkout}src/main.ts`,
      "start",
      "-c",
      `${home}/c.yaml`,
    ]),
    { BAL_HOME: home },
  );
  try {
    await waitPort(port);
    await waitPort(bulkPort);
    // Unmeasured: V8 compiles bal's hot path in its first second under load.
    const warm = loadArgv("short", port, ["--conns", "50", "--secs", "2"]);
    await new Deno.Command(warm[0], { args: warm.slice(1), stdout: "null" }).output();
    const cost: Record<string, number> = {};
    for (const workload of ["short", "keepalive", "bulk"]) {
      const cpu = cpuMeter(child.pid);
      const argv = workload === "bulk"
        ? loadArgv(workload, bulkPort, ["--streams", "1", "--secs", String(secs)])
        : loadArgv(workload, port, ["--conns", "50", "--secs", String(secs)]);
      const load = await new Deno.Command(argv[0], { args: argv.slice(1), stdout: "piped" })
        .output();
      const taken = cpu.take();
      const used = taken.user + taken.sys;
      const result = JSON.parse(new TextDecoder().decode(load.stdout)) as {
        rate: number;
        gbit_s: number;
      };
      // Bulk's unit of work is a MiB moved; the others', a connection or a request.
      const units = workload === "bulk" ? result.gbit_s * 1e9 / 8 / 2 ** 20 : result.rate;
      cost[workload] = used * 1e6 / (units * secs);
    }
    return cost;
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await child.stdout.cancel();
    Deno.removeSync(home, { recursive: true });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const tree = Deno.makeTempDirSync({ prefix: "bal-rev-" });
const git = (...a: string[]) => new Deno.Command("git", { args: a, cwd: root }).outputSync();
if (!git("worktree", "add", "--detach", tree, rev).success) {
  console.error(`cannot check out ${rev}`);
  Deno.exit(1);
}
const backendPorts = { http: [freePort(), freePort()], sink: freePort() };
const backends = run(
  onCpu(0, [
    Deno.execPath(),
    "run",
    "--allow-net",
    `${root}bench/backend.ts`,
    "--http",
    backendPorts.http.join(","),
    "--sink",
    String(backendPorts.sink),
  ]),
);
try {
  await waitPort(backendPorts.sink);
  // Keyed apart even when REV is HEAD (the checkout's own commit, without its changes).
  const sides: Record<string, string> = { [rev]: `${tree}/`, [HERE]: root };
  const cost: Record<string, Record<string, number[]>> = {};
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? [rev, HERE] : [HERE, rev];
    for (const side of order) {
      const c = await measure(sides[side], backendPorts);
      for (const [w, v] of Object.entries(c)) ((cost[w] ??= {})[side] ??= []).push(v);
    }
  }
  console.log(
    `bal (${engine} engine), CPU µs per connection, request or MiB, median of ${rounds} interleaved rounds:`,
  );
  for (const [w, bySide] of Object.entries(cost)) {
    const ratios = bySide[HERE].map((h, i) => h / bySide[rev][i]);
    console.log(
      `  ${w.padEnd(9)} ${rev}: ${median(bySide[rev]).toFixed(1)}  ${HERE}: ${
        median(bySide[HERE]).toFixed(1)
      }  ${HERE}/${rev}: ${median(ratios).toFixed(3)} (rounds ${
        ratios.map((r) => r.toFixed(2)).join(" ")
      })`,
    );
  }
} finally {
  backends.kill("SIGTERM");
  await backends.status;
  await backends.stdout.cancel();
  git("worktree", "remove", "--force", tree);
}
