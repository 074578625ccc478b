/**
 * `deno run -A bench/compare.ts REV [--rounds N] [--secs S] [--engine uring|epoll|deno]`:
 * bal at git revision REV against bal in this checkout, in interleaved pairs
 * (the order swapped every round, so a machine that speeds up or slows down
 * favours neither): CPU per short connection and per keep-alive request,
 * user + system time of the bal process from /proc. REV is checked out in a
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

function run(argv: string[], env: Record<string, string> = {}): Deno.ChildProcess {
  return new Deno.Command(argv[0], { args: argv.slice(1), env, stdout: "piped", stderr: "null" })
    .spawn();
}

/** bal from `checkout`, in front of `backends`; measured under each workload. */
async function measure(checkout: string, backends: number[]): Promise<Record<string, number>> {
  const port = freePort();
  const home = Deno.makeTempDirSync({ prefix: "bal-compare-" });
  Deno.writeTextFileSync(
    `${home}/c.yaml`,
    `port: ${port}\nbind_address: 127.0.0.1\nengine: ${engine}\nbackends: [${
      backends.map((b) => `"127.0.0.1:${b}"`).join(", ")
    }]\n`,
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
    await new Promise((r) => setTimeout(r, 1000));
    const cost: Record<string, number> = {};
    for (const workload of ["short", "keepalive"]) {
      const cpu = cpuMeter(child.pid);
      const argv = loadArgv(workload, port, ["--conns", "50", "--secs", String(secs)]);
      const load = await new Deno.Command(argv[0], { args: argv.slice(1), stdout: "piped" })
        .output();
      const taken = cpu.take();
      const used = taken.user + taken.sys;
      const result = JSON.parse(new TextDecoder().decode(load.stdout)) as { rate: number };
      cost[workload] = used * 1e6 / (result.rate * secs);
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
const backendPorts = [freePort(), freePort()];
const backends = run(
  onCpu(0, [
    Deno.execPath(),
    "run",
    "--allow-net",
    `${root}bench/backend.ts`,
    "--http",
    backendPorts.join(","),
  ]),
);
try {
  await waitPort(backendPorts[1]);
  const sides = { [rev]: `${tree}/`, HEAD: root } as Record<string, string>;
  const cost: Record<string, Record<string, number[]>> = {};
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? [rev, "HEAD"] : ["HEAD", rev];
    for (const side of order) {
      const c = await measure(sides[side], backendPorts);
      for (const [w, v] of Object.entries(c)) ((cost[w] ??= {})[side] ??= []).push(v);
    }
  }
  console.log(
    `bal (${engine} engine), CPU µs per unit of work, median of ${rounds} interleaved rounds:`,
  );
  for (const [w, bySide] of Object.entries(cost)) {
    const ratios = bySide.HEAD.map((h, i) => h / bySide[rev][i]);
    console.log(
      `  ${w.padEnd(9)} ${rev}: ${median(bySide[rev]).toFixed(1)}  HEAD: ${
        median(bySide.HEAD).toFixed(1)
      }  HEAD/${rev}: ${median(ratios).toFixed(3)} (rounds ${
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
