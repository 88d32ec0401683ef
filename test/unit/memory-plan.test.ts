import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planMemory, orderSteps, layoutMaxKiB, type MemoryLayout } from '../../src/driver/memory/plan.js';

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
