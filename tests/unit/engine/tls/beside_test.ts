import assert from "node:assert/strict";
import type { Service } from "../../../../src/config/schema.ts";
import { tlsSides } from "../../../../src/engine/tls/beside.ts";

/** A service with just what decides its side (the rest is not read). */
function service(opts: { tls?: { alpn: string[] }; backendTls?: boolean; found?: boolean }) {
  const tls = opts.tls ? { alpn: opts.tls.alpn } : null;
  return {
    tls,
    backends: [{ tls: opts.backendTls ? {} : null }],
    discovered: opts.found ? [{ template: { tls: {} } }] : [],
  } as unknown as Service;
}

/** The side that serves `s`: exactly one must. */
function sideOf(s: Service, openssl: boolean): string {
  const sides = tlsSides(openssl);
  const serving = (["native", "openssl", "node"] as const).filter((k) => sides[k](s));
  assert.equal(serving.length, 1, `served by ${serving.join(", ") || "none"}`);
  return serving[0];
}

Deno.test("beside: plain services stay native; terminating ones go to OpenSSL when it loaded", () => {
  assert.equal(sideOf(service({}), true), "native");
  assert.equal(sideOf(service({ tls: { alpn: [] } }), true), "openssl");
  assert.equal(sideOf(service({ tls: { alpn: [] } }), false), "node");
});

Deno.test("beside: ALPN and backend_tls (written or discovered) stay on node:tls", () => {
  assert.equal(sideOf(service({ tls: { alpn: ["h2"] } }), true), "node");
  assert.equal(sideOf(service({ tls: { alpn: [] }, backendTls: true }), true), "node");
  assert.equal(sideOf(service({ backendTls: true }), true), "node");
  assert.equal(sideOf(service({ tls: { alpn: [] }, found: true }), true), "node");
});
