/**
 * TLS in the config: `tls:` and `backend_tls:` read with their files
 * (relative to the config's directory), defaults, a backend's own
 * `backend_tls` over its service's, routes' own certificates, and what is
 * refused with line:col (UDP services, a client_auth without a CA, files
 * that cannot be read).
 */
import assert from "node:assert/strict";
import { checkConfig } from "../../../src/config/mod.ts";
import { tempHome } from "../../helpers.ts";

/** A directory with PEM-looking files (their contents are checked later, by readConfig), removed at exit. */
function dir(): string {
  const d = tempHome();
  for (const f of ["a.crt", "a.key", "ca.crt", "r.crt", "r.key"]) {
    Deno.writeTextFileSync(`${d}/${f}`, `-----BEGIN ${f}-----\n`);
  }
  return d;
}

function errorsOf(text: string, file: string): string[] {
  const r = checkConfig(text, file);
  assert.equal(r.ok, false, `expected errors for:\n${text}`);
  return r.ok ? [] : r.errors.map((e) => e.message);
}

Deno.test("config tls: tls and backend_tls with their files and defaults; a backend's own wins", () => {
  const d = dir();
  const r = checkConfig(
    `port: 9443
tls:
  certificates: [{cert_file: a.crt, key_file: ${d}/a.key}]
  min_version: 1.3
  alpn: [h2, http/1.1]
  client_ca_file: ca.crt
backend_tls: {ca_file: ca.crt}
backends:
  - "10.0.0.1:443"
  - {host: origin.internal, port: 443, backend_tls: {verify: false, server_name: Origin.Test}}
`,
    `${d}/bal.yaml`,
  );
  assert.ok(r.ok, r.ok ? "" : r.errors.join("\n"));
  const [s] = r.config.services;
  assert.equal(s.tls?.certificates[0].cert_file, `${d}/a.crt`);
  assert.equal(s.tls?.certificates[0].key_pem, "-----BEGIN a.key-----\n");
  assert.equal(s.tls?.min_version, "1.3");
  assert.deepEqual(s.tls?.alpn, ["h2", "http/1.1"]);
  assert.equal(s.tls?.client_ca?.file, `${d}/ca.crt`);
  assert.equal(s.tls?.client_auth, "required");
  assert.equal(s.tls?.handshake_timeout_ms, 5000);
  assert.deepEqual(s.backends[0].tls, {
    server_name: null,
    ca: { file: `${d}/ca.crt`, pem: "-----BEGIN ca.crt-----\n" },
    verify: true,
    certificate: null,
  });
  assert.deepEqual(
    { ...s.backends[1].tls, ca: null },
    { server_name: "origin.test", ca: null, verify: false, certificate: null },
  );
  // Each file read is handed to the certificate checks, with where it was named.
  assert.deepEqual(r.pems.map((p) => p.kind), ["pair", "ca", "ca"]);
});

Deno.test("config tls: a route's own certificates, kept by route name", () => {
  const d = dir();
  const r = checkConfig(
    `port: 9443
tls: {certificates: [{cert_file: a.crt, key_file: a.key}]}
routes:
  - sni: r.test
    certificates: [{cert_file: r.crt, key_file: r.key}]
    backends: ["10.0.0.1:80"]
  - sni: other.test
    backends: ["10.0.0.2:80"]
`,
    `${d}/bal.yaml`,
  );
  assert.ok(r.ok, r.ok ? "" : r.errors.join("\n"));
  const tls = r.config.services[0].tls!;
  assert.deepEqual(Object.keys(tls.route_certificates), ["r.test"]);
  assert.equal(tls.route_certificates["r.test"][0].cert_file, `${d}/r.crt`);
});

Deno.test("config tls: what is refused, each at its line:col", () => {
  const d = dir();
  const file = `${d}/bal.yaml`;
  const errors = errorsOf(
    `services:
  - name: dns
    port: 53
    protocol: udp
    tls: {certificates: [{cert_file: a.crt, key_file: a.key}]}
    backends: ["10.0.0.1:53"]
  - name: web
    port: 443
    tls:
      certificates: [{cert_file: missing.crt, key_file: a.key}, {cert_file: a.crt}]
      client_auth: optional
      min_version: "1.1"
      alpn: []
    backends: ["10.0.0.1:80"]
  - name: up
    port: 444
    backend_tls: {cert_file: a.crt}
    tls: {}
    backends: ["10.0.0.1:80"]
`,
    file,
  );
  const expect = [
    /:5:5: services\[0\]\.tls: is for TCP streams/,
    /:10:34: services\[1\]\.tls\.certificates\[0\]\.cert_file: cannot read .*missing\.crt: not found/,
    /:10:65: services\[1\]\.tls\.certificates\[1\]\.key_file: missing/,
    /:11:7: services\[1\]\.tls\.client_auth: needs client_ca_file/,
    /:12:20: services\[1\]\.tls\.min_version: expected "1\.2" or "1\.3"/,
    /:13:13: services\[1\]\.tls\.alpn: expected a list of protocols/,
    /:17:18: services\[2\]\.backend_tls\.key_file: missing/,
    /:18:10: services\[2\]\.tls\.certificates: missing/,
  ];
  for (const re of expect) {
    assert.ok(errors.some((e) => re.test(e)), `${re} not in:\n${errors.join("\n")}`);
  }
});
