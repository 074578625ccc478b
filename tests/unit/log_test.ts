import assert from "node:assert/strict";
import { formatJson, formatText, logger, type LogRecord, setupLogging } from "../../src/log.ts";

const record: LogRecord = {
  module: "health",
  level: "warn",
  message: "backend 10.0.0.1:80 is down",
  timestamp: Date.UTC(2026, 10, 25, 12, 0, 0),
  properties: { event: "backend_down", backend: "10.0.0.1:80", consecutive_failures: 3 },
};

Deno.test("log: JSON lines have the documented keys", () => {
  const line = JSON.parse(formatJson(record));
  assert.deepEqual(line, {
    timestamp: "2026-11-25T12:00:00.000Z",
    level: "warn",
    message: "backend 10.0.0.1:80 is down",
    module: "health",
    event: "backend_down",
    fields: { backend: "10.0.0.1:80", consecutive_failures: 3 },
  });
});

Deno.test("log: text lines are readable", () => {
  assert.equal(
    formatText(record),
    "2026-11-25T12:00:00.000Z WARN  health: backend 10.0.0.1:80 is down [backend_down]",
  );
});

Deno.test("log: a message's {names} are filled from its properties; levels below the setting are dropped", () => {
  const seen: LogRecord[] = [];
  setupLogging({ level: "info", format: "json", forward: (r) => seen.push(r) });
  const log = logger("proxy");
  log.debug("not written {x}", { x: 1 });
  log.warn("{client} refused by {service}: {n} in {list}; {missing} stays", {
    event: "client_denied",
    client: "10.0.0.9",
    service: "web",
    n: 3,
    list: ["a"],
  });
  assert.equal(seen.length, 1);
  assert.equal(seen[0].module, "proxy");
  assert.equal(seen[0].level, "warn");
  assert.equal(seen[0].message, '10.0.0.9 refused by web: 3 in ["a"]; {missing} stays');
});
