/**
 * Changes made in place (src/config/edit.ts): each touches only its own
 * lines, and what it writes is a config `check` accepts.
 */
import assert from "node:assert/strict";
import { type ConfigEdit, editConfig, EditError } from "../../../src/config/edit.ts";
import { checkConfig } from "../../../src/config/mod.ts";
import { ROOT } from "../../helpers.ts";

const ODD = Deno.readTextFileSync(`${ROOT}tests/fixtures/odd_config.yaml`);

/** The lines of `after` that are not in `before` and those gone, as a line diff would show them. */
function changedLines(before: string, after: string): { added: string[]; removed: string[] } {
  const a = before.split("\n"), b = after.split("\n");
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head++;
  let tail = 0;
  while (
    tail < a.length - head && tail < b.length - head && a.at(-1 - tail) === b.at(-1 - tail)
  ) tail++;
  return { removed: a.slice(head, a.length - tail), added: b.slice(head, b.length - tail) };
}

function edited(text: string, edit: ConfigEdit): string {
  const out = editConfig(text, edit);
  const check = checkConfig(out, "x.yaml");
  assert.ok(check.ok, check.ok ? "" : check.errors.map((e) => e.message).join("\n"));
  return out;
}

Deno.test("edit: a backend added to a block list takes the last entry's indent and style", () => {
  const out = edited(ODD, {
    op: "add_backend",
    service: "api",
    backend: { host: "127.0.0.1", port: 9004, weight: 3 },
  });
  assert.deepEqual(changedLines(ODD, out), {
    removed: [],
    added: ["          - host: 127.0.0.1", "            port: 9004", "            weight: 3"],
  });
});

Deno.test("edit: a flow list gets the backend inside its brackets", () => {
  const out = edited(ODD, { op: "add_backend", service: "db", backend: { host: "::1", port: 5 } });
  assert.match(
    out,
    /backends: \[ "127.0.0.1:5432" , {2}'127.0.0.1:5434', \{ host: ::1, port: 5 \}\]/,
  );
});

Deno.test("edit: three changes leave every other line as it was", () => {
  let text = edited(ODD, { op: "remove_backend", service: "api", backend: "127.0.0.1:9002" });
  text = edited(text, { op: "set_weight", service: "api", backend: "127.0.0.1:9003", weight: 7 });
  text = edited(text, { op: "remove_backend", service: "db", backend: "127.0.0.1:5434" });
  assert.deepEqual(changedLines(ODD, text), {
    removed: [
      "          - {host: 127.0.0.1,   port: 9002, weight: 2}",
      "",
      "          - host: 127.0.0.1",
      "            port: 9003",
      "    # a database",
      "    - name: db",
      "      port: 5433",
      `      backends: [ "127.0.0.1:5432" ,  '127.0.0.1:5434']`,
    ],
    added: [
      "",
      "          - host: 127.0.0.1",
      "            port: 9003",
      "            weight: 7",
      "    # a database",
      "    - name: db",
      "      port: 5433",
      `      backends: [ "127.0.0.1:5432"]`,
    ],
  });
});

Deno.test("edit: a weight on a HOST:PORT entry turns it into a mapping in place", () => {
  const out = edited(ODD, {
    op: "set_weight",
    service: "api",
    backend: "127.0.0.1:9001",
    weight: 0,
  });
  assert.match(out, /\n {10}- \{ host: 127\.0\.0\.1, port: 9001, weight: 0 \} {3}# first\n/);
  const again = edited(out, {
    op: "set_weight",
    service: "api",
    backend: "127.0.0.1:9002",
    weight: 5,
  });
  assert.match(again, /\{host: 127\.0\.0\.1, {3}port: 9002, weight: 5\}/);
});

Deno.test("edit: services are added, replaced and removed as whole items", () => {
  const added = edited(ODD, {
    op: "add_service",
    service: { name: "cache", port: 6380, backends: ["127.0.0.1:6379"] },
  });
  assert.ok(added.startsWith(ODD.trimEnd()));
  assert.ok(
    added.endsWith(
      "    - name: cache\n      port: 6380\n      backends:\n        - 127.0.0.1:6379\n",
    ),
  );
  const replaced = edited(added, {
    op: "replace_service",
    name: "db",
    service: { name: "db", port: 5435, backends: ["127.0.0.1:5432"] },
  });
  assert.match(
    replaced,
    /\n {4}- name: db\n {6}port: 5435\n {6}backends:\n {8}- 127.0.0.1:5432\n {4}- name: cache/,
  );
  const removed = edited(replaced, { op: "remove_service", name: "cache" });
  assert.doesNotMatch(removed, /cache/);
  assert.ok(removed.startsWith(ODD.slice(0, ODD.indexOf("    - name: db"))));
});

Deno.test("edit: the single-service form takes backend changes as service default", () => {
  const single = "port: 9000 # mine\nbackends:\n  - 127.0.0.1:9001\n";
  assert.equal(
    edited(single, { op: "add_backend", service: "default", backend: { host: "h", port: 2 } }),
    "port: 9000 # mine\nbackends:\n  - 127.0.0.1:9001\n  - { host: h, port: 2 }\n",
  );
  assert.throws(
    () => editConfig(single, { op: "add_service", service: { name: "x" } }),
    (e) => e instanceof EditError && e.status === 409 && /single-service form/.test(e.message),
  );
});

Deno.test("edit: what a change names must be there, and an address is added once", () => {
  const cases: [ConfigEdit, number, RegExp][] = [
    [{ op: "remove_backend", service: "nope", backend: "a:1" }, 404, /known: api, db/],
    [{ op: "remove_backend", service: "api", backend: "127.0.0.1:1" }, 404, /no backend/],
    [{ op: "remove_backend", service: "api", backend: "no-port" }, 400, /HOST:PORT/],
    [
      { op: "add_backend", service: "api", backend: { host: "127.0.0.1", port: 9003 } },
      400,
      /already/,
    ],
    [{ op: "add_service", service: { name: "api" } }, 400, /exists/],
  ];
  for (const [edit, status, message] of cases) {
    assert.throws(
      () => editConfig(ODD, edit),
      (e) => e instanceof EditError && e.status === status && message.test(e.message),
      JSON.stringify(edit),
    );
  }
});
