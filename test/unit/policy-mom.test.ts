/** The MoM port (main's src/policy/mom.ts): shrink under 20 % host free, grow otherwise, 5 % a round, pressure scaling, floor. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { momPolicy } from '../../src/policy/mom.js';
import type { GuestSnapshot, Snapshot } from '../../src/policy/types.js';

const M = 1024;
const G = 1024 * M;
const g = (currentKiB: number, freeKiB: number, floorKiB = 256 * M): GuestSnapshot => ({
  name: 'a', settings: { enabled: true, floorKiB, ceilingKiB: 2 * G, shares: 1000 }, currentKiB, maxKiB: 2 * G,
  signals: { availableKiB: freeKiB, unusedKiB: freeKiB, diskCachesKiB: 0, majorFaultsPerS: 0, swapInKiBPerS: 0, ageS: 0 },
});
const host = (freePct: number) => ({ memTotalKiB: 10 * G, memAvailableKiB: Math.round((10 * G * freePct) / 100), guestBudgetKiB: null });
const decideMom = (s: Snapshot) => { const d = momPolicy.decide(s, null); return { actions: d.actions, unchanged: Object.fromEntries(d.holds.map((h) => [h.name, h.reason])) }; };

test('mom shrinks at most 5 % a round when the host is under 20 % free', () => {
  const { actions } = decideMom({ nowS: 0, host: host(10), guests: [g(1 * G, 800 * M)] });
  assert.equal(actions[0]!.targetKiB, Math.trunc(1 * G * 0.95));
  assert.match(actions[0]!.reason, /MoM shrink \(host free 10\.0 %\)/);
});

test('mom keeps used memory plus a free share scaled by host pressure', () => {
  // host 10 % free -> guest keeps 20 % * (10/20) = 10 % of its size free.
  const { actions } = decideMom({ nowS: 0, host: host(10), guests: [g(1 * G, 120 * M)] });
  const used = 1 * G - 120 * M;
  assert.equal(actions[0]!.targetKiB, Math.trunc(used + 0.1 * G));
});

test('mom grows 5 % a round, or at once to used + 20 % of the maximum', () => {
  let r = decideMom({ nowS: 0, host: host(50), guests: [g(1 * G, 600 * M)] });
  assert.equal(r.actions[0]!.targetKiB, Math.trunc(1 * G * 1.05));
  r = decideMom({ nowS: 0, host: host(50), guests: [g(1 * G, 0)] });
  assert.equal(r.actions[0]!.targetKiB, Math.trunc(1 * G + 0.2 * 2 * G));
});

test('mom: tiny changes skipped, floor held, no statistics left alone', () => {
  let r = decideMom({ nowS: 0, host: host(50), guests: [g(2 * G - 1 * M, 1 * G)] });
  assert.equal(r.actions.length, 0);
  assert.match(r.unchanged.a!, /too small/);
  r = decideMom({ nowS: 0, host: host(1), guests: [g(300 * M, 290 * M, 290 * M)] });
  assert.ok(r.actions.every((a) => a.targetKiB >= 290 * M));
  r = decideMom({ nowS: 0, host: host(1), guests: [{ ...g(1 * G, 0), signals: null }] });
  assert.match(r.unchanged.a!, /no guest statistics/);
});
