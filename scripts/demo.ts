/**
 * `deno task demo`: the two sample backends on 127.0.0.1:9000 and :9100 and
 * bal in the foreground on 127.0.0.1:9295 (sample/bal.yaml), so that
 * `curl localhost:9295` answers from alternating backends. Ctrl-C stops
 * all of it: bal drains, then the backends exit.
 *
 * @module
 */
const root = new URL("..", import.meta.url).pathname;

function spawn(args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), { args, cwd: root, stdin: "null" }).spawn();
}

// The first run downloads bal's npm packages; do it now, quietly, so its progress does not
// land on top of bal's first lines.
await new Deno.Command(Deno.execPath(), {
  args: ["cache", "--quiet", "src/main.ts"],
  cwd: root,
  stdin: "null",
  stdout: "null",
}).output();

const backends = [9000, 9100].map((port) =>
  spawn(["run", "--allow-net", "--allow-env", "sample/backend.js", String(port)])
);
// Give the backends a moment, so bal's first health round finds them up; one that
// exits in that time could not listen, and the demo would not show what it should.
const early = await Promise.race([
  ...backends.map((b) => b.status.then(() => true)),
  new Promise<false>((r) => setTimeout(() => r(false), 500)),
]);
if (early) {
  console.error(
    "demo: a sample backend could not start (is something already using port 9000 or 9100?)",
  );
  for (const b of backends) {
    try {
      b.kill("SIGTERM");
    } catch {
      // already exited
    }
  }
  Deno.exit(1);
}
// Absolute: a nested deno task inherits the caller's INIT_CWD, against which bal resolves -c.
const bal = spawn(["task", "-q", "bal", "start", "-c", `${root}sample/bal.yaml`]);

console.log(
  "demo: try `curl localhost:9295` (twice: the backends alternate); Ctrl-C stops everything",
);

// Set only by a signal to the demo: bal ending by itself (it could not start, or died) is a failure.
let signalled = false;
let stopping = false;
const stopAll = () => {
  if (stopping) return;
  stopping = true;
  // The terminal sends Ctrl-C to the whole process group; forward it anyway for other senders.
  for (const child of [bal, ...backends]) {
    try {
      child.kill("SIGINT");
    } catch {
      // already exited
    }
  }
};
const onSignal = () => {
  signalled = true;
  stopAll();
};
Deno.addSignalListener("SIGINT", onSignal);
Deno.addSignalListener("SIGTERM", onSignal);

const balStatus = await bal.status;
stopAll();
await Promise.all(backends.map((b) => b.status));
if (!signalled) console.error(`demo: bal exited (code ${balStatus.code}); see its message above`);
Deno.exit(signalled ? 0 : balStatus.code || 1);
