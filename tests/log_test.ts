import assert from "node:assert/strict";
import type { LogRecord } from "@logtape/logtape";
import { formatJson, formatText } from "../src/log.ts";

const record: LogRecord = {
  category: ["bal", "health"],
  level: "warning",
  message: ["backend ", "10.0.0.1:80", " is down"],
  rawMessage: "backend {backend} is down",
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
