/**
 * The config file: schema, checking, defaults, warnings and the default
 * text. Import from here.
 *
 * @module
 */
export * from "../net/address.ts";
export * from "./check.ts";
export { closest } from "./fields.ts";
export * from "./default_text.ts";
export { RUNTIME_KEYS, RUNTIME_RULES, runtimeDefaults } from "./runtime.ts";
export * from "./schema.ts";
export * from "./warnings.ts";
