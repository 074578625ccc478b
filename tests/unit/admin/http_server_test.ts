/** The admin endpoint's request heads: parsed strictly, or refused with a status. */
import assert from "node:assert/strict";
import { parseHead } from "../../../src/admin/http_server.ts";

Deno.test("admin http: heads parsed strictly: no bodies, no chunking, keep-alive by version", () => {
  const h = parseHead("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: bearer t");
  assert.ok(typeof h === "object");
  assert.equal(h.target, "/metrics");
  assert.equal(h.keepAlive, true);
  assert.equal((parseHead("GET / HTTP/1.0") as { keepAlive: boolean }).keepAlive, false);
  assert.equal(parseHead("GET / HTTP/1.1\r\nTransfer-Encoding: chunked"), 501);
  assert.equal(parseHead("GET / HTTP/2"), 400);
  assert.equal(parseHead("GET / HTTP/1.1\r\nbad header"), 400);
  assert.equal(parseHead("GET / HTTP/1.1\r\nContent-Length: x"), 400);
});
