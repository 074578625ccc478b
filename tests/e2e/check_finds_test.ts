/**
 * `check` and `start` on an access log that cannot be written (issue 24,
 * item 10): both name the key and its line:col, and neither gives Deno's
 * own advice.
 */
import assert from "node:assert/strict";
import { bal, tempHome } from "../helpers.ts";

Deno.test("check and start: an access_log_path that cannot be written names the key and line:col", async () => {
  const home = tempHome();
  Deno.writeTextFileSync(`${home}/afile`, "");
  const cases: [string, string][] = [
    [`${home}/afile/access.log`, "a part of the path is a file, not a directory"],
    [home, "is a directory"],
    [`${home}/missing/access.log`, "its directory does not exist"],
  ];
  for (const [path, why] of cases) {
    const config = `${home}/c.yaml`;
    Deno.writeTextFileSync(
      config,
      `port: 9400\nbind_address: 127.0.0.1\naccess_log_path: ${path}\nbackends: ["127.0.0.1:9"]\n`,
    );
    for (const command of ["check", "start"]) {
      const r = await bal(home, command, "-c", config);
      assert.equal(r.code, 1, `${command} ${path}`);
      assert.match(
        r.stderr,
        new RegExp(
          `^bal: ${config}:3:18: access_log_path: cannot write ${path}: ${why}$`.replaceAll(
            "/",
            "\\/",
          ),
          "m",
        ),
      );
      assert.doesNotMatch(r.stderr, /allow-all|os error/);
    }
  }
  // A writable one passes, and check leaves no file behind.
  const fine = `${home}/fine.yaml`;
  Deno.writeTextFileSync(
    fine,
    `port: 9400\nbind_address: 127.0.0.1\naccess_log_path: ${home}/new.log\nbackends: ["127.0.0.1:9"]\n`,
  );
  assert.equal((await bal(home, "check", "-c", fine)).code, 0);
  assert.equal(await Deno.stat(`${home}/new.log`).then(() => true, () => false), false);
});
