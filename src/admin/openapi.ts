/**
 * The OpenAPI 3.1 document of the admin API (`GET /api/openapi.json`, and
 * docs/openapi.json, which a test keeps equal to it). Every route of
 * `API_ROUTES` is here; a test checks both ways.
 *
 * @module
 */

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const body = (schema: unknown, description: string) => ({
  description,
  content: { "application/json": { schema } },
});
const refusal = (description: string) => body(ref("Error"), description);

/** The answers every change may give besides its success. */
const CHANGE_ERRORS = {
  "400": refusal("Invalid: the errors `bal check` would print, each with its key path"),
  "401": refusal("No token, or an unknown one"),
  "403": refusal("The token may only read"),
  "404": refusal("No such service or backend"),
  "409": refusal(
    "The file changed on disk since bal loaded it, the backend comes from discovery, the file's form forbids it, or the change could not be applied (the file is then as it was)",
  ),
};

const NAME = {
  name: "name",
  in: "path",
  required: true,
  description: "The service's name",
  schema: { type: "string", pattern: "^[a-z0-9_-]{1,32}$" },
};
const BACKEND = {
  name: "backend",
  in: "path",
  required: true,
  description: "The backend as HOST:PORT (an IPv6 host in brackets, URL-encoded)",
  schema: { type: "string" },
};

const SCHEMAS = {
  Error: {
    type: "object",
    required: ["error"],
    properties: {
      error: { type: "string" },
      status: { type: "integer" },
      errors: {
        type: "array",
        items: {
          type: "object",
          required: ["key_path", "message"],
          properties: {
            key_path: { type: "string" },
            message: { type: "string" },
            line: { type: "integer" },
            col: { type: "integer" },
          },
        },
      },
    },
  },
  Service: {
    type: "object",
    description:
      "One service in the config file's own shape (the YAML keys as JSON), as docs/configuration.md describes",
    required: ["name"],
    properties: {
      name: { type: "string" },
      port: { type: "integer" },
      bind_address: { type: "string" },
      method: { type: "string" },
      backends: { type: "array", items: {} },
    },
    additionalProperties: true,
  },
  Backend: {
    type: "object",
    required: ["host", "port"],
    properties: {
      host: { type: "string" },
      port: { type: "integer", minimum: 1, maximum: 65535 },
      weight: { type: "integer", minimum: 0, maximum: 256 },
      backup: { type: "boolean" },
      max_connections: { type: "integer", minimum: 1 },
    },
    additionalProperties: true,
  },
  BackendPatch: {
    type: "object",
    properties: {
      weight: { type: "integer", minimum: 0, maximum: 256 },
      admin_state: { enum: ["enabled", "draining", "disabled"] },
    },
  },
  ServiceView: {
    type: "object",
    required: ["name", "config", "live"],
    properties: {
      name: { type: "string" },
      config: ref("Service"),
      live: {
        type: ["object", "null"],
        description: "What `bal status --json` shows of the service",
      },
    },
  },
  Changed: {
    type: "object",
    required: ["ok", "change", "saved", "generation"],
    properties: {
      ok: { const: true },
      change: { type: "string", description: "What changed, in words" },
      saved: { type: "string", description: "The config file it was written into" },
      generation: { type: "integer", description: "The config generation now in force" },
      service: ref("ServiceView"),
    },
  },
};

/** The document. */
export const OPENAPI = {
  openapi: "3.1.0",
  info: {
    title: "bal admin API",
    version: "1",
    description:
      "Read bal's services and change them from code. Every change is checked as `bal check` checks, saved into the config file in place, and applied as a reload is. Served on the admin listener (admin.listen).",
  },
  security: [{ bearer: [] }],
  paths: {
    "/api/openapi.json": {
      get: {
        summary: "This document",
        responses: { "200": body({ type: "object" }, "The OpenAPI document") },
      },
    },
    "/api/services": {
      get: {
        summary: "Every service, as configured and as it runs",
        responses: {
          "200": body(
            {
              type: "object",
              properties: { services: { type: "array", items: ref("ServiceView") } },
            },
            "The services",
          ),
          "401": refusal("No token, or an unknown one"),
        },
      },
      post: {
        summary: "Create a service",
        requestBody: { required: true, ...body(ref("Service"), "The service") },
        responses: {
          "201": body(ref("Changed"), "Created, saved and listening"),
          ...CHANGE_ERRORS,
        },
      },
    },
    "/api/services/{name}": {
      parameters: [NAME],
      get: {
        summary: "One service, as configured and as it runs",
        responses: {
          "200": body(ref("ServiceView"), "The service"),
          "401": refusal("No token, or an unknown one"),
          "404": refusal("No such service"),
        },
      },
      put: {
        summary: "Replace a service",
        requestBody: {
          required: true,
          ...body(
            ref("Service"),
            "The service; without a name it keeps the path's, and another renames it",
          ),
        },
        responses: { "200": body(ref("Changed"), "Replaced and saved"), ...CHANGE_ERRORS },
      },
      delete: {
        summary: "Remove a service: its listener closes, its connections drain",
        responses: { "200": body(ref("Changed"), "Removed and saved"), ...CHANGE_ERRORS },
      },
    },
    "/api/services/{name}/backends": {
      parameters: [NAME],
      post: {
        summary: "Add a backend (checked before it gets clients)",
        requestBody: { required: true, ...body(ref("Backend"), "The backend") },
        responses: { "201": body(ref("Changed"), "Added and saved"), ...CHANGE_ERRORS },
      },
    },
    "/api/services/{name}/backends/{backend}": {
      parameters: [NAME, BACKEND],
      delete: {
        summary:
          "Remove a backend: no new clients; live connections finish (up to shutdown_drain_timeout_ms)",
        responses: { "200": body(ref("Changed"), "Removed and saved"), ...CHANGE_ERRORS },
      },
      patch: {
        summary:
          "Change a backend's weight (saved into the file) and admin state (as `bal backend` does)",
        requestBody: { required: true, ...body(ref("BackendPatch"), "What to change") },
        responses: {
          "200": body({ type: "object" }, "The backend as `bal status --json` shows it"),
          ...CHANGE_ERRORS,
        },
      },
    },
  },
  components: {
    schemas: SCHEMAS,
    securitySchemes: {
      bearer: {
        type: "http",
        scheme: "bearer",
        description:
          "admin.token (reads and writes) or one of admin.tokens (its role: read or write). Without any token configured, a loopback client may read.",
      },
    },
  },
};
