/** The daemon's policy loop: snapshots from the live model, cadence, failures recorded, modes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { guestSnapshot, PolicyLoop, type LastPolicyDecision, type PolicyGuestInput } from '../../src/policy/loop.js';
import { virtmemPolicy } from '../../src/policy/virtmem-policy.js';
import { MiB } from '../../src/policy/types.js';

const B = 1024 * 1024; // bytes per MiB
const model = (over: Partial<PolicyGuestInput> = {}): PolicyGuestInput => ({
  name: 'g', state: 'running', monitor: 'connected', maxMemoryBytes: 2048 * B, bootBytes: 512 * B, hasBalloon: true,
  balloonBytes: 512 * B, dimmBytes: 0, devices: [{ pluggedBytes: 512 * B }], rssBytes: null, targetBytes: 1024 * B,
  stats: { usableBytes: 900 * B, unusedBytes: 800 * B, diskCachesBytes: 50 * B, majorFaults: 100, swapInBytes: 0, lastUpdateS: 1000 },
  ...over,
});
const settings = { enabled: true, floorKiB: 384 * MiB, ceilingKiB: 2048 * MiB, shares: 1000 };

test('a snapshot counts balloon + DIMMs + plugged virtio-mem, MemAvailable from "usable", rates from the previous sample', () => {
  const s = guestSnapshot(model(), settings, { majorFaults: 40, swapInBytes: 0, atS: 998 }, 1001);
  assert.equal(s.currentKiB, 1024 * MiB);
  assert.equal(s.maxKiB, 2048 * MiB);
  assert.deepEqual(s.signals, { availableKiB: 900 * MiB, unusedKiB: 800 * MiB, diskCachesKiB: 50 * MiB, majorFaultsPerS: 30, swapInKiBPerS: 0, ageS: 1 });
  assert.equal(guestSnapshot(model({ stats: {} }), settings, undefined, 1001).signals, null, 'never reported: no signals');
});

test('the loop applies actions, records reasons, runs at its period, and records a failed resize', async () => {
  const applied: Array<[string, number]> = [];
  const recorded: Array<[string, LastPolicyDecision]> = [];
  let fail = false;
  let ended: (why: string | null) => void = () => {};
  const loop = new PolicyLoop({
    policy: virtmemPolicy(), mode: 'per-guest', guestBudgetKiB: null,
    settings: async (name) => (name === 'off' ? { ...settings, enabled: false } : settings),
    apply: async (name, kib) => {
      if (fail) throw new Error('monitor gone');
      applied.push([name, kib]);
      return { outcome: new Promise<string | null>((resolve) => { ended = resolve; }) };
    },
    record: (name, d) => { recorded.push([name, d]); },
  });
  const host = { memTotalBytes: 24 * 1024 * B, memAvailableBytes: 20 * 1024 * B };
  const idle = model(); // 900 MiB available of 1 GiB: reclaim
  const d = await loop.tick([idle, model({ name: 'off' }), model({ name: 'stopped', state: 'shutoff' })], host, 1001);
  assert.deepEqual(applied, [['g', 768 * MiB]]);
  assert.equal(d!.holds[0]!.name, 'off');
  assert.deepEqual(recorded.map(([n, r]) => [n, r.action, r.outcome]), [['g', 'resize', 'pending'], ['off', 'hold', undefined]]);
  // The resize ends short of its target: the decision says so, with the driver's reason.
  ended('memory target 786432 KiB not reached: the balloon stopped at 900 MiB');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual([loop.last.get('g')!.action, loop.last.get('g')!.outcome], ['failed', 'not reached']);
  assert.match(loop.last.get('g')!.reason, /the guest did not get there: memory target 786432 KiB not reached/);
  assert.equal(await loop.tick([idle], host, 1001.5), null, 'not due yet');
  fail = true;
  await loop.tick([idle], host, 1002);
  assert.deepEqual([loop.last.get('g')!.action, loop.last.get('g')!.outcome], ['failed', 'refused']);
  assert.match(loop.last.get('g')!.reason, /the resize was refused: monitor gone/);
});

test("mode 'all' manages guests whose own setting is off; 'off' does nothing", async () => {
  const applied: string[] = [];
  const mk = (mode: 'all' | 'off') => new PolicyLoop({
    policy: virtmemPolicy(), mode, guestBudgetKiB: null,
    settings: async () => ({ ...settings, enabled: false }),
    apply: async (name) => { applied.push(`${mode}:${name}`); return { outcome: Promise.resolve(null) }; },
    record: () => {},
  });
  const host = { memTotalBytes: 24 * 1024 * B, memAvailableBytes: 20 * 1024 * B };
  await mk('off').tick([model()], host, 1001);
  await mk('all').tick([model()], host, 1001);
  assert.deepEqual(applied, ['all:g']);
});
