/**
 * The native driver's host memory against a fake kernel (an in-memory sysfs/procfs that
 * behaves as the kernel does where it matters: a pool takes only the pages it can get, a knob
 * refuses a value), for what a real host will not do on demand: several NUMA nodes, sparse node
 * numbers, a pool filled only in part, a knob that fails after another was written. Also the
 * pure rules both drivers share.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NativeNodeMemory } from '../../src/driver/native/node.js';
import type { HostFiles } from '../../src/driver/native/host/sysfs.js';
import { VirtError } from '../../src/domain/errors.js';
import { checkCellsFreeArgs, checkStatsCell, poolGrowthRefusal, poolTarget, validateKsmUpdate } from '../../src/driver/memory/node-rules.js';

const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`${code}: fake`), { code });

/** A kernel in memory: files by path; `onWrite` may change what a write stores or refuse it. */
class FakeKernel implements HostFiles {
  readonly files = new Map<string, string>();
  readonly writes: Array<[string, string]> = [];
  onWrite: (path: string, text: string) => string = (_p, t) => t + '\n';

  constructor(nodes: Record<number, { totalKiB: number; freeKiB: number; pools?: Record<number, number> }>, ksm: Record<string, number> = {}) {
    this.files.set('/proc/meminfo', 'MemTotal:       1000000 kB\nMemFree:         600000 kB\nMemAvailable:    800000 kB\nBuffers:           1000 kB\nCached:           50000 kB\nSwapCached:           0 kB\n');
    this.files.set('/proc/self/smaps', 'KernelPageSize:        4 kB\n');
    for (const size of [2048, 1048576]) this.setPool(-1, size, 0, 0);
    for (const [id, n] of Object.entries(nodes)) {
      this.files.set(`/sys/devices/system/node/node${id}/meminfo`, `Node ${id} MemTotal:       ${n.totalKiB} kB\nNode ${id} MemFree:        ${n.freeKiB} kB\nNode ${id} MemUsed:        ${n.totalKiB - n.freeKiB} kB\n`);
      for (const size of [2048, 1048576]) this.setPool(Number(id), size, n.pools?.[size] ?? 0, n.pools?.[size] ?? 0);
    }
    for (const [file, v] of Object.entries({ pages_to_scan: 100, sleep_millisecs: 20, pages_shared: 0, pages_sharing: 0, pages_unshared: 0, pages_volatile: 0, full_scans: 3, merge_across_nodes: 1, ...ksm })) {
      this.files.set(`/sys/kernel/mm/ksm/${file}`, `${v}\n`);
    }
  }

  setPool(cell: number, sizeKiB: number, nr: number, free: number): void {
    const dir = cell < 0 ? `/sys/kernel/mm/hugepages/hugepages-${sizeKiB}kB` : `/sys/devices/system/node/node${cell}/hugepages/hugepages-${sizeKiB}kB`;
    this.files.set(`${dir}/nr_hugepages`, `${nr}\n`);
    this.files.set(`${dir}/free_hugepages`, `${free}\n`);
  }

  async read(path: string): Promise<string> {
    const v = this.files.get(path);
    if (v === undefined) throw errno('ENOENT');
    return v;
  }

  async write(path: string, text: string): Promise<void> {
    if (!this.files.has(path)) throw errno('ENOENT');
    this.writes.push([path, text]);
    this.files.set(path, this.onWrite(path, text));
  }

  async list(dir: string): Promise<string[]> {
    const names = new Set<string>();
    for (const p of this.files.keys()) if (p.startsWith(dir + '/')) names.add(p.slice(dir.length + 1).split('/')[0]!);
    if (names.size === 0) throw errno('ENOENT');
    return [...names];
  }
}

const host = (k: FakeKernel, availableKiB: number | null = 800000): NativeNodeMemory =>
  new NativeNodeMemory({ sysRoot: '/sys', procRoot: '/proc', files: k, availableKiB: async () => availableKiB });
const rejects = (p: Promise<unknown>, code: string, message: string): Promise<void> =>
  assert.rejects(p, (e: unknown) => e instanceof VirtError && e.code === code && e.message === message);

test('topology: nodes, the system page size first, each pool; ordinary pages exclude huge pages', async () => {
  const k = new FakeKernel({ 0: { totalKiB: 400000, freeKiB: 100000, pools: { 2048: 10 } }, 2: { totalKiB: 600000, freeKiB: 500000 } });
  const t = await host(k).topology();
  assert.deepEqual(t.pageSizesKiB, [4, 2048, 1048576]);
  assert.deepEqual(t.cells.map((c) => c.id), [0, 2]);
  assert.deepEqual(t.cells[0]!.pages, [{ sizeKiB: 4, count: (400000 - 20480) / 4 }, { sizeKiB: 2048, count: 10 }, { sizeKiB: 1048576, count: 0 }]);
});

test('free memory: the sum of the nodes, each node, a sparse node as 0, libvirt\'s errors', async () => {
  const k = new FakeKernel({ 0: { totalKiB: 400000, freeKiB: 100000 }, 2: { totalKiB: 600000, freeKiB: 500000 } });
  const n = host(k);
  assert.equal(await n.freeMemoryBytes(), 600000 * 1024);
  assert.deepEqual(await n.freeCellsBytes(0, 3), [100000 * 1024, 0, 500000 * 1024]);
  assert.deepEqual(await n.freeCellsBytes(2, 1), [500000 * 1024]);
  await rejects(n.freeCellsBytes(3, 1), 'INVALID_ARG', 'internal error: start cell 3 out of range (0-2)');
  await rejects(n.freeCellsBytes(-1, 1), 'INVALID_ARG', 'startCell in virNodeGetCellsFreeMemory must be zero or greater');
});

test('free pages: system pages from MemFree, huge pages from the pool, host-wide with -1', async () => {
  const k = new FakeKernel({ 0: { totalKiB: 400000, freeKiB: 100001 }, 1: { totalKiB: 600000, freeKiB: 500000 } });
  k.setPool(1, 2048, 8, 5);
  k.setPool(-1, 2048, 8, 5);
  const n = host(k);
  assert.deepEqual(await n.freePages([4, 2048], 0, 2), [25000, 0, 125000, 5]);
  assert.deepEqual(await n.freePages([4, 2048], -1, 1), [600000 / 4, 5]);
  await rejects(n.freePages([3072], 1, 1), 'INVALID_ARG', 'operation failed: page size 3072 is not available on node 1');
  await rejects(n.freePages([3072], -1, 1), 'INVALID_ARG', 'operation failed: page size 3072 is not available');
  await rejects(n.freePages([2048], 2, 1), 'INVALID_ARG', 'internal error: start cell 2 out of range (0-1)');
});

test('alloc pages: set, add, nothing to do writes nothing; the system pool and unknown sizes are refused', async () => {
  const k = new FakeKernel({ 0: { totalKiB: 400000, freeKiB: 100000 } });
  const n = host(k);
  assert.deepEqual((await n.allocPages({ pageSizeKiB: 2048, pageCount: 4, cells: [0], add: false })).pools, [{ cell: 0, pageSizeKiB: 2048, count: 4 }]);
  assert.deepEqual((await n.allocPages({ pageSizeKiB: 2048, pageCount: 2, cells: [0], add: true })).pools, [{ cell: 0, pageSizeKiB: 2048, count: 6 }]);
  const before = k.writes.length;
  await n.allocPages({ pageSizeKiB: 2048, pageCount: 6, cells: [0], add: false });
  await n.allocPages({ pageSizeKiB: 2048, pageCount: 0, cells: [0], add: true });
  assert.equal(k.writes.length, before, 'no write when the pool already has that size');
  await rejects(n.allocPages({ pageSizeKiB: 4, pageCount: 1, cells: [0], add: false }), 'NO_SUPPORT', "Operation not supported: system pages pool can't be modified");
  await rejects(n.allocPages({ pageSizeKiB: 3072, pageCount: 1, cells: [-1], add: false }), 'INVALID_ARG', 'operation failed: page size 3072 is not available');
  await rejects(n.allocPages({ pageSizeKiB: 2048, pageCount: 1, cells: [1], add: false }), 'INVALID_ARG', 'internal error: start cell 1 out of range (0-0)');
});

test('alloc pages: growth past what the host has is refused before anything is written', async () => {
  const k = new FakeKernel({ 0: { totalKiB: 400000, freeKiB: 100000 }, 1: { totalKiB: 400000, freeKiB: 100000 } });
  const n = host(k, 10000);
  await assert.rejects(n.allocPages({ pageSizeKiB: 2048, pageCount: 3, cells: [0, 1], add: false }),
    (e: unknown) => e instanceof VirtError && e.code === 'INVALID_ARG' && /^refusing to grow 2 page pools: that takes 12288 KiB and the host has only 10000 KiB available \(MemAvailable\); nothing was changed$/.test(e.message));
  await assert.rejects(n.allocPages({ pageSizeKiB: 2048, pageCount: 2 ** 60, cells: [-1], add: false }), /more memory than any host has/);
  assert.deepEqual(k.writes, []);
  // Shrinking needs no memory: allowed whatever is available.
  k.setPool(0, 2048, 50, 50);
  await n.allocPages({ pageSizeKiB: 2048, pageCount: 0, cells: [0], add: false });
  assert.equal(k.files.get('/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages'), '0\n');
});

test('alloc pages: a pool the kernel fills in part is put back, and so are the cells before it', async () => {
  const k = new FakeKernel({ 0: { totalKiB: 400000, freeKiB: 100000, pools: { 2048: 1 } }, 1: { totalKiB: 400000, freeKiB: 100000, pools: { 2048: 2 } } });
  // Node 1 has room for 3 pages only.
  k.onWrite = (path, text) => `${path.includes('node1/') ? Math.min(Number(text), 3) : Number(text)}\n`;
  await rejects(host(k).allocPages({ pageSizeKiB: 2048, pageCount: 5, cells: [0, 1], add: false }), 'OPERATION_FAILED',
    'operation failed: Unable to allocate 5 pages. Allocated only 3 (undone: every pool is back at its size before the call)');
  assert.equal(k.files.get('/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages'), '1\n');
  assert.equal(k.files.get('/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages'), '2\n');
});

test('alloc pages: a write the kernel refuses reads as libvirt\'s, earlier pools put back', async () => {
  const k = new FakeKernel({ 0: { totalKiB: 400000, freeKiB: 100000 }, 1: { totalKiB: 400000, freeKiB: 100000 } });
  k.onWrite = (path, text) => { if (path.includes('node1/')) throw errno('EINVAL'); return `${text}\n`; };
  await rejects(host(k).allocPages({ pageSizeKiB: 2048, pageCount: 2, cells: [0, 1], add: false }), 'OPERATION_FAILED',
    'Unable to write to: /sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages: Invalid argument');
  assert.equal(k.files.get('/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages'), '0\n');
});

test('KSM: read in libvirt\'s order and types; set in virsh\'s order; all or nothing', async () => {
  const k = new FakeKernel({ 0: { totalKiB: 400000, freeKiB: 100000 } });
  const n = host(k);
  const params = await n.memoryParameters();
  assert.deepEqual(params.map((p) => `${p.field}=${p.value}:${p.type}`), ['shm_pages_to_scan=100:uint', 'shm_sleep_millisecs=20:uint', 'shm_pages_shared=0:ullong',
    'shm_pages_sharing=0:ullong', 'shm_pages_unshared=0:ullong', 'shm_pages_volatile=0:ullong', 'shm_full_scans=3:ullong', 'shm_merge_across_nodes=1:uint']);
  await n.setMemoryParameters({ shmMergeAcrossNodes: 0, shmPagesToScan: 7 });
  assert.deepEqual(k.writes.map(([p, t]) => `${p.split('/').pop()}=${t}`), ['pages_to_scan=7', 'merge_across_nodes=0']);
  // The kernel refuses the second knob (KSM still shares pages): the first goes back.
  k.writes.length = 0;
  k.onWrite = (path, text) => { if (path.endsWith('merge_across_nodes')) throw errno('EBUSY'); return `${text}\n`; };
  await rejects(n.setMemoryParameters({ shmPagesToScan: 9, shmMergeAcrossNodes: 1 }), 'OPERATION_FAILED', 'failed to set shm_merge_across_nodes: Device or resource busy');
  assert.equal(k.files.get('/sys/kernel/mm/ksm/pages_to_scan'), '7\n');
  // Out of range: refused before any write.
  k.writes.length = 0;
  await rejects(n.setMemoryParameters({ shmPagesToScan: 50, shmMergeAcrossNodes: 2 }), 'INVALID_ARG', 'invalid argument: shm_merge_across_nodes must be 0 or 1, not 2');
  assert.deepEqual(k.writes, []);
  // A kernel without the file.
  k.files.delete('/sys/kernel/mm/ksm/merge_across_nodes');
  assert.equal((await n.memoryParameters()).length, 7);
  await rejects(n.setMemoryParameters({ shmMergeAcrossNodes: 1 }), 'OPERATION_INVALID', "Requested operation is not valid: Parameter 'shm_merge_across_nodes' is not supported by this kernel");
});

test('memory stats: host-wide four, a node two, libvirt\'s errors for cells', async () => {
  const k = new FakeKernel({ 0: { totalKiB: 400000, freeKiB: 100000 }, 2: { totalKiB: 600000, freeKiB: 500000 } });
  const n = host(k);
  assert.deepEqual(await n.memoryStats(-1), [{ field: 'total', valueKiB: 1000000 }, { field: 'free', valueKiB: 600000 }, { field: 'buffers', valueKiB: 1000 }, { field: 'cached', valueKiB: 50000 }]);
  assert.deepEqual(await n.memoryStats(2), [{ field: 'total', valueKiB: 600000 }, { field: 'free', valueKiB: 500000 }]);
  await rejects(n.memoryStats(3), 'INVALID_ARG', 'cellNum in virHostMemGetStats must be less than or equal to 2');
  await rejects(n.memoryStats(-2), 'INVALID_ARG', 'cellNum in virNodeGetMemoryStats only accepts -1 as a negative value');
  await rejects(n.memoryStats(1), 'OPERATION_FAILED', 'cannot open /sys/devices/system/node/node1/meminfo: No such file or directory');
});

test('rules: libvirt\'s client checks, pool targets, the growth guard, KSM values', () => {
  assert.throws(() => checkCellsFreeArgs(0, 0), /maxCells in virNodeGetCellsFreeMemory must be greater than zero/);
  assert.doesNotThrow(() => checkCellsFreeArgs(0, 1));
  assert.doesNotThrow(() => checkStatsCell(-1));
  assert.doesNotThrow(() => checkStatsCell(7));
  assert.equal(poolTarget(4, 0, true), null);
  assert.equal(poolTarget(4, 3, true), 7);
  assert.equal(poolTarget(4, 4, false), null);
  assert.equal(poolTarget(4, 1, false), 1);
  const c = { cell: -1, pageSizeKiB: 2048, fromCount: 0, toCount: 4 };
  assert.equal(poolGrowthRefusal([c], 8192, 'x'), null);
  assert.equal(poolGrowthRefusal([c], null, 'x'), null, 'nothing to go by: no refusal');
  assert.equal(poolGrowthRefusal([c], 8191, 'MemAvailable'), 'refusing to grow the 2048 KiB page pool from 0 to 4 pages: that takes 8192 KiB and the host has only 8191 KiB available (MemAvailable); nothing was changed');
  assert.equal(poolGrowthRefusal([{ ...c, cell: 3, fromCount: 9, toCount: 1 }], 0, 'x'), null);
  assert.deepEqual(validateKsmUpdate({ shmMergeAcrossNodes: 0, shmPagesToScan: 4294967295 }), [{ field: 'shm_pages_to_scan', value: 4294967295 }, { field: 'shm_merge_across_nodes', value: 0 }]);
  assert.throws(() => validateKsmUpdate({ shmSleepMillisecs: 4294967296 }), /shm_sleep_millisecs must be an integer from 0 to 4294967295, not 4294967296/);
  assert.throws(() => validateKsmUpdate({ shmSleepMillisecs: 1.5 }), /shm_sleep_millisecs must be an integer/);
  assert.throws(() => validateKsmUpdate({}), /no memory parameter to set/);
});
