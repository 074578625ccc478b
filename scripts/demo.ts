/**
 * `deno task demo`: the two sample backends on 127.0.0.1:9000 and :9100 and
 * bal in the foreground on 127.0.0.1:9295 (sample/bal.yaml), so that
 * `curl localhost:9295` answers from alternating backends. Ctrl-C stops
 * all of it: bal drains, then the backends exit. When a bal runs already
 * (`bal start -d`, as the quick start has it), the demo serves only the
 * backends, until Ctrl-C.
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
const children = [...backends];
// Set only by a signal to the demo: bal ending by itself (it could not start, or died) is a failure.
let signalled = false;
const stopAll = () => {
  // The terminal sends Ctrl-C to the whole process group; forward it anyway for other senders.
  for (const child of children) {
    try {
      child.kill("SIGINT");
    } catch {
      // already exited
    }
  }
};
// From the first moment: a Ctrl-C while the demo still looks around must not orphan a backend.
const onSignal = () => {
  signalled = true;
  stopAll();
};
Deno.addSignalListener("SIGINT", onSignal);
Deno.addSignalListener("SIGTERM", onSignal);

// Give the backends a moment, so bal's first health round finds them up; one that
// exits in that time could not listen, and the demo would not show what it should.
const early = await Promise.race([
  ...backends.map((b) => b.status.then(() => true)),
  new Promise<false>((r) => setTimeout(() => r(false), 500)),
]);
if (early && !signalled) {
  console.error(
    "demo: a sample backend could not start (is something already using port 9000 or 9100?)",
  );
  stopAll();
  await Promise.all(backends.map((b) => b.status));
  Deno.exit(1);
}
const alreadyRunning = !signalled && await balRunning();
if (alreadyRunning) {
  console.log(
    "demo: bal is running already, so this serves only the sample backends on :9000 and :9100; try `curl localhost:9295`; Ctrl-C stops them",
  );
}
if (signalled || alreadyRunning) {
  await Promise.all(backends.map((b) => b.status));
  Deno.exit(0);
}

// Absolute: a nested deno task inherits the caller's INIT_CWD, against which bal resolves -c.
const bal = spawn(["task", "-q", "bal", "start", "-c", `${root}sample/bal.yaml`]);
children.push(bal);
if (signalled) stopAll();

console.log(
  "demo: try `curl localhost:9295` (twice: the backends alternate); Ctrl-C stops everything",
);

const balStatus = await bal.status;
stopAll();
await Promise.all(backends.map((b) => b.status));
if (!signalled) console.error(`demo: bal exited (code ${balStatus.code}); see its message above`);
Deno.exit(signalled ? 0 : balStatus.code || 1);

/** Whether a bal runs already in this user's state directory (`bal status` asks it). */
async function balRunning(): Promise<boolean> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "bal", "status", "--json"],
    cwd: root,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  try {
    return JSON.parse(new TextDecoder().decode(out.stdout)).running === true;
  } catch {
    return false;
  }
}
