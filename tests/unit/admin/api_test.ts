/**
 * The admin API's contract: its OpenAPI document validates as OpenAPI 3.1
 * (by a standard validator), lists exactly the routes the server answers,
 * and is the one in docs/; tokens compare in constant time.
 */
import assert from "node:assert/strict";
import { Validator } from "@seriousme/openapi-schema-validator";
import { OPENAPI } from "../../../src/admin/openapi.ts";
import { API_ROUTES, matchRoute } from "../../../src/admin/api.ts";
import { callerOf, sameSecret } from "../../../src/admin/auth.ts";
import { ADMIN_LIMITS_DEFAULTS } from "../../../src/config/admin.ts";
import { ROOT } from "../../helpers.ts";

Deno.test("api: the OpenAPI document is valid OpenAPI 3.1", async () => {
  const validator = new Validator();
  const result = await validator.validate(structuredClone(OPENAPI));
  assert.equal(validator.version, "3.1");
  assert.ok(result.valid, JSON.stringify(result.errors));
});

Deno.test("api: every route is in the document, and every operation there is a route", () => {
  const documented = Object.entries(OPENAPI.paths).flatMap(([path, item]) =>
    Object.keys(item).filter((k) => k !== "parameters").map((m) => `${m.toUpperCase()} ${path}`)
  );
  const served = [...API_ROUTES.map((r) => `${r.method} ${r.path}`), "GET /api/openapi.json"];
  assert.deepEqual(documented.toSorted(), served.toSorted());
});

Deno.test("api: docs/openapi.json is the document served (scripts/openapi.ts writes it)", () => {
  const doc = JSON.parse(Deno.readTextFileSync(`${ROOT}docs/openapi.json`));
  assert.deepEqual(doc, JSON.parse(JSON.stringify(OPENAPI)));
});

Deno.test("api: paths match their routes, parts decoded", () => {
  const m = matchRoute("DELETE", "/api/services/api/backends/%5B%3A%3A1%5D%3A80");
  assert.equal(m?.route.path, "/api/services/{name}/backends/{backend}");
  assert.deepEqual(m?.parts, { name: "api", backend: "[::1]:80" });
  assert.equal(matchRoute("GET", "/api/services/a/b"), null);
  assert.equal(matchRoute("PUT", "/api/services"), null);
});

Deno.test("auth: secrets compare equal only when equal, whatever the lengths", () => {
  assert.ok(sameSecret("abcdefghijklmnop", "abcdefghijklmnop"));
  for (const other of ["", "a", "abcdefghijklmnoq", "abcdefghijklmnopq", "bbcdefghijklmnop"]) {
    assert.ok(!sameSecret(other, "abcdefghijklmnop"), other);
  }
  // A prefix repeated to the length, the case a modulo index could let through.
  assert.ok(!sameSecret("ab", "abab"));
});

Deno.test("auth: the token names the caller and its role; every token is compared", () => {
  const settings = {
    listen: null,
    token: "full-rights-token-0001",
    tokens: [
      { name: "ci", token: "ci-token-000000000001", role: "write" as const },
      { name: "graf", token: "graf-token-0000000001", role: "read" as const },
    ],
    ...ADMIN_LIMITS_DEFAULTS,
  };
  assert.deepEqual(callerOf("Bearer full-rights-token-0001", settings), {
    name: "admin",
    role: "write",
  });
  assert.deepEqual(callerOf("bearer ci-token-000000000001", settings), {
    name: "ci",
    role: "write",
  });
  assert.deepEqual(callerOf("Bearer graf-token-0000000001", settings), {
    name: "graf",
    role: "read",
  });
  assert.equal(callerOf("Bearer graf-token-000000000", settings), null);
  assert.equal(callerOf(null, settings), null);
  assert.deepEqual(callerOf(null, { ...settings, token: null, tokens: [] }), {
    name: "anonymous",
    role: "read",
  });
});
