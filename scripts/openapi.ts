/**
 * Writes docs/openapi.json from the document bal serves at
 * `/api/openapi.json` (src/admin/openapi.ts); a test fails when they differ.
 *
 *     deno run --allow-write=docs scripts/openapi.ts
 *
 * @module
 */
import { OPENAPI } from "../src/admin/openapi.ts";

const path = new URL("../docs/openapi.json", import.meta.url);
Deno.writeTextFileSync(path, JSON.stringify(OPENAPI, null, 2) + "\n");
console.log(`wrote ${path.pathname}`);
