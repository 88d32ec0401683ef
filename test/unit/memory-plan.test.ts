import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planMemory, planSplit, planChange, orderSteps, layoutMaxKiB, type MemoryLayout } from '../../src/driver/memory/plan.js';
import { balloonKeepKiB } from '../../src/domain/memory.js';
import { balloonOnlyChange } from '../../src/driver/memory/balloon-only.js';
import { viewFromDefinition } from '../../src/driver/view.js';
import type { DomainDef } from '../../src/domain/definition.js';

const M = 1024;
const G = 1024 * M;
const layout = (pluggedKiB = 0): MemoryLayout => ({ bootKiB: 512 * M, dimmKiB: 0, vmem: [{ id: 'vmem0', sizeKiB: 3584 * M, blockKiB: 2 * M, pluggedKiB }] });

test('growing past boot RAM: balloon fully deflated, virtio-mem carries the rest', () => {
  assert.deepEqual(planMemory(layout(), 2 * G), { targetKiB: 2 * G, balloonKiB: 512 * M, requestedKiB: [1536 * M] });
  assert.equal(layoutMaxKiB(layout()), 4 * G);
  assert.deepEqual(planMemory(layout(), 4 * G).requestedKiB, [3584 * M]);
});

test('below boot RAM: everything unplugged, the balloon does the rest', () => {
  assert.deepEqual(planMemory(layout(1 * G), 256 * M), { targetKiB: 256 * M, balloonKiB: 256 * M, requestedKiB: [0] });
  assert.deepEqual(planMemory(layout(), 512 * M), { targetKiB: 512 * M, balloonKiB: 512 * M, requestedKiB: [0] });
});

test('a target between block boundaries plugs the next block and inflates the remainder', () => {
  const p = planMemory(layout(), 512 * M + 3 * M);
  assert.deepEqual(p.requestedKiB, [4 * M]);
  assert.equal(p.balloonKiB, 511 * M);
  assert.equal(p.balloonKiB + p.requestedKiB[0]!, p.targetKiB);
});

test('several devices fill in order; DIMMs are always there', () => {
  const l: MemoryLayout = { bootKiB: 512 * M, dimmKiB: 256 * M, vmem: [
    { id: 'vmem0', sizeKiB: 1 * G, blockKiB: 2 * M, pluggedKiB: 0 },
    { id: 'vmem1', sizeKiB: 1 * G, blockKiB: 4 * M, pluggedKiB: 0 },
  ] };
  const p = planMemory(l, 512 * M + 256 * M + 1 * G + 6 * M);
  assert.deepEqual(p.requestedKiB, [1 * G, 8 * M]);
  assert.equal(p.balloonKiB, 510 * M);
  assert.throws(() => planMemory(l, layoutMaxKiB(l) + 1), RangeError);
  assert.throws(() => planMemory(l, 256 * M), RangeError);
});

test('order: grow deflates before plugging; shrink unplugs before inflating', () => {
  const from = layout(0);
  const grow = orderSteps(from, 256 * M, planMemory(from, 2 * G));
  assert.deepEqual(grow.map((s) => s.kind), ['balloon', 'vmem']);
  const big = layout(1536 * M);
  const shrink = orderSteps(big, 512 * M, planMemory(big, 256 * M));
  assert.deepEqual(shrink, [{ kind: 'vmem', index: 0, id: 'vmem0', requestedKiB: 0 }, { kind: 'balloon', targetKiB: 256 * M }]);
  assert.deepEqual(orderSteps(big, null, planMemory(big, 2 * G)), [], 'nothing to do when already there (no balloon)');
  assert.deepEqual(orderSteps(big, 512 * M, planMemory(big, 2 * G)), [{ kind: 'balloon', targetKiB: 512 * M }],
    'the balloon target is always sent: QEMU cannot be asked for the one it has');
});

test('order: a change that lands while the last one is still moving is sent, not taken for done', () => {
  // setmem 500M (balloon inflating from 512M toward 500M, an 8 MiB block being unplugged), then at
  // once setmem 520M: the balloon is still at 512M and the block still plugged, but QEMU's targets
  // are 500M and 0. Comparing with where things are would send nothing, and the guest would end
  // at 500M.
  const moving: MemoryLayout = { bootKiB: 512 * M, dimmKiB: 0, vmem: [{ id: 'vmem0', sizeKiB: 1536 * M, blockKiB: 2 * M, pluggedKiB: 8 * M, requestedKiB: 0 }] };
  const steps = orderSteps(moving, 512 * M, planMemory(moving, 520 * M));
  assert.deepEqual(steps, [{ kind: 'vmem', index: 0, id: 'vmem0', requestedKiB: 8 * M }, { kind: 'balloon', targetKiB: 512 * M }]);
  // A device already asked for the planned size is not asked again.
  const asked: MemoryLayout = { ...moving, vmem: [{ ...moving.vmem[0]!, pluggedKiB: 0, requestedKiB: 8 * M }] };
  assert.deepEqual(orderSteps(asked, null, planMemory(asked, 520 * M)), []);
});

test('balloon first: a shrink inflates the balloon and leaves virtio-mem plugged while the balloon can hold it', () => {
  // 512 MiB boot RAM + 768 MiB plugged, balloon deflated: 1280 MiB.
  const l = layout(768 * M);
  const p = planSplit(l, 512 * M, 1024 * M, 'balloon-first');
  assert.deepEqual(p, { targetKiB: 1024 * M, balloonKiB: 256 * M, requestedKiB: [768 * M] });
  assert.deepEqual(orderSteps(l, 512 * M, p), [{ kind: 'balloon', targetKiB: 256 * M }], 'no unplug: one balloon command');
  // The plain split unplugs instead.
  assert.deepEqual(planMemory(l, 1024 * M).requestedKiB, [512 * M]);
});

test('balloon first: the balloon leaves a quarter of boot RAM; only the rest is unplugged, in whole blocks', () => {
  assert.equal(balloonKeepKiB(512 * M), 128 * M);
  assert.equal(balloonKeepKiB(128 * M), 64 * M, 'at least 64 MiB');
  assert.equal(balloonKeepKiB(32 * M), 32 * M, 'never more than there is');
  const l = layout(768 * M);
  // 700 MiB: the balloon could go to 700 - 768 < 0; it stops at 128 MiB and 196 MiB are unplugged.
  const p = planSplit(l, 512 * M, 700 * M, 'balloon-first');
  assert.deepEqual(p, { targetKiB: 700 * M, balloonKiB: 128 * M, requestedKiB: [572 * M] });
  // A block size that does not divide the rest: the unplug rounds up, the balloon keeps more.
  const odd: MemoryLayout = { bootKiB: 512 * M, dimmKiB: 0, vmem: [{ id: 'vmem0', sizeKiB: 1 * G, blockKiB: 64 * M, pluggedKiB: 512 * M }] };
  const q = planSplit(odd, 512 * M, 600 * M, 'balloon-first');
  assert.deepEqual(q, { targetKiB: 600 * M, balloonKiB: 152 * M, requestedKiB: [448 * M] });
});

test('balloon first: a grow plugs and leaves the balloon where it is; deflates only once every device is full', () => {
  const l = layout(512 * M);
  // Balloon at 200 MiB (312 MiB inflated): 712 MiB now; 1000 MiB plugs 288 MiB more.
  assert.deepEqual(planSplit(l, 200 * M, 1000 * M, 'balloon-first'), { targetKiB: 1000 * M, balloonKiB: 200 * M, requestedKiB: [800 * M] });
  // A grow that stops a shrink where the guest is: the balloon target is where it is, nothing plugs.
  assert.deepEqual(planSplit(l, 200 * M, 712 * M, 'balloon-first'), { targetKiB: 712 * M, balloonKiB: 200 * M, requestedKiB: [512 * M] });
  // The device is full: the balloon deflates for the rest.
  const full = layout(3584 * M);
  assert.deepEqual(planSplit(full, 100 * M, 3584 * M + 300 * M, 'balloon-first'), { targetKiB: 3884 * M, balloonKiB: 300 * M, requestedKiB: [3584 * M] });
  // Where a device is still moving, its requested size is what counts.
  const moving: MemoryLayout = { bootKiB: 512 * M, dimmKiB: 0, vmem: [{ id: 'vmem0', sizeKiB: 3584 * M, blockKiB: 2 * M, pluggedKiB: 256 * M, requestedKiB: 512 * M }] };
  assert.deepEqual(planSplit(moving, 512 * M, 1100 * M, 'balloon-first').requestedKiB, [588 * M]);
});

test('balloon back: a grow deflates first, a shrink unplugs first: what the balloon holds comes back as unplugged blocks in two changes', () => {
  // 384 MiB in the balloon (128 MiB of boot RAM left), 256 MiB plugged: 384 MiB.
  const l = layout(256 * M);
  const up = planSplit(l, 128 * M, 768 * M, 'balloon-back');
  assert.deepEqual(up, { targetKiB: 768 * M, balloonKiB: 512 * M, requestedKiB: [256 * M] }, 'the grow only deflates');
  assert.deepEqual(orderSteps(l, 128 * M, up), [{ kind: 'balloon', targetKiB: 512 * M }]);
  // Then back down: the unplug takes it all, the balloon inflates only for the rest.
  const down = planSplit(layout(256 * M), 512 * M, 384 * M, 'balloon-back');
  assert.deepEqual(down, { targetKiB: 384 * M, balloonKiB: 384 * M, requestedKiB: [0] });
  assert.deepEqual(planSplit(layout(512 * M), 512 * M, 768 * M, 'balloon-back'), { targetKiB: 768 * M, balloonKiB: 512 * M, requestedKiB: [256 * M] }, 'unplug only');
  // A grow past boot RAM plugs the rest.
  assert.deepEqual(planSplit(layout(256 * M), 128 * M, 1024 * M, 'balloon-back'), { targetKiB: 1024 * M, balloonKiB: 512 * M, requestedKiB: [512 * M] });
});

test('splits: only where the guest has a balloon; out of range as the plain split', () => {
  const l = layout(768 * M);
  assert.deepEqual(planChange(l, 512 * M, 1024 * M), planMemory(l, 1024 * M), 'plain by default');
  assert.deepEqual(planChange(l, 512 * M, 1024 * M, 'plain'), planMemory(l, 1024 * M));
  assert.deepEqual(planChange(l, null, 1024 * M, 'balloon-first'), planMemory(l, 1024 * M), 'no balloon: unplug');
  assert.deepEqual(planChange(l, 512 * M, 1024 * M, 'balloon-first'), planSplit(l, 512 * M, 1024 * M, 'balloon-first'));
  assert.throws(() => planSplit(l, 512 * M, layoutMaxKiB(l) + 1, 'balloon-first'), RangeError);
});

test('the fast balloon-only path is the plain split: another split on a guest with virtio-mem takes the full path', () => {
  const def = {
    schemaVersion: 1, name: 'g1', uuid: '00000000-0000-0000-0000-000000000001', vcpus: 1,
    memory: { maxKiB: 1024 * M, currentKiB: 300 * M },
    memoryDevices: [{ model: 'virtio-mem', sizeKiB: 512 * M, blockKiB: 2048, requestedKiB: 0 }],
    os: {}, disks: [], balloon: { model: 'virtio', autodeflate: true, freePageReporting: true, statsPeriodS: 0 },
  } as unknown as DomainDef;
  const v = viewFromDefinition(def, { id: 1, state: 'running', pid: 1 }, 0);
  v.monitor = 'connected';
  v.balloonBytes = 300 * M * 1024; // where QEMU's balloon is (the view's unit is bytes)
  const o = { floorKiB: null, force: true, hostAvailableKiB: null };
  // 300 MiB (the balloon holds 212 MiB of boot RAM), nothing plugged: a grow to 450 MiB.
  assert.deepEqual(balloonOnlyChange(v, 450 * M, o), { startKiB: 300 * M }, 'plain: deflate, on the fast path');
  assert.deepEqual(balloonOnlyChange(v, 450 * M, { ...o, split: 'plain' }), { startKiB: 300 * M });
  assert.equal(balloonOnlyChange(v, 450 * M, { ...o, split: 'balloon-first' }), null, 'balloon-first plugs: the full path');
  // The planner's answer for it: plug 150 MiB, the balloon stays.
  const l: MemoryLayout = { bootKiB: 512 * M, dimmKiB: 0, vmem: [{ id: 'vmem0', sizeKiB: 512 * M, blockKiB: 2 * M, pluggedKiB: 0 }] };
  assert.deepEqual(planSplit(l, 300 * M, 450 * M, 'balloon-first'), { targetKiB: 450 * M, balloonKiB: 300 * M, requestedKiB: [150 * M] });
  // A guest without virtio-mem has only the balloon: the fast path whatever the split.
  const plainGuest = viewFromDefinition({ ...def, memoryDevices: [], memory: { maxKiB: 512 * M, currentKiB: 300 * M } } as unknown as DomainDef, { id: 1, state: 'running', pid: 1 }, 0);
  plainGuest.monitor = 'connected';
  plainGuest.balloonBytes = 300 * M * 1024;
  assert.deepEqual(balloonOnlyChange(plainGuest, 450 * M, { ...o, split: 'balloon-first' }), { startKiB: 300 * M });
});
