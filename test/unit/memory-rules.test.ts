/** The memory rules both drivers obey (src/driver/memory/rules.ts), against scripted guests. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VirtError } from '../../src/domain/errors.js';
import {
  balloonHeldKiB, checkMemorySize, followMemory, guestInUseKiB, guestTotalBaseline, memoryTotal, resolveAffect, resolveSetMemoryAffect, shrinkRefusal,
  type FollowSpec, type GuestTotal, type MemorySizes,
} from '../../src/driver/memory/rules.js';
import { planMemory, type MemoryLayout } from '../../src/driver/memory/plan.js';

const layout: MemoryLayout = { bootKiB: 524288, dimmKiB: 0, vmem: [{ id: 'vmem0', sizeKiB: 1048576, blockKiB: 2048, pluggedKiB: 0 }] };

/** A guest that moves one step per read through `steps`, and reports `totals` as its MemTotal. */
function scripted(steps: MemorySizes[], totals: Array<GuestTotal | null>, extra: Partial<FollowSpec> = {}): FollowSpec {
  let i = 0;
  let j = 0;
  return {
    name: 'g', plan: planMemory(layout, 1048576), layout, start: steps[0]!,
    read: async () => steps[Math.min(++i, steps.length - 1)]!,
    changed: async () => {},
    pollMs: () => 1,
    guestTotal: async () => totals[Math.min(j++, totals.length - 1)]!,
    guestTotalBefore: { totalKiB: 500000, atS: 0 },
    stallMs: 200,
    ...extra,
  };
}

const at = (plugged: number): MemorySizes => ({ balloonKiB: 524288, pluggedKiB: [plugged], totalKiB: 524288 + plugged });
const now = (): number => Math.floor(Date.now() / 1000);

test('a grow is reached when QEMU plugged it and the guest counts it', async () => {
  const r = await followMemory(scripted([at(0), at(262144), at(524288)], [{ totalKiB: 500000 + 524288, atS: now() }]));
  assert.equal(r.totalKiB, 1048576);
});

test('plugged but never onlined: not reached, and the guest is named as the part that did not follow', async () => {
  await assert.rejects(followMemory(scripted([at(0), at(524288)], [{ totalKiB: 500000, atS: now() }])),
    (e: unknown) => e instanceof VirtError && e.code === 'NOT_REACHED' && /has not onlined the new memory/.test(e.message) && /MemTotal went from 500000 KiB to 500000 KiB/.test(e.message));
});

test('without guest statistics QEMU\'s numbers stand', async () => {
  const r = await followMemory(scripted([at(0), at(524288)], [null]));
  assert.equal(r.totalKiB, 1048576);
});

test('a guest that stops moving fails NOT_REACHED naming the device, within the stall bound', async () => {
  const t0 = Date.now();
  await assert.rejects(followMemory(scripted([at(0), at(2048)], [null], { stallMs: 100 })),
    (e: unknown) => e instanceof VirtError && e.code === 'NOT_REACHED' && /virtio-mem vmem0 has 2048 KiB plugged of the 524288 KiB asked for/.test(e.message) && /nothing moved for 0 s/.test(e.message));
  assert.ok(Date.now() - t0 < 5_000);
});

/**
 * A guest whose statistics stand at `last` until the balloon asks for a report; the n-th
 * request (from 1) brings what `onAsk(n)` gives, or nothing new for null.
 */
function reporting(last: GuestTotal | null, onAsk: (n: number) => GuestTotal | null): Pick<FollowSpec, 'name' | 'guestTotal' | 'refreshGuestTotal'> {
  let report = last;
  let asked = 0;
  return {
    name: 'g',
    guestTotal: async () => report,
    refreshGuestTotal: async () => { report = onAsk(++asked) ?? report; },
  };
}

test('the baseline of a grow is a report from now, not the last one (which predates a shrink): the grow is reached', async () => {
  // The last report still counts 1 GiB a shrink took away since.
  const stale = { totalKiB: 500000 + 1048576, atS: now() - 3 };
  const before = await guestTotalBaseline(reporting(stale, () => ({ totalKiB: 500000, atS: now() })));
  assert.equal(before?.totalKiB, 500000);
  const r = await followMemory(scripted([at(0), at(524288)], [{ totalKiB: 500000 + 524288, atS: now() }], { guestTotalBefore: before }));
  assert.equal(r.totalKiB, 1048576);
  // What the stale report as baseline made of the same grow.
  await assert.rejects(followMemory(scripted([at(0), at(524288)], [{ totalKiB: 500000 + 524288, atS: now() }], { guestTotalBefore: stale })),
    (e: unknown) => e instanceof VirtError && e.code === 'NOT_REACHED');
});

test('a report stamped in the same second as the last one is not taken for a new one: asked again, a later stamp is', async () => {
  const s = now();
  // The first request's report cannot be told from the last (whole-second stamps); the next one can.
  const before = await guestTotalBaseline(reporting({ totalKiB: 1548576, atS: s }, (n) => (n === 1 ? { totalKiB: 1548576, atS: s } : { totalKiB: 500000, atS: now() })), 5_000);
  assert.deepEqual(before && { totalKiB: before.totalKiB, later: before.atS > s }, { totalKiB: 500000, later: true });
});

test('no new report within the bound, or none at all: no baseline (the onlining check is skipped, QEMU\'s sizes stand)', async () => {
  assert.equal(await guestTotalBaseline(reporting({ totalKiB: 1548576, atS: now() - 3 }, () => null), 50), null);
  let asked = false;
  assert.equal(await guestTotalBaseline({ name: 'g', guestTotal: async () => null, refreshGuestTotal: async () => { asked = true; } }), null);
  assert.equal(asked, false, 'a guest without statistics is not asked for them');
  const r = await followMemory(scripted([at(0), at(524288)], [{ totalKiB: 1548576, atS: now() }], { guestTotalBefore: null }));
  assert.equal(r.totalKiB, 1048576);
});

test('waiting for a baseline ends on the signal with ABORTED', async () => {
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(guestTotalBaseline({ ...reporting({ totalKiB: 1, atS: now() }, () => null), signal: ac.signal }, 5_000),
    (e: unknown) => e instanceof VirtError && e.code === 'ABORTED');
});

test('the flags: no flag is live for setmem, current elsewhere; live on a stopped guest is refused', () => {
  assert.deepEqual(resolveSetMemoryAffect({}, true), { live: true, config: false });
  assert.deepEqual(resolveAffect({}, false), { live: false, config: true });
  assert.deepEqual(resolveAffect({ current: true }, true), { live: true, config: false });
  assert.throws(() => resolveSetMemoryAffect({}, false), (e: unknown) => e instanceof VirtError && e.code === 'OPERATION_INVALID');
  assert.throws(() => resolveSetMemoryAffect({ config: true, wait: true }, true), /--wait needs a live change/);
});

test('sizes, totals and the shrink guard', () => {
  assert.throws(() => checkMemorySize(0, null), /must not be zero/);
  assert.throws(() => checkMemorySize(1024, 65536), /below the minimum of 65536 KiB/);
  checkMemorySize(65536, 65536);
  assert.equal(memoryTotal({ boot: 100, balloon: null, dimm: 5, plugged: [1, 2] }), 108);
  assert.equal(memoryTotal({ boot: 100, balloon: 80, dimm: 0, plugged: [] }), 80);
  assert.equal(guestInUseKiB({ totalKiB: 1000, availableKiB: 400, lastUpdateS: 5 }), 600);
  assert.equal(guestInUseKiB({ totalKiB: 1000, availableKiB: 400, lastUpdateS: 0 }), null, 'never reported');
  // deflate-on-OOM: the balloon's pages stay in MemTotal and show as used; they are not the
  // guest's use (the CI run where a shrink 300 -> 272 MiB was refused for "using 291448 KiB",
  // of which the balloon's part is not use).
  assert.equal(balloonHeldKiB(true, 524288, 300 * 1024), 524288 - 300 * 1024);
  assert.equal(balloonHeldKiB(false, 524288, 300 * 1024), 0, 'without deflate-on-OOM Linux takes them out of MemTotal');
  assert.equal(balloonHeldKiB(true, 524288, null), 0, 'no balloon');
  assert.equal(guestInUseKiB({ totalKiB: 497000, availableKiB: 205552, lastUpdateS: 5 }, balloonHeldKiB(true, 524288, 300 * 1024)), 291448 - (524288 - 300 * 1024));
  assert.equal(guestInUseKiB({ totalKiB: 1000, availableKiB: 400, lastUpdateS: 5 }, 700), 0, 'never below 0');
  assert.match(shrinkRefusal(500, 600)!, /refusing to shrink to 500 KiB: the guest is using 600 KiB/);
  assert.equal(shrinkRefusal(700, 600), null);
});
