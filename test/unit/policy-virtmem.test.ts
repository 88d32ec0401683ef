/** virtmem's pressure-driven policy (pure): guard rails over random snapshots, pressure, reclaim, budget. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decideVirtmem, DEFAULT_POLICY_OPTIONS, virtmemPolicy, type VirtmemPolicyState } from '../../src/policy/virtmem-policy.js';
import { momPolicy } from '../../src/policy/mom.js';
import { MiB, type GuestSnapshot, type GuestSignals, type Snapshot } from '../../src/policy/types.js';

const fresh = (): VirtmemPolicyState => ({ lastPressureS: new Map(), pressureStreak: new Map() });
const sig = (over: Partial<GuestSignals> = {}): GuestSignals => ({
  availableKiB: 300 * MiB, unusedKiB: 200 * MiB, diskCachesKiB: 50 * MiB, majorFaultsPerS: 0, swapInKiBPerS: 0, ageS: 1, ...over,
});
const guest = (name: string, currentKiB: number, signals: GuestSignals | null = sig(), over: Partial<GuestSnapshot['settings']> = {}): GuestSnapshot => ({
  name, currentKiB, maxKiB: 2048 * MiB, signals,
  settings: { enabled: true, floorKiB: 384 * MiB, ceilingKiB: 2048 * MiB, shares: 1000, ...over },
});
const snap = (guests: GuestSnapshot[], budgetKiB: number | null = null, nowS = 100): Snapshot => ({
  nowS, guests, host: { memTotalKiB: 24 * 1024 * MiB, memAvailableKiB: 20 * 1024 * MiB, guestBudgetKiB: budgetKiB },
});

/** A small seeded PRNG (mulberry32): the same snapshots every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('guard rails hold over 5000 random snapshots', () => {
  test('never below the floor or use + half a headroom, never above the ceiling or the maximum', () => {
    const r = rng(42);
    const state = fresh();
    for (let i = 0; i < 5000; i++) {
      const n = 1 + Math.floor(r() * 5);
      const guests: GuestSnapshot[] = [];
      for (let j = 0; j < n; j++) {
        const maxKiB = (512 + Math.floor(r() * 3584)) * MiB;
        const floorKiB = (128 + Math.floor(r() * 512)) * MiB;
        const ceilingKiB = Math.max(floorKiB, Math.floor(r() * 1.2 * maxKiB));
        const currentKiB = Math.floor(r() * maxKiB) + 64 * MiB;
        const availableKiB = Math.floor(r() * currentKiB);
        const g = guest(`g${j}`, currentKiB, r() < 0.1 ? null : sig({
          availableKiB, majorFaultsPerS: r() < 0.2 ? r() * 1000 : 0, swapInKiBPerS: r() < 0.1 ? 1024 : 0, ageS: r() * 15,
          ...(r() < 0.3 ? { stallPct: r() * 5 } : {}),
        }), { floorKiB, ceilingKiB, shares: 1 + Math.floor(r() * 10000), enabled: r() < 0.9 });
        g.maxKiB = maxKiB;
        guests.push(g);
      }
      const budget = r() < 0.5 ? Math.floor(r() * 8192) * MiB : null;
      const s = snap(guests, budget, i);
      const d = decideVirtmem(s, state);
      for (const a of d.actions) {
        const g = guests.find((x) => x.name === a.name)!;
        assert.ok(g.settings.enabled && g.signals && g.signals.ageS <= DEFAULT_POLICY_OPTIONS.maxStatsAgeS, `acted without fresh stats or while off: ${JSON.stringify(g)}`);
        const top = Math.min(g.settings.ceilingKiB, g.maxKiB);
        assert.ok(a.targetKiB <= top, `above ceiling/max: ${a.targetKiB} > ${top}`);
        const use = g.currentKiB - g.signals.availableKiB;
        const safe = Math.min(top, Math.max(g.settings.floorKiB, use));
        assert.ok(a.targetKiB >= safe, `below floor or into use: ${a.targetKiB} < ${safe} (${JSON.stringify(g)})`);
        assert.ok(a.reason.length > 10);
        assert.ok(a.targetKiB % (2 * MiB) === 0 || a.targetKiB === top || a.targetKiB === g.settings.floorKiB, 'virtio-mem block aligned, or a bound');
      }
      assert.equal(d.actions.length + d.holds.length, guests.length, 'every guest is accounted for');
    }
  });
});

describe('pressure', () => {
  test('a guest that reports pressure grows at once by at least 256 MiB, and the reason says why', () => {
    const d = decideVirtmem(snap([guest('p', 1024 * MiB, sig({ availableKiB: 20 * MiB }))]), fresh());
    assert.equal(d.actions.length, 1);
    assert.ok(d.actions[0]!.targetKiB >= 1024 * MiB + 256 * MiB);
    assert.match(d.actions[0]!.reason, /^pressure \(available 20 MiB < \d+ MiB\): grow by at least 256 MiB$/);
  });
  test('major faults, swap-in and the guest\'s own stall count as pressure', () => {
    for (const s of [sig({ majorFaultsPerS: 500 }), sig({ swapInKiBPerS: 4096 }), sig({ stallPct: 4.2 })]) {
      const d = decideVirtmem(snap([guest('p', 1024 * MiB, s)]), fresh());
      assert.ok(d.actions[0]!.targetKiB > 1024 * MiB, JSON.stringify(s));
      assert.match(d.actions[0]!.reason, /pressure \((\d+ major faults\/s|swapping in .*|memory stall 4\.2 %)\)/);
    }
  });
  test('backs off: no reclaim from a guest for the cool-down after pressure, then reclaim resumes', () => {
    const state = fresh();
    decideVirtmem(snap([guest('b', 1024 * MiB, sig({ majorFaultsPerS: 1000 }))], null, 100), state);
    const idle = sig({ availableKiB: 900 * MiB });
    const during = decideVirtmem(snap([guest('b', 1536 * MiB, idle)], null, 110), state);
    assert.equal(during.actions.length, 0);
    assert.match(during.holds[0]!.reason, /pressure 10 s ago: cooling down/);
    const after = decideVirtmem(snap([guest('b', 1536 * MiB, idle)], null, 100 + DEFAULT_POLICY_OPTIONS.coolDownS + 1), state);
    assert.equal(after.actions.length, 1);
    assert.ok(after.actions[0]!.targetKiB < 1536 * MiB);
  });
});

describe('reclaim', () => {
  test('idle memory and cache are taken back in bounded steps, down to use + 1.5 headrooms', () => {
    const d = decideVirtmem(snap([guest('i', 2048 * MiB, sig({ availableKiB: 1800 * MiB }))]), fresh());
    assert.equal(d.actions[0]!.targetKiB, 2048 * MiB - DEFAULT_POLICY_OPTIONS.reclaimStepKiB);
    const near = decideVirtmem(snap([guest('i', 600 * MiB, sig({ availableKiB: 400 * MiB }))]), fresh());
    // use 200 MiB, headroom 96 MiB: 200 + 144 = 344 MiB, but the floor is 384 MiB.
    assert.equal(near.actions[0]!.targetKiB, 384 * MiB);
  });
  test('a guest within its band, disabled, without or with stale statistics is held, with the reason', () => {
    const d = decideVirtmem(snap([
      guest('band', 1024 * MiB, sig({ availableKiB: 150 * MiB })),
      guest('off', 1024 * MiB, sig(), { enabled: false }),
      guest('nostats', 1024 * MiB, null),
      guest('stale', 1024 * MiB, sig({ availableKiB: 900 * MiB, ageS: 60 })),
    ]), fresh());
    assert.deepEqual(d.actions, []);
    assert.deepEqual(d.holds.map((h) => h.name), ['off', 'nostats', 'stale', 'band']);
    assert.match(d.holds[0]!.reason, /policy off/);
    assert.match(d.holds[1]!.reason, /no guest statistics/);
    assert.match(d.holds[2]!.reason, /60 s old/);
    assert.match(d.holds[3]!.reason, /within band/);
  });
});

describe('the host budget', () => {
  test('a pressured guest is funded by cutting idle guests to their safe minimum first', () => {
    const d = decideVirtmem(snap([
      guest('needy', 1024 * MiB, sig({ availableKiB: 10 * MiB })),
      guest('idle', 1536 * MiB, sig({ availableKiB: 400 * MiB })),
    ], 2600 * MiB), fresh());
    const needy = d.actions.find((a) => a.name === 'needy')!;
    const idle = d.actions.find((a) => a.name === 'idle')!;
    assert.ok(needy.targetKiB > 1024 * MiB);
    assert.ok(idle.targetKiB < 1536 * MiB);
    assert.match(idle.reason, /host budget: cut to/);
    assert.ok(needy.targetKiB + idle.targetKiB <= 2600 * MiB + 2 * MiB);
  });
});

test('the MoM port shrinks by at most 5 % under host pressure and grows by 5 % otherwise', () => {
  const g = guest('m', 2000 * MiB, sig({ unusedKiB: 1500 * MiB }));
  const shrink = momPolicy.decide(snap([g], 2000 * MiB), null);
  assert.equal(shrink.actions[0]!.targetKiB, Math.trunc(2000 * MiB * 0.95));
  const grow = momPolicy.decide(snap([guest('m', 1000 * MiB, sig({ unusedKiB: 900 * MiB }))], 4000 * MiB), null);
  // used 100 MiB + 20 % of the 2 GiB maximum = 509.6 MiB < 1050 MiB: 5 % growth wins.
  assert.equal(grow.actions[0]!.targetKiB, Math.trunc(1000 * MiB * 1.05));
  assert.equal(virtmemPolicy().periodS, 1);
});
