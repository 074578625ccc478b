/**
 * The balancing policy without sockets: each method's distribution, the
 * remapping of source_hash, and the tiers (health, admin state, limits,
 * backups) every method works within.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../../../src/config/mod.ts";
import type { Backend } from "../../../src/config/mod.ts";
import type { Balancer, Candidate } from "../../../src/balance/balancer.ts";
import { createBalancer } from "../../../src/balance/methods.ts";
import { type BackendView, nextBackend, tier } from "../../../src/balance/select.ts";
import { ADMIN_DEFAULT, applyAdmin } from "../../../src/balance/admin_state.ts";
import { initialHealth } from "../../../src/health/state.ts";

/** A small seeded PRNG (mulberry32): distributions are exact and repeatable. */
function seeded(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Backends of one service from a YAML list. */
function backends(list: string, method = "round_robin"): Backend[] {
  return [...parseConfig(`method: ${method}\nbackends: ${list}\n`, "/t.yaml").services[0].backends];
}

const W123 =
  "[{host: a, port: 1, weight: 1}, {host: b, port: 1, weight: 2}, {host: c, port: 1, weight: 3}]";

/** Counts picks by host over `n` clients, each holding its connection for `hold` picks. */
function distribution(
  balancer: Balancer,
  list: Backend[],
  n: number,
  options: { hold?: number; client?: (i: number) => string; random?: () => number } = {},
): Record<string, number> {
  const active = new Map(list.map((b) => [b.id, 0]));
  const live: string[] = [];
  const counts: Record<string, number> = {};
  const random = options.random ?? seeded(1);
  for (let i = 0; i < n; i++) {
    const candidates: Candidate[] = list.map((b) => ({
      backend: b,
      weight: b.weight,
      active: active.get(b.id)!,
    }));
    const pick = balancer.pick(candidates, { client: options.client?.(i) ?? "10.0.0.1", random });
    counts[pick.backend.host] = (counts[pick.backend.host] ?? 0) + 1;
    if (options.hold) {
      active.set(pick.backend.id, active.get(pick.backend.id)! + 1);
      live.push(pick.backend.id);
      if (live.length > options.hold) {
        const done = live.splice(Math.floor(random() * live.length), 1)[0];
        active.set(done, active.get(done)! - 1);
      }
    }
  }
  return counts;
}

/** Asserts each host got its weight's share of `n` within `tolerance` (relative). */
function assertShares(
  counts: Record<string, number>,
  weights: Record<string, number>,
  n: number,
  tolerance: number,
) {
  const total = Object.values(weights).reduce((a, b) => a + b, 0);
  for (const [host, w] of Object.entries(weights)) {
    const expected = (n * w) / total;
    const got = counts[host] ?? 0;
    assert.ok(
      Math.abs(got - expected) <= expected * tolerance,
      `${host}: ${got} picks, expected ${expected} ± ${tolerance * 100}% (${
        JSON.stringify(counts)
      })`,
    );
  }
}

const WEIGHTS = { a: 1, b: 2, c: 3 };

Deno.test("balance: round_robin with equal weights rotates exactly as before", () => {
  const rr = createBalancer("round_robin");
  const list = backends("[a:1, b:1, c:1]");
  const picks = Array.from(
    { length: 7 },
    () =>
      rr.pick(list.map((b) => ({ backend: b, weight: 1, active: 0 })), {
        client: "x",
        random: Math.random,
      }).backend.host,
  );
  assert.deepEqual(picks, ["a", "b", "c", "a", "b", "c", "a"]);
});

Deno.test("balance: round_robin is smooth: weights 5:1:1 interleave, never five in a row", () => {
  const rr = createBalancer("round_robin");
  const list = backends("[{host: a, port: 1, weight: 5}, b:1, c:1]");
  const picks = Array.from(
    { length: 7 },
    () =>
      rr.pick(list.map((b) => ({ backend: b, weight: b.weight, active: 0 })), {
        client: "x",
        random: Math.random,
      }).backend.host,
  ).join("");
  assert.equal(picks, "aabacaa");
});

Deno.test("balance: weights 1:2:3 over 60,000 picks: round_robin exact, random_two and source_hash within 2 %, least_connections under load within 6 %", () => {
  const list = backends(W123);
  const n = 60_000;
  assertShares(distribution(createBalancer("round_robin"), list, n), WEIGHTS, n, 0.001);
  assertShares(distribution(createBalancer("random_two"), list, n), WEIGHTS, n, 0.02);
  // Hashing: 60,000 different clients.
  const clients = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  assertShares(
    distribution(createBalancer("source_hash"), list, n, { client: clients }),
    WEIGHTS,
    n,
    0.02,
  );
  // Connection-based methods under load: 60 connections held, a random one ending per pick.
  // Live counts are whole numbers, and ties at equal load per weight rotate, which gives
  // the lightest backend about one connection more than its share: 6 %.
  const held = { hold: 60 };
  assertShares(distribution(createBalancer("least_connections"), list, n, held), WEIGHTS, n, 0.06);
  assertShares(distribution(createBalancer("random_two"), list, n, held), WEIGHTS, n, 0.03);
});

Deno.test("balance: least_connections takes the least loaded per weight; idle ties rotate", () => {
  const lc = createBalancer("least_connections");
  const [a, b, c] = backends("[a:1, b:1, {host: c, port: 1, weight: 4}]");
  const ctx = { client: "x", random: Math.random };
  const pick = (loads: number[]) =>
    lc.pick(
      [a, b, c].map((backend, i) => ({ backend, weight: backend.weight, active: loads[i] })),
      ctx,
    ).backend.host;
  assert.equal(pick([3, 1, 8]), "b"); // 3, 1, 2 per unit of weight
  assert.equal(pick([2, 2, 4]), "c"); // 2, 2, 1
  const idle = [pick([0, 0, 0]), pick([0, 0, 0]), pick([0, 0, 0])];
  assert.deepEqual(idle.sort(), ["a", "b", "c"]);
});

Deno.test("balance: random_two takes the less loaded of its two draws", () => {
  const r2 = createBalancer("random_two");
  const [a, b] = backends("[a:1, b:1]");
  const random = seeded(7);
  for (let i = 0; i < 100; i++) {
    const pick = r2.pick([{ backend: a, weight: 1, active: 5 }, {
      backend: b,
      weight: 1,
      active: 1,
    }], {
      client: "x",
      random,
    });
    assert.equal(pick.backend.host, "b");
  }
});

Deno.test("balance: source_hash keeps a client's backend, and removing 1 of 10 moves only its clients", () => {
  const sh = createBalancer("source_hash");
  const all = backends(`[${Array.from({ length: 10 }, (_, i) => `"10.1.0.${i}:80"`).join(", ")}]`);
  const pickFor = (list: Backend[], client: string) =>
    sh.pick(list.map((b) => ({ backend: b, weight: 1, active: 0 })), {
      client,
      random: Math.random,
    }).backend.address;
  const clients = Array.from({ length: 20_000 }, (_, i) => `192.168.${i >> 8}.${i & 255}`);
  const before = clients.map((c) => pickFor(all, c));
  assert.deepEqual(clients.slice(0, 50).map((c) => pickFor(all, c)), before.slice(0, 50), "sticky");
  const removed = all[3].address;
  const after = clients.map((c) => pickFor(all.filter((b) => b.address !== removed), c));
  let moved = 0;
  clients.forEach((_, i) => {
    if (before[i] === after[i]) return;
    moved++;
    assert.equal(before[i], removed, "only the removed backend's clients move");
  });
  const share = moved / clients.length;
  assert.ok(
    share > 0.08 && share < 0.12,
    `moved ${(share * 100).toFixed(1)} %, expected about 10 %`,
  );
});

const view = (b: Backend, over: Partial<BackendView> = {}): BackendView => ({
  backend: b,
  health: initialHealth(),
  admin: undefined,
  active: 0,
  ...over,
});
const down = { ...initialHealth(), healthy: false };
const cooling = { ...initialHealth(), cooldown_until: 2000 };

Deno.test("balance: tiers: healthy, then backups, then unhealthy, then cooling; excluded ones never", () => {
  const [p, bk] = backends("[a:1, {host: b, port: 1, backup: true}]");
  const [limited] = backends("[{host: c, port: 1, max_connections: 2}]");
  const [zero] = backends("[{host: d, port: 1, weight: 0}]");
  const now = 1000;
  assert.equal(tier(view(p), now), 0);
  assert.equal(tier(view(bk), now), 1);
  assert.equal(tier(view(p, { health: down }), now), 2);
  assert.equal(tier(view(bk, { health: down }), now), 3);
  assert.equal(tier(view(p, { health: cooling }), now), 4);
  assert.equal(tier(view(p, { health: cooling }), 3000), 0, "a cooldown ends");
  assert.equal(tier(view(p, { admin: applyAdmin(ADMIN_DEFAULT, { action: "drain" }) }), now), null);
  assert.equal(
    tier(view(p, { admin: applyAdmin(ADMIN_DEFAULT, { action: "disable" }) }), now),
    null,
  );
  assert.equal(tier(view(zero), now), null, "weight 0 takes no new clients");
  assert.equal(
    tier(view(zero, { admin: { state: "enabled", weight: 3 } }), now),
    0,
    "an operator's weight wins",
  );
  assert.equal(tier(view(limited, { active: 1 }), now), 0);
  assert.equal(tier(view(limited, { active: 2 }), now), null, "full");
});

Deno.test("balance: a backup takes clients only while no regular backend can, for every method", () => {
  for (const method of ["round_robin", "least_connections", "source_hash", "random_two"] as const) {
    const [a, b, bk] = backends("[a:1, b:1, {host: z, port: 1, backup: true}]", method);
    const balancer = createBalancer(method);
    const ctx = { client: "10.0.0.9", random: seeded(3) };
    const first = (views: BackendView[]) => nextBackend(views, new Set(), balancer, ctx, 0)?.host;
    for (let i = 0; i < 20; i++) assert.notEqual(first([view(a), view(b), view(bk)]), "z", method);
    const drained = { admin: applyAdmin(ADMIN_DEFAULT, { action: "drain" }) };
    assert.equal(first([view(a, { health: down }), view(b, drained), view(bk)]), "z", method);
    assert.equal(
      first([view(a), view(b, drained), view(bk)]),
      "a",
      `${method}: back once one returns`,
    );
  }
});

Deno.test("balance: with every backend down each is still tried once, then none is left", () => {
  const list = backends("[a:1, b:1, c:1]");
  const balancer = createBalancer("round_robin");
  const views = list.map((b) => view(b, { health: down }));
  const tried = new Set<string>();
  const order: string[] = [];
  for (;;) {
    const next = nextBackend(views, tried, balancer, { client: "x", random: Math.random }, 0);
    if (!next) break;
    tried.add(next.id);
    order.push(next.host);
  }
  assert.deepEqual(order.sort(), ["a", "b", "c"]);
  const disabled = list.map((b) =>
    view(b, { admin: applyAdmin(ADMIN_DEFAULT, { action: "disable" }) })
  );
  assert.equal(
    nextBackend(disabled, new Set(), balancer, { client: "x", random: Math.random }, 0),
    null,
  );
});

Deno.test("balance: admin actions: enable keeps an operator's weight, weight keeps the state", () => {
  const drained = applyAdmin(ADMIN_DEFAULT, { action: "drain" });
  const weighted = applyAdmin(drained, { action: "weight", weight: 7 });
  assert.deepEqual(weighted, { state: "draining", weight: 7 });
  assert.deepEqual(applyAdmin(weighted, { action: "enable" }), { state: "enabled", weight: 7 });
  assert.deepEqual(applyAdmin(weighted, { action: "disable" }), { state: "disabled", weight: 7 });
});
