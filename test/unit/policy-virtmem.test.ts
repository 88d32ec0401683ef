/** virtmem's pressure-driven policy (pure): guard rails over random snapshots, pressure, reclaim, budget. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decideVirtmem, DEFAULT_POLICY_OPTIONS, virtmemPolicy, type VirtmemPolicyState } from '../../src/policy/virtmem-policy.js';
import { momPolicy } from '../../src/policy/mom.js';
import { MiB, type GuestSnapshot, type GuestSignals, type Snapshot } from '../../src/policy/types.js';

const fresh = (): VirtmemPolicyState => virtmemPolicy().initialState();
const sig = (over: Partial<GuestSignals> = {}): GuestSignals => ({
  availableKiB: 300 * MiB, unusedKiB: 200 * MiB, diskCachesKiB: 50 * MiB, majorFaultsPerS: 0, swapInKiBPerS: 0, ageS: 1, ...over,
});
const guest = (name: string, currentKiB: number, signals: GuestSignals | null = sig(), over: Partial<GuestSnapshot['settings']> = {}): GuestSnapshot => ({
  name, currentKiB, maxKiB: 2048 * MiB, signals,
  settings: { enabled: true, floorKiB: 384 * MiB, ceilingKiB: 2048 * MiB, shares: 1000, ...over },
});
const snap = (guests: GuestSnapshot[], budgetKiB: number | null = null, nowS = 100): Snapshot => ({
  nowS, guests, host: { memTotalKiB: 24 * 1024 * MiB, memAvailableKiB: 24 * 1024 * MiB - guests.reduce((s, g) => s + g.currentKiB, 0), guestBudgetKiB: budgetKiB },
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
  test('major faults, swap-in and the guest\'s own stall count as pressure in a guest short of what it could free', () => {
    // 1 GiB guest, 150 MiB available: use 874 MiB, headroom 109 MiB; under two headrooms.
    for (const s of [sig({ availableKiB: 150 * MiB, majorFaultsPerS: 500 }), sig({ swapInKiBPerS: 4096 }), sig({ availableKiB: 150 * MiB, stallPct: 4.2 })]) {
      const d = decideVirtmem(snap([guest('p', 1024 * MiB, s)]), fresh());
      assert.ok(d.actions[0]!.targetKiB > 1024 * MiB, JSON.stringify(s));
      assert.match(d.actions[0]!.reason, /pressure \((\d+ major faults\/s|swapping in .*|memory stall 4\.2 %)\)/);
    }
  });
  test('backs off: no reclaim from a guest for the cool-down after pressure, then reclaim resumes', () => {
    const state = fresh();
    decideVirtmem(snap([guest('b', 1024 * MiB, sig({ availableKiB: 150 * MiB, majorFaultsPerS: 1000 }))], null, 100), state);
    const idle = sig({ availableKiB: 900 * MiB });
    const during = decideVirtmem(snap([guest('b', 1536 * MiB, idle)], null, 105), state);
    assert.equal(during.actions.length, 0);
    assert.match(during.holds[0]!.reason, /pressure 5 s ago: cooling down/);
    const after = decideVirtmem(snap([guest('b', 1536 * MiB, idle)], null, 100 + DEFAULT_POLICY_OPTIONS.coolDownS + 1), state);
    assert.equal(after.actions.length, 1);
    assert.ok(after.actions[0]!.targetKiB < 1536 * MiB);
  });
});

describe('page cache is not demand', () => {
  const at = (g: GuestSnapshot, rssKiB: number, rssAtS?: number): GuestSnapshot => ({ ...g, rssKiB, ...(rssAtS !== undefined ? { rssAtS } : {}) });
  test('stall and major faults with more than two headrooms available are the guest turning over its cache, not pressure', () => {
    // 1 GiB guest reading a large file: 700 MiB available (mostly cache), stalling in reclaim.
    const d = decideVirtmem(snap([guest('c', 1024 * MiB, sig({ availableKiB: 700 * MiB, diskCachesKiB: 650 * MiB, stallPct: 8.2, majorFaultsPerS: 300 }))]), fresh());
    assert.equal(d.actions.length, 1);
    assert.ok(d.actions[0]!.targetKiB < 1024 * MiB, 'reclaimed, not grown');
    assert.match(d.actions[0]!.reason, /; not pressure: 300 major faults\/s, memory stall 8\.2 % with 700 MiB available \(turning over its own cache\)$/);
  });
  test('host-backed growth that the samples show going into page cache is not a rise', () => {
    const state = fresh();
    // t=100: 600 MiB guest, 180 MiB available (within its band), RSS 400 MiB.
    decideVirtmem(snap([at(guest('c', 600 * MiB, sig({ availableKiB: 180 * MiB, diskCachesKiB: 50 * MiB, ageS: 0.2 })), 400 * MiB)], null, 100), state);
    // t=101: RSS +150 MiB; the new sample shows the same MemAvailable and 150 MiB more cache.
    const d = decideVirtmem(snap([at(guest('c', 600 * MiB, sig({ availableKiB: 180 * MiB, diskCachesKiB: 200 * MiB, ageS: 0.2 })), 550 * MiB)], null, 101), state);
    assert.deepEqual(d.actions, [], JSON.stringify(d));
    // t=102: RSS +150 MiB again, no newer sample: still the cache's share (none of it is use).
    const d2 = decideVirtmem(snap([at(guest('c', 600 * MiB, sig({ availableKiB: 180 * MiB, diskCachesKiB: 200 * MiB, ageS: 1.2 })), 700 * MiB)], null, 102), state);
    assert.deepEqual(d2.actions, [], JSON.stringify(d2));
    // The same host readings with MemAvailable falling instead: use, grown ahead.
    const anon = fresh();
    decideVirtmem(snap([at(guest('a', 600 * MiB, sig({ availableKiB: 200 * MiB, diskCachesKiB: 50 * MiB, ageS: 0.2 })), 400 * MiB)], null, 100), anon);
    const g = decideVirtmem(snap([at(guest('a', 600 * MiB, sig({ availableKiB: 50 * MiB, diskCachesKiB: 50 * MiB, ageS: 0.2 })), 550 * MiB)], null, 101), anon);
    assert.equal(g.actions.length, 1);
    assert.match(g.actions[0]!.reason, /^use rising 150 MiB\/s with 50 MiB available: grow ahead/);
  });
  test('a rise grown for before any sample showed it, that later samples show was page cache, holds no cool-down', () => {
    const state = fresh();
    decideVirtmem(snap([at(guest('c', 600 * MiB, sig({ availableKiB: 200 * MiB, diskCachesKiB: 50 * MiB, ageS: 0.2 })), 400 * MiB)], null, 100), state);
    // t=101: RSS +150 MiB before any sample shows where it went: counted as use, grown ahead.
    const up = decideVirtmem(snap([at(guest('c', 600 * MiB, sig({ availableKiB: 200 * MiB, diskCachesKiB: 50 * MiB, ageS: 1.2 })), 550 * MiB)], null, 101), state);
    assert.equal(up.actions.length, 1);
    const grown = up.actions[0]!.targetKiB;
    assert.ok(grown > 600 * MiB);
    // t=103: grown; a sample taken over a second after the rise shows the guest's use where it
    // was and 300 MiB more cache.
    const d = decideVirtmem(snap([at(guest('c', grown, sig({ availableKiB: grown - 400 * MiB, diskCachesKiB: 350 * MiB, ageS: 0.2 })), 560 * MiB)], null, 103), state);
    assert.equal(d.actions.length, 1, JSON.stringify(d));
    assert.ok(d.actions[0]!.targetKiB < grown);
    assert.match(d.actions[0]!.reason, /\(no cool-down, at once: the last rise went into page cache \(\+300 MiB\), not use\)$/);
    // At once: down to use + 1.5 headrooms, not one reclaim step.
    assert.equal(d.actions[0]!.targetKiB, 400 * MiB + 144 * MiB);
    // Reading files also takes some memory MemAvailable does not count: with 60 MiB of that
    // beside 600 MiB of cache, the rise is still the cache's.
    const st2 = fresh();
    decideVirtmem(snap([at(guest('c', 600 * MiB, sig({ availableKiB: 180 * MiB, diskCachesKiB: 50 * MiB, ageS: 0.2 })), 400 * MiB)], null, 100), st2);
    const grown2 = decideVirtmem(snap([at(guest('c', 600 * MiB, sig({ availableKiB: 180 * MiB, diskCachesKiB: 50 * MiB, ageS: 1.2 })), 550 * MiB)], null, 101), st2).actions[0]!.targetKiB;
    const d2 = decideVirtmem(snap([at(guest('c', grown2, sig({ availableKiB: grown2 - 480 * MiB, diskCachesKiB: 650 * MiB, ageS: 0.2 })), 560 * MiB)], null, 103), st2);
    assert.match(d2.actions[0]!.reason, /\(no cool-down, at once: the last rise went into page cache \(\+600 MiB\), not use\)$/, JSON.stringify(d2));
    // Host-side growth the guest's samples show nowhere: no cool-down either, but that is no proof
    // it will not show yet, so reclaim goes step by step.
    const moved = fresh();
    decideVirtmem(snap([at(guest('m', 600 * MiB, sig({ availableKiB: 200 * MiB, diskCachesKiB: 50 * MiB, ageS: 0.2 })), 400 * MiB)], null, 100), moved);
    const g1 = decideVirtmem(snap([at(guest('m', 600 * MiB, sig({ availableKiB: 200 * MiB, diskCachesKiB: 50 * MiB, ageS: 1.2 })), 550 * MiB)], null, 101), moved).actions[0]!.targetKiB;
    const early = decideVirtmem(snap([at(guest('m', g1, sig({ availableKiB: g1 - 400 * MiB, diskCachesKiB: 50 * MiB, ageS: 0.2 })), 560 * MiB)], null, 102), moved);
    assert.match(early.holds[0]!.reason, /cooling down$/, 'a sample less than a second after the rise proves nothing');
    const back = decideVirtmem(snap([at(guest('m', g1, sig({ availableKiB: g1 - 400 * MiB, diskCachesKiB: 50 * MiB, ageS: 0.2 })), 560 * MiB)], null, 103), moved);
    assert.match(back.actions[0]!.reason, /\(no cool-down: the last rise \(host-side\) did not show in the guest's use\)$/);
    assert.equal(back.actions[0]!.targetKiB, g1 - DEFAULT_POLICY_OPTIONS.reclaimStepKiB);
    // With use behind the rise instead, the cool-down holds.
    const anon = fresh();
    decideVirtmem(snap([at(guest('a', 600 * MiB, sig({ availableKiB: 200 * MiB, diskCachesKiB: 50 * MiB, ageS: 0.2 })), 400 * MiB)], null, 100), anon);
    const up2 = decideVirtmem(snap([at(guest('a', 600 * MiB, sig({ availableKiB: 200 * MiB, diskCachesKiB: 50 * MiB, ageS: 1.2 })), 550 * MiB)], null, 101), anon);
    const g2 = up2.actions[0]!.targetKiB;
    const held = decideVirtmem(snap([at(guest('a', g2, sig({ availableKiB: g2 - 550 * MiB, diskCachesKiB: 50 * MiB, ageS: 0.2 })), 560 * MiB)], null, 102), anon);
    assert.deepEqual(held.actions, [], JSON.stringify(held));
  });
  test('a guest that freed most of its burst is not held by the cool-down; the burst reserve stays', () => {
    const state = fresh();
    let t = 100;
    for (const use of [200, 500, 800, 1100, 1400, 1400]) {
      decideVirtmem(snap([guest('b', 2048 * MiB, sig({ availableKiB: 2048 * MiB - use * MiB, ageS: 0 }))], null, t), state);
      t += 1;
    }
    // t=106, one second after the burst: use back to 250 MiB.
    const d = decideVirtmem(snap([guest('b', 2048 * MiB, sig({ availableKiB: 1798 * MiB, ageS: 0 }))], null, t), state);
    assert.equal(d.actions.length, 1, JSON.stringify(d));
    assert.match(d.actions[0]!.reason, /\+ 600 MiB kept for a burst like the last one \(no cool-down: it freed most of its last burst of 1200 MiB\)$/);
  });
  test('a host reading handed to two rounds is one reading: its rate stands, it is not read as a burst and then as none', () => {
    const state = fresh();
    decideVirtmem(snap([at(guest('r', 1024 * MiB, sig({ availableKiB: 400 * MiB, ageS: 0.2 })), 600 * MiB, 99.5)], null, 100), state);
    // Read at 101.5 (two seconds later): 200 MiB more, 100 MiB/s.
    const a = decideVirtmem(snap([at(guest('r', 1024 * MiB, sig({ availableKiB: 400 * MiB, ageS: 1.2 })), 800 * MiB, 101.5)], null, 101), state);
    assert.match(a.actions[0]?.reason ?? '', /^use rising 100 MiB\/s/);
    // The next round has no new reading: the same rate, not 0 (nor 200 MiB/s the round after).
    const b = decideVirtmem(snap([at(guest('r', 1024 * MiB, sig({ availableKiB: 400 * MiB, ageS: 2.2 })), 800 * MiB, 101.5)], null, 102), state);
    assert.match([...b.actions, ...b.holds][0]!.reason, /use rising 100 MiB\/s/);
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

describe('balloon first, unplug when quiet', () => {
  // A guest with virtio-mem plugged: 512 MiB boot RAM, the balloon can take 384 MiB of it.
  const withBalloon = (g: GuestSnapshot, heldKiB: number): GuestSnapshot => ({ ...g, balloonHeldKiB: heldKiB, balloonRoomKiB: Math.max(0, 384 * MiB - heldKiB), pluggedKiB: g.currentKiB - (512 * MiB - heldKiB) });
  const bf = { ...DEFAULT_POLICY_OPTIONS, balloonFirst: true };
  test('a guest the policy has just met gives back only what its balloon can take; its resizes go balloon first', () => {
    const state = fresh();
    const g = withBalloon(guest('b', 2048 * MiB, sig({ availableKiB: 1800 * MiB })), 300 * MiB);
    const plain = decideVirtmem(snap([g], null, 100), fresh(), { ...DEFAULT_POLICY_OPTIONS, balloonFirst: false });
    assert.equal(plain.actions[0]!.targetKiB, 2048 * MiB - DEFAULT_POLICY_OPTIONS.reclaimStepKiB, 'off (--policy-reclaim unplug): a whole reclaim step');
    assert.equal(plain.actions[0]!.split, undefined);
    assert.equal(decideVirtmem(snap([g], null, 100), fresh()).actions[0]!.split, 'balloon-first', 'on by default');
    const d = decideVirtmem(snap([g], null, 100), state, bf);
    assert.equal(d.actions[0]!.targetKiB, 2048 * MiB - 84 * MiB, 'only the balloon\'s room (84 MiB), not a 256 MiB step');
    assert.equal(d.actions[0]!.split, 'balloon-first');
    assert.match(d.actions[0]!.reason, /84 MiB into the balloon \(the rest waits until the guest is quiet\)/);
    const full = decideVirtmem(snap([withBalloon(guest('b', 1964 * MiB, sig({ availableKiB: 1716 * MiB })), 384 * MiB)], null, 101), state, bf);
    assert.deepEqual(full.actions, []);
    assert.match(full.holds[0]!.reason, /the balloon is full, the rest waits until the guest is quiet/);
  });
  test('a grow takes back what the balloon holds first and plugs the rest (setmem\'s split); a stopped shrink stays balloon first', () => {
    const grow = decideVirtmem(snap([withBalloon(guest('b', 1024 * MiB, sig({ availableKiB: 20 * MiB })), 384 * MiB)], null, 100), fresh(), bf);
    assert.ok(grow.actions[0]!.targetKiB > 1024 * MiB);
    assert.equal(grow.actions[0]!.split, 'plain');
    assert.match(grow.actions[0]!.reason, /^pressure/);
    // Shrinking to 900 MiB when pressure shows: stopped where it is, into the balloon's split.
    const state = fresh();
    const g = (avail: number): GuestSnapshot => ({ ...withBalloon(guest('b', 1024 * MiB, sig({ availableKiB: avail })), 300 * MiB), targetKiB: 900 * MiB });
    decideVirtmem(snap([g(300 * MiB)], null, 100), state, bf);
    const stop = decideVirtmem(snap([{ ...g(20 * MiB), rssKiB: 900 * MiB, rssAtS: 101 }], null, 101), state, bf);
    assert.deepEqual(stop.actions.map((a) => [a.targetKiB, a.split]), [[1024 * MiB, 'balloon-first']], JSON.stringify(stop));
  });
  test('quiet for settleQuietS, reclaim unplugs past the balloon; once the size also held that long, the balloon becomes unplugged blocks', () => {
    const { settleQuietS } = DEFAULT_POLICY_OPTIONS;
    const state = fresh();
    const g = (cur: number, avail: number, held: number): GuestSnapshot => withBalloon(guest('b', cur, sig({ availableKiB: avail })), held);
    decideVirtmem(snap([g(1964 * MiB, 1716 * MiB, 384 * MiB)], null, 100), state, bf);
    const later = decideVirtmem(snap([g(1964 * MiB, 1716 * MiB, 384 * MiB)], null, 100 + settleQuietS), state, bf);
    assert.equal(later.actions[0]!.targetKiB, 1964 * MiB - DEFAULT_POLICY_OPTIONS.reclaimStepKiB, 'a whole reclaim step: the planner unplugs what the balloon cannot take');
    assert.equal(later.actions[0]!.split, 'balloon-first');
    // In its band, the balloon still holding 384 MiB: held while the size is new ...
    const band = (t: number) => decideVirtmem(snap([g(600 * MiB, 150 * MiB, 384 * MiB)], null, t), state, bf);
    const t0 = 100 + settleQuietS + 1;
    assert.deepEqual(band(t0).actions, []);
    assert.deepEqual(band(t0 + settleQuietS - 1).actions, []);
    // ... and once it held settleQuietS, the balloon's memory comes back as unplugged blocks in two
    // changes, so the guest never has less than 600 MiB: a grow that only deflates ...
    const settle = band(t0 + settleQuietS);
    assert.deepEqual(settle.actions.map((a) => [a.targetKiB, a.split]), [[984 * MiB, 'balloon-back']]);
    assert.match(settle.actions[0]!.reason, /hand 384 MiB of the balloon's memory back as unplugged blocks \(deflate, then unplug as much\)/);
    // ... held until the guest has it ...
    const waiting = decideVirtmem(snap([withBalloon(guest('b', 700 * MiB, sig({ availableKiB: 250 * MiB })), 284 * MiB)], null, t0 + settleQuietS + 1), state, bf);
    assert.deepEqual(waiting.actions, []);
    assert.match(waiting.holds[0]!.reason, /waiting for the guest to take the 384 MiB deflated/);
    // ... then a shrink back to 600 MiB that unplugs.
    const back = decideVirtmem(snap([withBalloon(guest('b', 984 * MiB, sig({ availableKiB: 534 * MiB })), 0)], null, t0 + settleQuietS + 2), state, bf);
    assert.deepEqual(back.actions.map((a) => [a.targetKiB, a.split]), [[600 * MiB, 'balloon-back']]);
    assert.match(back.actions[0]!.reason, /unplug as much/);
    assert.deepEqual(decideVirtmem(snap([g(600 * MiB, 150 * MiB, 0)], null, t0 + settleQuietS + 4), state, bf).actions, [], 'once');
  });
  test('handing the balloon back waits for room in the budget, and stops for pressure', () => {
    const { settleQuietS } = DEFAULT_POLICY_OPTIONS;
    const state = fresh();
    const g = (cur: number, avail: number, held: number): GuestSnapshot => withBalloon(guest('b', cur, sig({ availableKiB: avail })), held);
    // A budget of 700 MiB: 100 MiB above its size, so 100 MiB (whole blocks) at a time.
    assert.deepEqual(decideVirtmem(snap([g(600 * MiB, 150 * MiB, 384 * MiB)], 600 * MiB, 100), state, bf).actions, []);
    assert.deepEqual(decideVirtmem(snap([g(600 * MiB, 150 * MiB, 384 * MiB)], 600 * MiB, 100 + settleQuietS), state, bf).actions, [], 'no room above its size: nothing');
    const settle = decideVirtmem(snap([g(600 * MiB, 150 * MiB, 384 * MiB)], 700 * MiB, 101 + settleQuietS), state, bf);
    assert.deepEqual(settle.actions.map((a) => a.targetKiB), [700 * MiB]);
    // Pressure before the deflate is in: no unplug; the guest keeps what it got.
    const pressed = decideVirtmem(snap([g(650 * MiB, 20 * MiB, 334 * MiB)], 700 * MiB, 102 + settleQuietS), state, bf);
    assert.ok(pressed.actions.every((a) => a.split !== 'balloon-back' && a.targetKiB >= 650 * MiB), JSON.stringify(pressed.actions));
  });
  test("the RSS a hand-back's unplug moves is not read as a rise; the same rise otherwise grows the guest", () => {
    const { settleQuietS: q } = DEFAULT_POLICY_OPTIONS;
    const G = (cur: number, avail: number, held: number, rss: number): GuestSnapshot => ({ ...withBalloon(guest('b', cur, sig({ availableKiB: avail })), held), rssKiB: rss });
    const state = fresh();
    decideVirtmem(snap([G(600 * MiB, 150 * MiB, 384 * MiB, 400 * MiB)], null, 100), state, bf);
    assert.equal(decideVirtmem(snap([G(600 * MiB, 150 * MiB, 384 * MiB, 400 * MiB)], null, 100 + q), state, bf).actions[0]!.targetKiB, 984 * MiB);
    assert.equal(decideVirtmem(snap([G(984 * MiB, 534 * MiB, 0, 400 * MiB)], null, 101 + q), state, bf).actions[0]!.targetKiB, 600 * MiB);
    // The unplug moves pages: QEMU's RSS +200 MiB in a second.
    const after = decideVirtmem(snap([G(600 * MiB, 150 * MiB, 0, 600 * MiB)], null, 102 + q), state, bf);
    assert.ok(after.actions.every((a) => a.targetKiB <= 600 * MiB), JSON.stringify(after.actions));
    const control = fresh();
    decideVirtmem(snap([G(600 * MiB, 150 * MiB, 0, 400 * MiB)], null, 100), control, bf);
    const grown = decideVirtmem(snap([G(600 * MiB, 150 * MiB, 0, 600 * MiB)], null, 101), control, bf);
    assert.ok(grown.actions[0]!.targetKiB > 600 * MiB, JSON.stringify(grown));
  });
  test('a guest that freed a growth step or more since its last event unplugs what the balloon cannot hold, before settleQuietS', () => {
    const g = (avail: number, cur = 1664 * MiB): GuestSnapshot => withBalloon(guest('b', cur, sig({ availableKiB: avail })), 384 * MiB);
    const state = fresh();
    decideVirtmem(snap([g(200 * MiB)], null, 100), state, bf);
    // Its next sample: use fell from 1464 to 264 MiB (its processes ended).
    const freed = decideVirtmem(snap([g(1400 * MiB)], null, 101), state, bf);
    // All it freed in one step (free pages: nothing to move), not a reclaim step of 256 MiB.
    assert.deepEqual(freed.actions.map((a) => [a.targetKiB, a.split]), [[(1664 - 1200) * MiB, 'balloon-first']]);
    assert.match(freed.actions[0]!.reason, /it freed 1200 MiB 0 s ago: what the balloon cannot hold is unplugged/);
    // The same guest met idle (no fall seen): the balloon is full, the rest waits.
    const met = fresh();
    decideVirtmem(snap([g(1400 * MiB)], null, 100), met, bf);
    const idle = decideVirtmem(snap([g(1400 * MiB)], null, 101), met, bf);
    assert.deepEqual(idle.actions, []);
    assert.match(idle.holds[0]!.reason, /the balloon is full/);
    // Pressure after the free ends it: after the cool-down, a fall under a growth step does not count.
    const o = { ...bf, coolDownS: 2, burstReserveFraction: 0 };
    decideVirtmem(snap([g(80 * MiB)], null, 103), state, o);
    const after = decideVirtmem(snap([g(335 * MiB)], null, 103 + o.coolDownS + 1), state, o);
    assert.deepEqual(after.actions, [], JSON.stringify(after));
    assert.match(after.holds[0]!.reason, /the balloon is full/);
  });
  test('pressure restarts the quiet clock: after the cool-down, reclaim goes only into the balloon until settleQuietS', () => {
    const o = { ...bf, coolDownS: 2 };
    const state = fresh();
    const g = (avail: number, held: number, cur = 1536 * MiB): GuestSnapshot => withBalloon(guest('b', cur, sig({ availableKiB: avail })), held);
    decideVirtmem(snap([g(300 * MiB, 384 * MiB, 1024 * MiB)], null, 0), state, o);
    decideVirtmem(snap([g(30 * MiB, 384 * MiB, 1024 * MiB)], null, 100), state, o); // pressure (use 994 MiB) ...
    // ... and the policy grew it (the same use: nothing freed).
    const held = decideVirtmem(snap([g(542 * MiB, 384 * MiB)], null, 100 + o.coolDownS + 1), state, o);
    assert.deepEqual(held.actions, [], 'the balloon is full and the guest was pressured 3 s ago');
    assert.match(held.holds[0]!.reason, /the balloon is full/);
    const quiet = decideVirtmem(snap([g(542 * MiB, 384 * MiB)], null, 100 + o.settleQuietS), state, o);
    assert.equal(quiet.actions[0]!.targetKiB, 1536 * MiB - o.reclaimStepKiB);
  });
});

describe('rising guests, fresh host readings, bursts', () => {
  const withRss = (g: GuestSnapshot, rssKiB: number): GuestSnapshot => ({ ...g, rssKiB });
  test('QEMU RSS rising between statistics samples is counted as use, and the guest is grown ahead of the rise', () => {
    const state = fresh();
    // t=100: 1 GiB guest, 174 MiB available (use 850 MiB, headroom 106 MiB), RSS 900 MiB: within band.
    const first = decideVirtmem(snap([withRss(guest('r', 1024 * MiB, sig({ availableKiB: 174 * MiB, ageS: 0.2 })), 900 * MiB)], null, 100), state);
    assert.deepEqual(first.actions, [], JSON.stringify(first));
    // t=101: the same sample (now 1.2 s old), but RSS rose by 100 MiB in one second: the guest has
    // touched 100 MiB since, has 74 MiB left and would be out well within the horizon.
    const d = decideVirtmem(snap([withRss(guest('r', 1024 * MiB, sig({ availableKiB: 174 * MiB, ageS: 1.2 })), 1000 * MiB)], null, 101), state);
    assert.equal(d.actions.length, 1);
    const a = d.actions[0]!;
    assert.match(a.reason, /^use rising 100 MiB\/s with 74 MiB available: grow ahead/);
    // use 950 MiB + headroom (12.5 %) + 5 s x 100 MiB/s would be 1570 MiB; while only the host
    // sees the rise, growth is at most two steps (+512 MiB) a round.
    assert.equal(a.targetKiB, 1536 * MiB);
    assert.match(a.reason, /, at most \+512 MiB while only the host sees it$/);
    // t=102: the guest's sample shows the use rising (MemAvailable 336 MiB of 1.5 GiB): grown
    // ahead in full.
    const full = decideVirtmem(snap([withRss(guest('r', 1536 * MiB, sig({ availableKiB: 336 * MiB, ageS: 0.2 })), 1100 * MiB)], null, 102), state);
    assert.match(full.actions[0]!.reason, /^use rising \d+ MiB\/s with \d+ MiB available: grow ahead to use \d+ MiB \+ headroom \+ 5 s of the rise$/, JSON.stringify(full));
    assert.ok(full.actions[0]!.targetKiB > 1536 * MiB + 8 * MiB);
  });
  test('the first round of a rise on a guest with little to spare grows by two growth steps at least', () => {
    // The benchmark's spike: a 400 MiB guest using 246 MiB; nine processes start between two
    // samples, and the next shows only 44 MiB of it.
    const state = fresh();
    decideVirtmem(snap([guest('s', 400 * MiB, sig({ availableKiB: 154 * MiB, ageS: 0.1 }))], null, 100), state);
    const d = decideVirtmem(snap([guest('s', 400 * MiB, sig({ availableKiB: 110 * MiB, ageS: 0.1 }))], null, 101), state);
    assert.equal(d.actions[0]!.targetKiB, 912 * MiB, JSON.stringify(d));
    assert.match(d.actions[0]!.reason, /^use rising 44 MiB\/s with 110 MiB available: grow ahead .*, at least \+512 MiB as it begins with 110 MiB to spare$/);
    // The same rise on a guest with room to spare: grown ahead by the rate alone.
    const roomy = fresh();
    decideVirtmem(snap([guest('r', 1024 * MiB, sig({ availableKiB: 778 * MiB, ageS: 0.1 }))], null, 100), roomy);
    const r = decideVirtmem(snap([guest('r', 1024 * MiB, sig({ availableKiB: 734 * MiB, ageS: 0.1 }))], null, 101), roomy);
    assert.ok(r.actions.every((a) => !/as it begins/.test(a.reason)), JSON.stringify(r));
  });
  test('memory is not taken from a guest whose use rises, and a shrink under way is stopped where the guest is', () => {
    const state = fresh();
    // 2 GiB guest, 1500 MiB available: idle enough to reclaim, but its RSS rises 40 MiB/s.
    decideVirtmem(snap([withRss(guest('c', 2048 * MiB, sig({ availableKiB: 1500 * MiB, ageS: 0.2 })), 600 * MiB)], null, 100), state);
    const d = decideVirtmem(snap([withRss(guest('c', 2048 * MiB, sig({ availableKiB: 1500 * MiB, ageS: 1.2 })), 640 * MiB)], null, 101), state);
    assert.deepEqual(d.actions, [], JSON.stringify(d));
    assert.match(d.holds[0]!.reason, /^use rising 40 MiB\/s with \d+ MiB available: not reclaiming$/);
    const shrinking = fresh();
    // t=100: reclaimed a step (the hypervisor's target follows, as the daemon's setmem makes it).
    const step = decideVirtmem(snap([withRss(guest('s', 2048 * MiB, sig({ availableKiB: 1500 * MiB, ageS: 0.2 })), 600 * MiB)], null, 100), shrinking).actions[0]!.targetKiB;
    assert.equal(step, 2048 * MiB - DEFAULT_POLICY_OPTIONS.reclaimStepKiB);
    const stop = decideVirtmem(snap([{ ...withRss(guest('s', 1900 * MiB, sig({ availableKiB: 1400 * MiB, ageS: 1.2 })), 640 * MiB), targetKiB: step }], null, 101), shrinking);
    assert.equal(stop.actions.length, 1, JSON.stringify(stop));
    assert.equal(stop.actions[0]!.targetKiB, 1900 * MiB);
    assert.match(stop.actions[0]!.reason, /^host-backed use rising 40 MiB\/s while shrinking to 1792 MiB: stop the shrink$/);
    // A rise fast enough to grow for grows the guest even while it shrinks.
    const fast = fresh();
    decideVirtmem(snap([{ ...withRss(guest('f', 1024 * MiB, sig({ availableKiB: 300 * MiB, ageS: 0.2 })), 600 * MiB), targetKiB: 800 * MiB }], null, 100), fast);
    const grown = decideVirtmem(snap([{ ...withRss(guest('f', 900 * MiB, sig({ availableKiB: 300 * MiB, ageS: 1.2 })), 700 * MiB), targetKiB: 800 * MiB }], null, 101), fast);
    assert.ok(grown.actions[0]!.targetKiB > 900 * MiB, JSON.stringify(grown));
    assert.match(grown.actions[0]!.reason, /^use rising 100 MiB\/s/);
  });
  test('a slow rise with plenty available is left alone', () => {
    const state = fresh();
    decideVirtmem(snap([withRss(guest('s', 2048 * MiB, sig({ availableKiB: 300 * MiB, ageS: 0.2 })), 1500 * MiB)], null, 100), state);
    const d = decideVirtmem(snap([withRss(guest('s', 2048 * MiB, sig({ availableKiB: 300 * MiB, ageS: 1.2 })), 1510 * MiB)], null, 101), state);
    assert.deepEqual(d.actions, [], JSON.stringify(d));
  });
  test('a sample taken before a growth reached the guest does not make the policy grow again', () => {
    const state = fresh();
    // MemTotal 924 MiB of a 1 GiB guest: 100 MiB lie beyond what the guest counts.
    const grow = decideVirtmem(snap([guest('f', 1024 * MiB, sig({ availableKiB: 10 * MiB, totalKiB: 924 * MiB, ageS: 0.1 }))], null, 100), state);
    const to = grow.actions[0]!.targetKiB;
    assert.ok(to > 1024 * MiB);
    // t=101: QEMU has plugged the new blocks, the guest has not onlined them yet: its sample
    // still shows MemTotal 924 MiB with 10 MiB available. That is the old size, not new use.
    const next = decideVirtmem(snap([guest('f', to, sig({ availableKiB: 10 * MiB, totalKiB: 924 * MiB, ageS: 0.2 }))], null, 101), state);
    assert.deepEqual(next.actions, [], JSON.stringify(next));
    // Without MemTotal the same numbers read as a guest that used all of its new memory: it grows again.
    const blind = fresh();
    decideVirtmem(snap([guest('f', 1024 * MiB, sig({ availableKiB: 10 * MiB, ageS: 0.1 }))], null, 100), blind);
    const again = decideVirtmem(snap([guest('f', to, sig({ availableKiB: 10 * MiB, ageS: 0.2 }))], null, 101), blind);
    assert.equal(again.actions.length, 1);
  });
  test('balloon pages that MemTotal still counts (deflate-on-oom) are not use', () => {
    // A 512 MiB boot guest ballooned to 384 MiB: MemTotal stays 405 MiB, 250 MiB available.
    const g = { ...guest('d', 384 * MiB, sig({ availableKiB: 250 * MiB, totalKiB: 405 * MiB, ageS: 0.1 })), inflatedInTotalKiB: 128 * MiB, targetKiB: 384 * MiB };
    const d = decideVirtmem(snap([g], null, 100), fresh());
    // use = 384 - 250 = 134 MiB (MemTotal - inflated = 277 MiB visible, 107 MiB beyond it): at the floor already.
    assert.deepEqual(d.actions, []);
    assert.match(d.holds[0]!.reason, /use 134 MiB/);
  });
  test('a sample taken before the balloon deflated is not a rise (deflate-on-oom: MemTotal counts balloon pages)', () => {
    // 512 MiB boot RAM with 384 MiB in the balloon + 472 MiB plugged = 600 MiB; MemTotal 984 MiB, 250 MiB used.
    const g = (cur: number, inflated: number, statsAtS: number, nowS: number): GuestSnapshot => ({
      ...guest('d', cur, sig({ availableKiB: 350 * MiB, totalKiB: 984 * MiB, ageS: nowS - statsAtS })), inflatedInTotalKiB: inflated, targetKiB: cur, rssKiB: 500 * MiB, rssAtS: nowS,
    });
    const state = fresh();
    decideVirtmem(snap([g(600 * MiB, 384 * MiB, 99.5, 100)], null, 100), state);
    // 268 MiB deflated; the next sample was taken before the guest had them (still 350 MiB available).
    const d = decideVirtmem(snap([g(868 * MiB, 116 * MiB, 100.5, 101)], null, 101), state);
    assert.ok(d.actions.every((a) => a.targetKiB <= 868 * MiB), JSON.stringify(d));
    assert.doesNotMatch(JSON.stringify(d), /use rising/);
  });
  test('a free is read from samples that describe the guest: one hidden in a sample lagging a shrink shows in the next', () => {
    const g = (cur: number, avail: number, statsAtS: number, nowS: number, target = cur): GuestSnapshot => ({ ...guest('f', cur, sig({ availableKiB: avail, ageS: nowS - statsAtS })), targetKiB: target });
    const state = fresh();
    decideVirtmem(snap([g(1600 * MiB, 400 * MiB, 99.5, 100)], null, 100), state); // use 1200 MiB
    // The budget cuts it to 1400 MiB as its processes end: the sample lags the shrink ...
    decideVirtmem(snap([g(1400 * MiB, 1130 * MiB, 100.5, 101)], null, 101), state);
    assert.equal(state.track.get('f')!.freedAtS, -Infinity, 'not read from a sample that lags a shrink');
    // ... the next one, taken a second after it, shows the guest freed 930 MiB.
    decideVirtmem(snap([g(1400 * MiB, 1130 * MiB, 102.1, 102.5)], null, 102.5), state);
    assert.equal(state.track.get('f')!.freedAtS, 102.5);
    assert.equal(state.track.get('f')!.freedKiB, 930 * MiB);
  });
  test('after a burst, reclaim keeps room for half of it for burstMemoryS, then lets it go', () => {
    const o = DEFAULT_POLICY_OPTIONS;
    const state = fresh();
    // Use rises from 200 MiB to 1400 MiB over a few samples (the burst ends at t=105), then is freed.
    let t = 100;
    for (const use of [200, 500, 800, 1100, 1400, 1400]) {
      decideVirtmem(snap([guest('b', 2048 * MiB, sig({ availableKiB: 2048 * MiB - use * MiB, ageS: 0 }))], null, t), state);
      t += 1;
    }
    // After the cool-down, still within the burst memory: reclaim stops at use + 1.5 headrooms + 600 MiB.
    const d = decideVirtmem(snap([guest('b', 1100 * MiB, sig({ availableKiB: 900 * MiB, ageS: 0 }))], null, 105 + o.coolDownS + 1), state);
    assert.match(d.actions[0]!.reason, /\+ 600 MiB kept for a burst like the last one$/);
    assert.equal(d.actions[0]!.targetKiB, 200 * MiB + 144 * MiB + 600 * MiB);
    // Once the burst memory is over, reclaim goes on toward the floor.
    const later = decideVirtmem(snap([guest('b', 944 * MiB, sig({ availableKiB: 744 * MiB, ageS: 0 }))], null, 105 + o.burstMemoryS + 1), state);
    assert.equal(later.actions[0]!.targetKiB, 944 * MiB - o.reclaimStepKiB);
    assert.doesNotMatch(later.actions[0]!.reason, /kept for a burst/);
  });
  test('while a shrink is under way, pressure in the statistics stops it where the guest is (no growth)', () => {
    const state = fresh();
    const g = { ...guest('s', 900 * MiB, sig({ availableKiB: 20 * MiB, ageS: 0.2 })), targetKiB: 500 * MiB, rssKiB: 400 * MiB };
    const d = decideVirtmem(snap([g], null, 100), state);
    assert.equal(d.actions.length, 1);
    // Where it is, or up to use + half a headroom (the guard rail), not the +256 MiB of pressure.
    assert.ok(d.actions[0]!.targetKiB >= 900 * MiB && d.actions[0]!.targetKiB <= 900 * MiB + 64 * MiB, String(d.actions[0]!.targetKiB / MiB));
    assert.match(d.actions[0]!.reason, /while shrinking to 500 MiB: stop the shrink$/);
    // Just after a shrink ended, a sample taken while the guest was still offlining (MemAvailable
    // already down, MemTotal not yet) reads as pressure: the policy waits for a newer sample.
    const st = fresh();
    decideVirtmem(snap([{ ...guest('o', 1000 * MiB, sig({ availableKiB: 700 * MiB, totalKiB: 900 * MiB, ageS: 0.1 })), targetKiB: 1000 * MiB }], null, 100), st);
    const after = decideVirtmem(snap([{ ...guest('o', 744 * MiB, sig({ availableKiB: 20 * MiB, totalKiB: 900 * MiB, ageS: 0.5 })), targetKiB: 744 * MiB }], null, 101), st);
    assert.deepEqual(after.actions, [], JSON.stringify(after));
    assert.match(after.holds[0]!.reason, /in statistics from before the last shrink: wait for a newer sample/);
    // A guest within its band is held: that never cancels a shrink under way.
    const band = decideVirtmem(snap([{ ...guest('w', 600 * MiB, sig({ availableKiB: 150 * MiB, ageS: 0.2 })), targetKiB: 560 * MiB }], null, 100), fresh());
    assert.deepEqual(band.actions, [], JSON.stringify(band));
    // A resize already heading where the policy wants is not sent again.
    const again = decideVirtmem(snap([{ ...guest('s', 900 * MiB, sig({ availableKiB: 20 * MiB, ageS: 0.2 })), targetKiB: 900 * MiB }], null, 101), state);
    assert.ok(again.actions.every((a) => a.targetKiB !== 900 * MiB));
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
  test('growth goes only into memory that is free: a guest still heading to a larger target counts at it', () => {
    // 'back' was asked to stop a shrink at 409 MiB and is at 385 MiB now: it goes back up to 409.
    const d = decideVirtmem(snap([
      { ...guest('back', 385 * MiB, sig({ availableKiB: 145 * MiB })), targetKiB: 409 * MiB },
      guest('needy', 1400 * MiB, sig({ availableKiB: 10 * MiB })),
    ], 1900 * MiB), fresh());
    const needy = d.actions.find((a) => a.name === 'needy')!;
    assert.ok(needy.targetKiB <= 1900 * MiB - 409 * MiB, String(needy.targetKiB / MiB));
  });
  test('a guest counts at the last target the policy sent it, where the host\'s view does not show it yet', () => {
    const state = fresh();
    // Round 1: 'a' is short and is sent up by at least 256 MiB.
    const up = decideVirtmem(snap([guest('a', 1024 * MiB, sig({ availableKiB: 10 * MiB }))], 4096 * MiB, 100), state);
    const sent = up.actions[0]!.targetKiB;
    assert.ok(sent >= 1280 * MiB);
    // Round 2: the view still shows 1 GiB (the hypervisor's last target not known), 'b' is short.
    const d = decideVirtmem(snap([
      guest('a', 1024 * MiB, sig({ availableKiB: 200 * MiB, ageS: 0.5 })),
      guest('b', 1024 * MiB, sig({ availableKiB: 10 * MiB })),
    ], 2600 * MiB, 101), state);
    const b = d.actions.find((x) => x.name === 'b')!;
    assert.ok(b.targetKiB <= 2600 * MiB - sent, `${b.targetKiB / MiB} MiB leaves no room for the ${sent / MiB} MiB 'a' is heading to`);
  });
  test('a guest the policy just sent up is not taken to be shrinking because the host\'s view shows an older, lower target', () => {
    const state = fresh();
    const up = decideVirtmem(snap([{ ...guest('a', 1024 * MiB, sig({ availableKiB: 10 * MiB })), targetKiB: 1024 * MiB, rssKiB: 1000 * MiB }], null, 100), state).actions[0]!.targetKiB;
    // t=101: grown part way; the view's target is still the old size (a libvirt domain XML read
    // before the resize). Host-backed use rises: that is a rise to grow for, not a shrink to stop.
    const d = decideVirtmem(snap([{ ...guest('a', 1200 * MiB, sig({ availableKiB: 100 * MiB, ageS: 0.5 })), targetKiB: 1024 * MiB, rssKiB: 1300 * MiB }], null, 101), state);
    assert.doesNotMatch([...d.actions, ...d.holds][0]!.reason, /shrink/, JSON.stringify(d));
    assert.ok(d.actions[0]!.targetKiB > 1200 * MiB && up > 1200 * MiB, JSON.stringify(d));
  });
  test('growth never lowers a target the guest is still heading up to, when the host\'s count of its size lags', () => {
    const state = fresh();
    decideVirtmem(snap([{ ...guest('a', 600 * MiB, sig({ availableKiB: 200 * MiB, ageS: 0.2 })), targetKiB: 600 * MiB, rssKiB: 500 * MiB }], null, 100), state);
    // t=101: RSS rose 100 MiB in a second: grown ahead.
    const up = decideVirtmem(snap([{ ...guest('a', 600 * MiB, sig({ availableKiB: 200 * MiB, ageS: 1.2 })), targetKiB: 600 * MiB, rssKiB: 600 * MiB }], null, 101), state).actions[0]!;
    assert.ok(up.targetKiB > 1000 * MiB, JSON.stringify(up));
    // t=102: the host's count still shows the guest near its old size (a libvirt guest's size
    // comes from QEMU's events, at most one a second), the target is the one sent; a new sample,
    // a slower rise. A growth step from that size would be below the target under way.
    const d = decideVirtmem(snap([{ ...guest('a', 620 * MiB, sig({ availableKiB: 150 * MiB, ageS: 0.2 })), targetKiB: up.targetKiB, rssKiB: 630 * MiB }], null, 102), state);
    assert.deepEqual(d.actions, [], JSON.stringify(d));
    assert.match(d.holds[0]!.reason, /keeps the larger target \d+ MiB it is heading to.*already heading to/);
  });
  test('a guest whose statistics stopped is grown while QEMU\'s resident size rises, never shrunk, and held when it does not rise', () => {
    const state = fresh();
    decideVirtmem(snap([{ ...guest('s', 1024 * MiB, sig({ availableKiB: 300 * MiB, ageS: 1 })), targetKiB: 1024 * MiB, rssKiB: 900 * MiB, rssAtS: 99.5 }], 3072 * MiB, 100), state);
    // 12 s later the sample is the same (the guest stopped reporting); RSS rose 50 MiB/s meanwhile.
    const later = (nowS: number, rssKiB: number): GuestSnapshot => ({ ...guest('s', 1024 * MiB, sig({ availableKiB: 300 * MiB, ageS: nowS - 99 })), targetKiB: 1024 * MiB, rssKiB, rssAtS: nowS - 0.5 });
    const d = decideVirtmem(snap([later(112, 1500 * MiB)], 3072 * MiB, 112), state);
    assert.equal(d.actions.length, 1, JSON.stringify(d));
    assert.equal(d.actions[0]!.targetKiB, 1280 * MiB);
    assert.match(d.actions[0]!.reason, /^guest statistics are 13 s old, but QEMU's resident memory rises 50 MiB\/s: grow by 256 MiB/);
    // Within the budget like any growth.
    const tight = fresh();
    decideVirtmem(snap([{ ...guest('s', 1024 * MiB, sig({ availableKiB: 300 * MiB, ageS: 1 })), targetKiB: 1024 * MiB, rssKiB: 900 * MiB, rssAtS: 99.5 }], 1100 * MiB, 100), tight);
    assert.ok(decideVirtmem(snap([later(112, 1500 * MiB)], 1100 * MiB, 112), tight).actions.every((a) => a.targetKiB <= 1100 * MiB));
    // RSS still: held, as before.
    const still = decideVirtmem(snap([{ ...later(113, 1500 * MiB), targetKiB: 1024 * MiB }], 3072 * MiB, 113), state);
    assert.deepEqual(still.actions, [], JSON.stringify(still));
    assert.match(still.holds[0]!.reason, /^guest statistics are 14 s old$/);
  });
  test('a guest cooling down after a rise gives all its idle memory back at once for a pressured guest', () => {
    const state = fresh();
    // The donor rose (RSS) and was grown ahead a round ago; it holds 1.5 GiB, of which 1.1 GiB is cache.
    decideVirtmem(snap([{ ...guest('donor', 1536 * MiB, sig({ availableKiB: 1200 * MiB, diskCachesKiB: 1100 * MiB, ageS: 0.2 })), rssKiB: 500 * MiB }], null, 100), state);
    decideVirtmem(snap([{ ...guest('donor', 1536 * MiB, sig({ availableKiB: 1200 * MiB, diskCachesKiB: 1100 * MiB, ageS: 1.2 })), rssKiB: 800 * MiB }], null, 101), state);
    const d = decideVirtmem(snap([
      { ...guest('donor', 1536 * MiB, sig({ availableKiB: 1200 * MiB, diskCachesKiB: 1100 * MiB, ageS: 2.2 })), rssKiB: 800 * MiB },
      guest('needy', 1024 * MiB, sig({ availableKiB: 10 * MiB })),
    ], 2600 * MiB, 102), state);
    const donor = d.actions.find((a) => a.name === 'donor')!;
    // Not just what the needy guest lacks: all its idle memory at once, down to use (336 MiB + the
    // 300 MiB its RSS rose that no sample has placed yet) + 1.5 x 96 MiB.
    assert.match(donor.reason, /^idle memory 804 MiB, but a rise 1 s ago: cooling down; host budget: cut to 1204 MiB; another guest waits for memory: give back all idle memory now \(to 780 MiB\)$/);
    assert.equal(donor.targetKiB, 780 * MiB);
    const needy = d.actions.find((a) => a.name === 'needy')!;
    assert.match(needy.reason, /growth limited to the free part of the host budget/);
  });
});

describe('the budget', () => {
  test('takes nothing from a guest whose host-backed use is rising, even with idle memory by its last sample', () => {
    const state = fresh();
    // The donor's last sample says 1000 MiB available; its QEMU RSS rises 100 MiB/s (a burst its
    // statistics do not show yet); the other guest is under pressure, and the budget is full.
    const donor = (nowS: number, rssKiB: number): GuestSnapshot => ({ ...guest('donor', 1536 * MiB, sig({ availableKiB: 1000 * MiB, diskCachesKiB: 10 * MiB, ageS: 0.5 })), rssKiB, rssAtS: nowS - 0.5 });
    decideVirtmem(snap([donor(100, 600 * MiB), guest('needy', 1024 * MiB)], 2560 * MiB, 100), state);
    const d = decideVirtmem(snap([donor(101, 700 * MiB), guest('needy', 1024 * MiB, sig({ availableKiB: 10 * MiB }))], 2560 * MiB, 101), state);
    const cut = d.actions.find((a) => a.name === 'donor');
    assert.equal(cut, undefined, `the rising guest was cut: ${JSON.stringify(cut)}`);
    assert.match(d.holds.find((h) => h.name === 'donor')!.reason, /^use rising 100 MiB\/s with \d+ MiB available: not reclaiming/);
    // The needy guest grows only into what is free (its guard rail above that: use + half a headroom).
    assert.match(d.actions.find((a) => a.name === 'needy')!.reason, /growth limited to the free part of the host budget/);
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
