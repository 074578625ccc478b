/**
 * Traffic shaping in the config: `bandwidth:` on a service and a backend,
 * sizes with units, `mirror:` and its defaults, and what is refused (with
 * line:col), UDP services included.
 */
import assert from "node:assert/strict";
import { checkConfig } from "../../../src/config/mod.ts";
import { parseSize } from "../../../src/config/shaping.ts";

const F = "/etc/bal/s.yaml";

function errorsOf(text: string): string[] {
  const r = checkConfig(text, F);
  assert.equal(r.ok, false, `expected errors for:\n${text}`);
  return r.ok ? [] : r.errors.map((e) => e.message);
}

Deno.test("config shaping: sizes take decimal and binary units, or plain bytes", () => {
  assert.equal(parseSize("10MB"), 10_000_000);
  assert.equal(parseSize("512KiB"), 524_288);
  assert.equal(parseSize("1.5 GB"), 1_500_000_000);
  assert.equal(parseSize("2mib"), 2 * 1024 * 1024);
  assert.equal(parseSize(4096), 4096);
  assert.equal(parseSize("4096"), 4096);
  assert.equal(parseSize("10 MBps"), undefined);
  assert.equal(parseSize("-1"), undefined);
  assert.equal(parseSize(1.5), undefined);
});

Deno.test("config shaping: bandwidth on a service and a backend, mirror with its defaults", () => {
  const r = checkConfig(
    `port: 9000
bandwidth: {upload_bytes_per_s: 1MB, download_bytes_per_s: 512KiB, per: client}
mirror: {backend: "127.0.0.1:9100"}
backends:
  - {host: 10.0.0.1, port: 80, bandwidth: {download_bytes_per_s: 2000}}
  - "10.0.0.2:80"
`,
    F,
  );
  assert.ok(r.ok, r.ok ? "" : r.errors.map((e) => e.message).join("\n"));
  const [s] = r.config.services;
  assert.deepEqual(s.bandwidth, {
    upload_bytes_per_s: 1_000_000,
    download_bytes_per_s: 524_288,
    per: "client",
  });
  assert.deepEqual(s.backends[0].bandwidth, {
    upload_bytes_per_s: 0,
    download_bytes_per_s: 2000,
    per: "connection",
  });
  assert.equal(s.backends[1].bandwidth, null);
  assert.deepEqual(s.mirror, {
    host: "127.0.0.1",
    port: 9100,
    address: "127.0.0.1:9100",
    percent: 100,
    send_proxy: null,
    buffer_bytes: 1024 * 1024,
  });
});

Deno.test("config shaping: bad limits and mirrors are refused with their key and place", () => {
  assert.deepEqual(
    errorsOf(`port: 9000
bandwidth: {upload_bytes_per_s: fast, per: socket}
mirror: {backend: "nowhere", percent: 101, buffer_bytes: 10}
backends: ["10.0.0.1:80"]
`),
    [
      `${F}:2:33: bandwidth.upload_bytes_per_s: expected a size such as 10MB, 512KiB or 65536, got the text "fast"`,
      `${F}:2:44: bandwidth.per: expected one of "connection", "client", got the text "socket"`,
      `${F}:3:19: mirror.backend: "nowhere" is not HOST:PORT, e.g. "127.0.0.1:9100"`,
      `${F}:3:39: mirror.percent: expected an integer from 0 to 100, got 101`,
      `${F}:3:58: mirror.buffer_bytes: expected a size such as 10MB, 512KiB or 65536 (at least 1024 bytes), got 10`,
    ],
  );
  assert.deepEqual(errorsOf(`port: 9000\nbandwidth: {per: client}\nbackends: ["10.0.0.1:80"]\n`), [
    `${F}:2:12: bandwidth: limits nothing; give upload_bytes_per_s, download_bytes_per_s or both`,
  ]);
  assert.deepEqual(errorsOf(`port: 9000\nmirror: {percent: 5}\nbackends: ["10.0.0.1:80"]\n`), [
    `${F}:2:9: mirror.backend: missing; the shadow backend, e.g. backend: "127.0.0.1:9100"`,
  ]);
});

Deno.test("config shaping: a UDP service takes neither bandwidth nor mirror", () => {
  assert.deepEqual(
    errorsOf(`protocol: udp
port: 53
bandwidth: {download_bytes_per_s: 1MB}
mirror: {backend: "127.0.0.1:53"}
backends:
  - {host: 10.0.0.1, port: 53, bandwidth: {upload_bytes_per_s: 1MB}}
`),
    [
      `${F}:3:1: bandwidth: shapes TCP streams; a UDP service has none`,
      `${F}:4:1: mirror: shapes TCP streams; a UDP service has none`,
      `${F}:6:5: backends[0].bandwidth: shapes TCP streams; a UDP service has none`,
    ],
  );
});
