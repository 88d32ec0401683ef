/**
 * The Proxmox port against Proxmox's own test cases (pve-manager test/balloontest.pl): the same
 * VM states, goals and expected balloon sizes, with its single-round (abtest) and
 * run-until-stable (absim) drivers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { computeAlg1, proxmoxPolicy, type PveVmStatus } from '../../src/policy/proxmox.js';
import { MiB } from '../../src/policy/types.js';

const MB = (n: number): number => n * 1000 * 1000; // balloontest.pl's units are decimal
const GB = (n: number): number => n * 1000 * 1000 * 1000;
type Status = Map<string, PveVmStatus>;
const clone = (s: Status): Status => new Map([...s].map(([k, v]) => [k, { ...v }]));
const MAXCHANGE = MB(100);

function abtest(status: Status, goal: number, expect: Record<string, number>): void {
  assert.deepEqual(Object.fromEntries(computeAlg1(status, goal, MAXCHANGE)), expect);
}

function absim(status: Status, goal: number, expect: Record<string, number>): Status {
  const s = clone(status);
  const sum: Record<string, number> = {};
  let abschanges: number;
  do {
    const res = computeAlg1(s, goal, MAXCHANGE);
    let changes = 0;
    abschanges = 0;
    for (const [id, b] of res) {
      const d = s.get(id)!;
      const diff = b - d.balloon;
      if (diff !== 0) {
        d.freemem = Math.max(0, d.freemem + diff);
        d.balloon = b;
        sum[id] = b;
        changes += diff;
        abschanges += Math.abs(diff);
      }
    }
    goal -= changes;
  } while (abschanges);
  assert.deepEqual(sum, expect);
  return s;
}

const status1: Status = new Map([
  ['100', { maxmem: GB(2), shares: 2000, balloon: GB(1), balloon_min: GB(1), freemem: MB(0) }],
  ['101', { maxmem: GB(2), shares: 1000, balloon: GB(1), balloon_min: GB(1), freemem: MB(0) }],
]);
const status2: Status = new Map([
  ['100', { maxmem: GB(2), shares: 2000, balloon: GB(2), balloon_min: GB(2), freemem: MB(0) }],
  ['101', { maxmem: GB(2), shares: 1000, balloon: GB(1), balloon_min: GB(1), freemem: MB(0) }],
]);
const status3: Status = new Map([
  ['100', { maxmem: GB(2), shares: 2000, balloon: GB(2), balloon_min: GB(2), freemem: MB(0) }],
  ['101', { maxmem: GB(2), shares: 1000, balloon: GB(1) + MB(7), balloon_min: GB(1), freemem: MB(0) }],
  ['102', { maxmem: GB(2), shares: 1000, balloon: GB(1), balloon_min: GB(1), freemem: MB(512) }],
]);

test('balloontest.pl status 1: shares split growth 2:1, 100 MB per round', () => {
  abtest(status1, 0, {});
  abtest(status1, MB(90), { 100: MB(1060), 101: MB(1030) });
  abtest(status1, MB(150), { 100: MB(1100), 101: MB(1050) });
  abtest(status1, MB(270), { 100: MB(1100), 101: MB(1090) });
  absim(status1, MB(180), { 100: MB(1120), 101: MB(1060) });
  absim(status1, MB(270), { 100: MB(1180), 101: MB(1090) });
  absim(status1, MB(600), { 100: MB(1300), 101: MB(1300) });
  absim(status1, MB(900), { 100: MB(1600), 101: MB(1300) });
});

test('balloontest.pl status 2: a VM at its maximum gets nothing', () => {
  abtest(status2, 0, {});
  abtest(status2, MB(18), { 101: MB(1018) });
  abtest(status2, MB(500), { 101: MB(1100) });
});

test('balloontest.pl status 3: pressured VMs first, then shrinking takes from roomy VMs first', () => {
  abtest(status3, 0, {});
  abtest(status3, MB(11), { 101: MB(1018) });
  abtest(status3, MB(80), { 101: MB(1087) });
  abtest(status3, MB(200), { 101: MB(1107) });
  const s = absim(status3, MB(593), { 101: MB(1300), 102: MB(1300) });
  absim(s, -MB(200), { 101: MB(1200), 102: MB(1200) });
  absim(s, -MB(400), { 101: MB(1200), 102: GB(1) });
  absim(s, -MB(593), { 101: MB(1007), 102: GB(1) });
});

test('VMs without a floor, without a balloon driver, or with shares 0 are left alone', () => {
  const s: Status = new Map([
    ['nofloor', { maxmem: GB(2), balloon: GB(1), balloon_min: 0, freemem: 0 }],
    ['nodriver', { maxmem: GB(2), balloon: 0, balloon_min: GB(1), freemem: 0 }],
    ['zero', { maxmem: GB(2), shares: 0, balloon: GB(1), balloon_min: GB(1), freemem: 0 }],
  ]);
  assert.deepEqual(Object.fromEntries(computeAlg1(s, GB(1), MAXCHANGE)), {});
});

test('as a policy: the host budget is the 80 % mark; at most 100 MiB per VM per 10 s round', () => {
  const guest = (name: string, currentKiB: number) => ({
    name, currentKiB, maxKiB: 2048 * MiB,
    settings: { enabled: true, floorKiB: 384 * MiB, ceilingKiB: 2048 * MiB, shares: 1000 },
    signals: { availableKiB: 1024 * MiB, unusedKiB: 1024 * MiB, diskCachesKiB: 0, majorFaultsPerS: 0, swapInKiBPerS: 0, ageS: 0 },
  });
  const d = proxmoxPolicy.decide({ nowS: 0, host: { memTotalKiB: 0, memAvailableKiB: 0, guestBudgetKiB: 3072 * MiB }, guests: [guest('a', 2048 * MiB), guest('b', 2048 * MiB)] }, null);
  assert.equal(proxmoxPolicy.periodS, 10);
  assert.deepEqual(d.actions.map((a) => [a.name, a.fromKiB - a.targetKiB]), [['a', 100 * MiB], ['b', 100 * MiB]]);
});
