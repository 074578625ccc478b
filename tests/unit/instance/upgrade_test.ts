/**
 * Which data plane takes each socket an upgrade hands over: pure, no
 * sockets (the descriptors are plain numbers here).
 */
import assert from "node:assert/strict";
import { assignSockets } from "../../../src/instance/upgrade.ts";

const A = "127.0.0.1:9000";
const B = "127.0.0.1:9001";
const l = (address: string, plane: number, fd: number) => ({ service: "s", address, plane, fd });
const plain = (m: Map<number, Map<string, number[]>>) =>
  Object.fromEntries([...m].map(([p, fds]) => [p, Object.fromEntries(fds)]));

Deno.test("upgrade sockets: as many planes as before, each keeps its own", () => {
  const got = assignSockets([l(A, 0, 10), l(A, 1, 11), l(B, 0, 12), l(B, 1, 13)], 2);
  assert.deepEqual(plain(got), { 0: { [A]: [10], [B]: [12] }, 1: { [A]: [11], [B]: [13] } });
});

Deno.test("upgrade sockets: fewer planes, and the sockets of the planes gone join plane 0", () => {
  const got = assignSockets([l(A, 0, 10), l(A, 1, 11), l(A, 2, 12)], 1);
  assert.deepEqual(plain(got), { 0: { [A]: [10, 11, 12] } });
});

Deno.test("upgrade sockets: a plane's extra socket goes to a plane that has none for that address", () => {
  // A bal of one plane that serves two sockets, upgraded to two planes.
  const got = assignSockets([l(A, 0, 10), l(A, 0, 11)], 2);
  assert.deepEqual(plain(got), { 0: { [A]: [10] }, 1: { [A]: [11] } });
  // More sockets than planes: the surplus is served beside plane 0's.
  const many = assignSockets([l(A, 0, 10), l(A, 0, 11), l(A, 0, 12)], 2);
  assert.deepEqual(plain(many), { 0: { [A]: [10, 12] }, 1: { [A]: [11] } });
});
