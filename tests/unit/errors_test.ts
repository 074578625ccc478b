/** Errors for the operator (errors.ts): one line for them, the cause kept for whoever debugs it. */
import assert from "node:assert/strict";
import { BalError, ConfigError, describeError, ListenError, StateError } from "../../src/errors.ts";
import { DialError } from "../../src/net/dial.ts";

Deno.test("errors: a wrapped error keeps what it wraps as its cause, and says one line", () => {
  const low = new Deno.errors.AddrInUse("Address already in use (os error 98)");
  const wrapped = [
    new BalError("cannot write the default config /x: permission denied", 1, { cause: low }),
    new StateError("bal (pid 7) exited during the reload", { cause: low }),
    new ListenError("cannot listen on 127.0.0.1:80: address already in use", { cause: low }),
    new DialError("refused", "connection refused", { cause: low }),
  ];
  for (const err of wrapped) {
    assert.equal(err.cause, low, err.name);
    assert.ok(!describeError(err).includes("\n"));
  }
  assert.equal(new BalError("x").cause, undefined);
});

Deno.test("errors: a config error reads FILE:LINE:COL: key.path: reason, and exits 1", () => {
  const err = new ConfigError({ file: "/etc/bal.yaml", line: 3, col: 5 }, "runtime.x", "unknown");
  assert.equal(err.message, "/etc/bal.yaml:3:5: runtime.x: unknown");
  assert.equal(err.exitCode, 1);
  assert.equal(new ConfigError({ file: "/f" }, "", "empty").message, "/f: empty");
  assert.equal(describeError("plain"), "plain");
  assert.equal(describeError(new Error("first\nsecond")), "first");
});
