/**
 * `check` finds what `start` would (issue 24, items 9, 11 and 15): an admin
 * endpoint on a service's address, health-check text that would forge a
 * request, a top-level key written inside a service, a bad allow_empty.
 * Each is one line naming the file, line:col and key.
 */
import assert from "node:assert/strict";
import { checkConfig } from "../../../src/config/mod.ts";

const F = "/etc/bal/c.yaml";

function errorsOf(text: string): string[] {
  const r = checkConfig(text, F);
  assert.equal(r.ok, false, `expected errors for:\n${text}`);
  return r.ok ? [] : r.errors.map((e) => e.message);
}

Deno.test("check: admin.listen on a service's listener is an error at its line:col", () => {
  assert.deepEqual(
    errorsOf(
      'port: 9400\nbind_address: 127.0.0.1\nadmin: {listen: "127.0.0.1:9400"}\nbackends: ["127.0.0.1:9"]\n',
    ),
    [
      `${F}:3:17: admin.listen: 127.0.0.1:9400 collides with service "default" on 127.0.0.1:9400; give the admin endpoint a port of its own`,
    ],
  );
  // A wildcard service covers every address on its port.
  assert.match(
    errorsOf(
      'services:\n  - {name: web, port: 9400, bind_address: 0.0.0.0, backends: ["127.0.0.1:9"]}\nadmin:\n  listen: "127.0.0.1:9400"\n',
    )[0],
    /:4:11: admin\.listen: 127\.0\.0\.1:9400 collides with service "web" on 0\.0\.0\.0:9400/,
  );
  assert.ok(
    checkConfig(
      'port: 9400\nbind_address: 127.0.0.1\nadmin: {listen: "127.0.0.1:9401"}\nbackends: ["127.0.0.1:9"]\n',
      F,
    ).ok,
  );
});

Deno.test("check: health_check path and host cannot carry spaces or line breaks (header injection)", () => {
  const hc = (inner: string) =>
    `bind_address: 127.0.0.1\nbackends: ["127.0.0.1:9"]\nhealth_check: {type: http, ${inner}}\n`;
  assert.match(
    errorsOf(hc('path: "/x\\r\\nX-Evil: 1"'))[0],
    /:3:34: health_check\.path: "\/x\\r\\nX-Evil: 1" has a space or a control character; percent-encode it/,
  );
  assert.match(errorsOf(hc('path: "/a b"'))[0], /health_check\.path: .* has a space/);
  assert.match(
    errorsOf(hc('host: "a.test\\r\\nX-Evil: 1"'))[0],
    /:3:34: health_check\.host: .* is not a host name/,
  );
  assert.ok(checkConfig(hc('path: "/healthz?full=1", host: "api.example.com:8080"'), F).ok);
});

Deno.test("check: a top-level key inside a service says it belongs at the top level", () => {
  assert.deepEqual(
    errorsOf(
      'services:\n  - {name: a, port: 9400, bind_address: 127.0.0.1, backends: ["127.0.0.1:9"], access_log_path: x.log}\n',
    ),
    [
      `${F}:2:79: services[0].access_log_path: unknown key; it belongs at the top level, for every service`,
    ],
  );
});

Deno.test("check: discovery.allow_empty is a boolean; alone it needs no etcd, and sets every entry", () => {
  const base = 'bind_address: 127.0.0.1\nbackends: [{dns: "web.example:80"}]\n';
  assert.match(
    errorsOf(`${base}discovery: {allow_empty: sometimes}\n`)[0],
    /:3:26: discovery\.allow_empty: expected true or false, got the text "sometimes"$/,
  );
  const r = checkConfig(`${base}discovery: {allow_empty: true}\n`, F);
  assert.ok(r.ok);
  assert.deepEqual(r.config.services[0].discovered.map((d) => d.allow_empty), [true]);
  const off = checkConfig(base, F);
  assert.ok(off.ok);
  assert.deepEqual(off.config.services[0].discovered.map((d) => d.allow_empty), [false]);
  // allow_empty alone is no etcd: a service still needs backends of its own.
  assert.match(
    errorsOf("bind_address: 127.0.0.1\ndiscovery: {allow_empty: true}\n")[0],
    /backends/,
  );
});
