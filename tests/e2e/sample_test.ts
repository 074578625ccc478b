/** The sample backends: `npm run start:all` / `stop` through sample/run.js, with node. */
import assert from "node:assert/strict";
import { alive, ROOT, waitFor } from "../helpers.ts";

const sample = `${ROOT}sample`;

async function npmRun(script: string): Promise<string> {
  const out = await new Deno.Command("npm", {
    args: ["run", "--silent", script],
    cwd: sample,
    stderr: "inherit",
  }).output();
  assert.equal(out.code, 0, `npm run ${script}`);
  return new TextDecoder().decode(out.stdout);
}

Deno.test("sample: start:all runs both backends, stop ends exactly those", async () => {
  // Another process on the machine that must survive `npm run stop`.
  const bystander = new Deno.Command("node", { args: ["-e", "setTimeout(() => {}, 30000)"] })
    .spawn();
  try {
    const started = await npmRun("start:all");
    const pids = [...started.matchAll(/pid (\d+)/g)].map((m) => Number(m[1]));
    assert.equal(pids.length, 2, started);
    for (const port of [9000, 9100]) {
      const body = await waitFor(
        `backend ${port}`,
        () => fetch(`http://127.0.0.1:${port}/hello`).then((r) => r.json()).catch(() => undefined),
      );
      assert.equal(body.port, port);
      assert.equal(body.path, "/hello");
    }
    const stopped = await npmRun("stop");
    assert.match(stopped, /backend 9000 stopped/);
    await waitFor("both backends to exit", () => pids.every((p) => !alive(p)));
    assert.ok(alive(bystander.pid), "stop must not touch processes it did not start");
    assert.match(await npmRun("stop"), /backend 9000 was not running/);
  } finally {
    bystander.kill("SIGKILL");
    await bystander.status;
    await npmRun("stop").catch(() => {});
  }
});
