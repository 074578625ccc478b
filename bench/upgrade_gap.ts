/**
 * What an upgrade costs clients: bal (as `deno task bal` runs it) serves a
 * steady load of short connections while `bal upgrade` runs again and
 * again. Reports failed connections and the longest gap between two
 * completed connections inside an upgrade's window, beside the gaps outside
 * any upgrade (the normal spread). Run alone with
 * `deno run --allow-all bench/upgrade_gap.ts [--engine uring|epoll|deno]`,
 * or as part of `deno task bench`.
 *
 * @module
 */

/** One engine's result. */
export interface UpgradeGap {
  engine: string;
  upgrades: number;
  connections: number;
  failed: number;
  /** Longest gap between completions while an upgrade ran, ms. */
  gap_during_upgrade_ms: number;
  /** The same, outside every upgrade: p99 and longest, ms. */
  gap_normal_p99_ms: number;
  gap_normal_max_ms: number;
}

const root = new URL("..", import.meta.url).pathname;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function balCli(home: string, engine: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "bal", ...args],
    cwd: root,
    env: { BAL_HOME: home, BAL_ENGINE: engine },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`bal ${args.join(" ")}: ${text}`);
  return text;
}

/** An echo backend in this process. */
function echo(): { port: number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of listener) {
      conn.readable.pipeTo(conn.writable).catch(() => {});
    }
  })().catch(() => {});
  return { port: (listener.addr as Deno.NetAddr).port, close: () => listener.close() };
}

/** Connections one after another on `workers` loops; each completion's time is recorded. */
function load(port: number, workers: number) {
  const done: number[] = [];
  let failed = 0;
  let running = true;
  const one = async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await conn.write(new Uint8Array([1, 2, 3, 4]));
      const buf = new Uint8Array(4);
      let have = 0;
      while (have < 4) {
        const n = await conn.read(buf.subarray(have));
        if (n === null) throw new Error("closed early");
        have += n;
      }
    } finally {
      conn.close();
    }
  };
  const loops = Array.from({ length: workers }, async () => {
    while (running) {
      await one().then(() => done.push(performance.now()), () => failed++);
    }
  });
  return {
    done,
    failed: () => failed,
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

/** Runs `upgrades` upgrades, a second apart, under load on `engine`. */
export async function upgradeGap(engine: string, upgrades = 5): Promise<UpgradeGap> {
  const home = await Deno.makeTempDir({ prefix: "bal-bench-upgrade-" });
  const backend = echo();
  const port = 20000 + Math.floor(Math.random() * 5000);
  await Deno.writeTextFile(
    `${home}/bench.yaml`,
    `port: ${port}\nbind_address: 127.0.0.1\nbackends: [{host: 127.0.0.1, port: ${backend.port}}]\n` +
      `runtime: {health_check_interval_ms: 600000}\n`,
  );
  await balCli(home, engine, "start", "-d", "-c", `${home}/bench.yaml`);
  const l = load(port, 4);
  const windows: [number, number][] = [];
  try {
    await sleep(1000);
    for (let i = 0; i < upgrades; i++) {
      const from = performance.now();
      await balCli(home, engine, "upgrade");
      windows.push([from, performance.now()]);
      await sleep(1000);
    }
  } finally {
    await l.stop();
    await balCli(home, engine, "stop").catch(() => "");
    backend.close();
    await Deno.remove(home, { recursive: true }).catch(() => {});
  }
  const inWindow = (t: number) => windows.some(([a, b]) => t >= a && t <= b);
  const during: number[] = [];
  const normal: number[] = [];
  for (let i = 1; i < l.done.length; i++) {
    (inWindow(l.done[i]) ? during : normal).push(l.done[i] - l.done[i - 1]);
  }
  normal.sort((a, b) => a - b);
  const round = (v: number) => Math.round(v * 100) / 100;
  return {
    engine,
    upgrades,
    connections: l.done.length,
    failed: l.failed(),
    gap_during_upgrade_ms: round(Math.max(0, ...during)),
    gap_normal_p99_ms: round(normal[Math.floor(normal.length * 0.99)] ?? 0),
    gap_normal_max_ms: round(normal.at(-1) ?? 0),
  };
}

if (import.meta.main) {
  const i = Deno.args.indexOf("--engine");
  const engines = i >= 0 ? [Deno.args[i + 1]] : ["uring", "epoll", "deno"];
  for (const engine of engines) console.log(JSON.stringify(await upgradeGap(engine)));
}
