/**
 * The libvirt driver's host memory calls against a scripted fake daemon: each procedure's
 * arguments as libvirt's remote_protocol.x lays them out, the replies decoded, the checks
 * libvirt's client library makes before sending (nothing goes out), and what virtmem adds for
 * faults a real host will not produce on demand: a pool the kernel filled only in part, a KSM
 * knob refused after another was written; both are put back.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LibvirtClient } from '../../src/libvirt/client.js';
import { LibvirtError } from '../../src/libvirt/errors.js';
import { Proc, readTypedParam, writeError, writeTypedParam } from '../../src/libvirt/protocol.js';
import { XdrReader, XdrWriter } from '../../src/libvirt/xdr.js';
import { LibvirtNodeMemory } from '../../src/driver/libvirt/node.js';
import { VirtError } from '../../src/domain/errors.js';
import { fakeDaemon, packet, reply, type Call } from './fake-libvirtd.js';

const caps = (pools: [number, number]): string => `<capabilities><host><cpu><pages unit='KiB' size='4'/><pages unit='KiB' size='2048'/></cpu>
  <topology><cells num='2'>
    <cell id='0'><pages unit='KiB' size='4'>1000</pages><pages unit='KiB' size='2048'>${pools[0]}</pages></cell>
    <cell id='1'><pages unit='KiB' size='4'>1000</pages><pages unit='KiB' size='2048'>${pools[1]}</pages></cell>
  </cells></topology></host></capabilities>`;

function failWith(c: Call, code: number, message: string): Buffer {
  const w = new XdrWriter();
  writeError(w, { code, domain: 0, message, level: 2, str1: null, str2: null, str3: null, int1: -1, int2: -1 });
  return packet(c.prog, c.proc, 1, c.serial, 1, w.finish());
}

/** A daemon with a host: two cells, a 2 MiB pool per cell, KSM knobs, statistics. */
async function host(opts: { partialOnCell?: number; refuseMerge?: boolean } = {}) {
  const pools: [number, number] = [1, 2];
  const ksm = new Map<string, number>([['shm_pages_to_scan', 100], ['shm_sleep_millisecs', 20], ['shm_full_scans', 3], ['shm_merge_across_nodes', 1]]);
  const d = await fakeDaemon((c, s) => {
    const r = new XdrReader(c.payload);
    const w = new XdrWriter();
    switch (c.proc) {
      case Proc.CONNECT_GET_CAPABILITIES: w.string(caps(pools)); break;
      case Proc.NODE_GET_FREE_MEMORY: w.uhyper(7 * 1024 * 1024); break;
      case Proc.NODE_GET_CELLS_FREE_MEMORY: { r.int(); const n = r.int(); w.array(Array.from({ length: n }, () => 2048 * 1024), (x, v) => x.uhyper(v)); break; }
      case Proc.NODE_GET_FREE_PAGES: { const sizes = r.array((x) => x.uint()); const start = r.int(); const count = r.uint(); r.uint(); w.array(sizes.map((sz) => sz + start + count), (x, v) => x.uhyper(v)); break; }
      case Proc.NODE_GET_MEMORY_STATS: {
        const n = r.int(); const cell = r.int(); r.uint();
        const all: Array<[string, number]> = cell === -1 ? [['total', 1000000], ['free', 500000], ['buffers', 1000], ['cached', 9000]] : [['total', 400000], ['free', 200000]];
        w.array(n === 0 ? [] : all, (x, [f, v]) => x.string(f).uhyper(v)).int(all.length);
        break;
      }
      case Proc.NODE_GET_MEMORY_PARAMETERS: {
        const n = r.int(); r.uint();
        const params = n === 0 ? [] : [...ksm].map(([field, value]) => ({ field, value: field === 'shm_full_scans' ? { type: 'ullong' as const, value: BigInt(value) } : { type: 'uint' as const, value } }));
        w.array(params, (x, p) => writeTypedParam(x, p)).int(ksm.size);
        break;
      }
      case Proc.NODE_SET_MEMORY_PARAMETERS: {
        // As libvirt: knob by knob, stopping at the first the kernel refuses.
        for (const p of r.array(readTypedParam)) {
          if (opts.refuseMerge && p.field === 'shm_merge_across_nodes') return s.write(failWith(c, 38, 'failed to set shm_merge_across_nodes: Operation not permitted'));
          ksm.set(p.field, Number(p.value.value));
        }
        break;
      }
      case Proc.NODE_ALLOC_PAGES: {
        const sizes = r.array((x) => x.uint()); const counts = r.array((x) => x.uhyper()); const cell = r.int(); r.uint(); const flags = r.uint();
        assert.deepEqual(sizes, [2048]);
        const target = flags === 1 ? counts[0]! : pools[cell]! + counts[0]!;
        if (cell === opts.partialOnCell && target > 3) {
          pools[cell] = 3;
          return s.write(failWith(c, 9, `operation failed: Unable to allocate ${target} pages. Allocated only 3`));
        }
        pools[cell] = target;
        w.int(1);
        break;
      }
      default: return s.write(failWith(c, 3, `this function is not supported by the connection driver: proc ${c.proc}`));
    }
    s.write(reply(c, w.finish()));
  });
  const cl = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
  const node = new LibvirtNodeMemory({ connection: async () => cl });
  const calls = (proc: number): Call[] => d.calls.filter((c) => c.proc === proc);
  return { d, cl, node, pools, ksm, calls, async close() { await cl.close(); await d.close(); } };
}

test('reads: free memory, cells, pages, statistics and parameters in libvirt\'s layouts', async () => {
  const h = await host();
  try {
    assert.equal(await h.node.freeMemoryBytes(), 7 * 1024 * 1024);
    assert.deepEqual(await h.node.freeCellsBytes(1, 1), [2048 * 1024]);
    assert.deepEqual([...h.calls(Proc.NODE_GET_CELLS_FREE_MEMORY)[0]!.payload], [0, 0, 0, 1, 0, 0, 0, 1]);
    assert.deepEqual(await h.node.freePages([4, 2048], -1, 1), [4, 2048]);
    const fp = new XdrReader(h.calls(Proc.NODE_GET_FREE_PAGES)[0]!.payload);
    assert.deepEqual([fp.array((x) => x.uint()), fp.int(), fp.uint(), fp.uint()], [[4, 2048], -1, 1, 0]);
    assert.deepEqual(await h.node.memoryStats(-1), [{ field: 'total', valueKiB: 1000000 }, { field: 'free', valueKiB: 500000 }, { field: 'buffers', valueKiB: 1000 }, { field: 'cached', valueKiB: 9000 }]);
    assert.deepEqual(await h.node.memoryStats(0), [{ field: 'total', valueKiB: 400000 }, { field: 'free', valueKiB: 200000 }]);
    // libvirt's two steps: how many (nparams 0), then that many.
    assert.deepEqual(h.calls(Proc.NODE_GET_MEMORY_STATS).map((c) => { const r = new XdrReader(c.payload); return [r.int(), r.int(), r.uint()]; }), [[0, -1, 0], [4, -1, 0], [0, 0, 0], [2, 0, 0]]);
    assert.deepEqual((await h.node.memoryParameters()).map((p) => `${p.field}=${p.value}:${p.type}`),
      ['shm_pages_to_scan=100:uint', 'shm_sleep_millisecs=20:uint', 'shm_full_scans=3:ullong', 'shm_merge_across_nodes=1:uint']);
    assert.deepEqual((await h.node.topology()).cells.map((c) => c.id), [0, 1]);
  } finally { await h.close(); }
});

test('libvirt\'s client-side checks refuse before anything is sent', async () => {
  const h = await host();
  try {
    const before = h.d.calls.length;
    await assert.rejects(h.node.freeCellsBytes(-1, 1), (e: unknown) => e instanceof VirtError && e.message === 'startCell in virNodeGetCellsFreeMemory must be zero or greater');
    await assert.rejects(h.node.memoryStats(-2), (e: unknown) => e instanceof VirtError && e.message === 'cellNum in virNodeGetMemoryStats only accepts -1 as a negative value');
    await assert.rejects(h.node.setMemoryParameters({ shmMergeAcrossNodes: 2 }), /shm_merge_across_nodes must be 0 or 1, not 2/);
    assert.equal(h.d.calls.length, before);
  } finally { await h.close(); }
});

test('set KSM knobs: typed uint parameters in virsh\'s order', async () => {
  const h = await host();
  try {
    await h.node.setMemoryParameters({ shmMergeAcrossNodes: 0, shmPagesToScan: 55 });
    const r = new XdrReader(h.calls(Proc.NODE_SET_MEMORY_PARAMETERS)[0]!.payload);
    assert.deepEqual(r.array(readTypedParam), [{ field: 'shm_pages_to_scan', value: { type: 'uint', value: 55 } }, { field: 'shm_merge_across_nodes', value: { type: 'uint', value: 0 } }]);
    assert.equal(r.uint(), 0);
    assert.equal(h.ksm.get('shm_pages_to_scan'), 55);
  } finally { await h.close(); }
});

test('a KSM knob refused after another was written: the first is put back, libvirt\'s error kept', async () => {
  const h = await host({ refuseMerge: true });
  try {
    await assert.rejects(h.node.setMemoryParameters({ shmPagesToScan: 9, shmMergeAcrossNodes: 0 }), (e: unknown) => e instanceof LibvirtError && e.libvirtCode === 38
      && e.message === 'failed to set shm_merge_across_nodes: Operation not permitted (undone: the parameters set before it are back as they were)');
    assert.equal(h.ksm.get('shm_pages_to_scan'), 100);
  } finally { await h.close(); }
});

test('alloc pages: SET and ADD flags, one call per cell, the pools afterwards', async () => {
  const h = await host();
  try {
    assert.deepEqual((await h.node.allocPages({ pageSizeKiB: 2048, pageCount: 3, cells: [0, 1], add: false })).pools.map((p) => p.count), [3, 3]);
    assert.deepEqual((await h.node.allocPages({ pageSizeKiB: 2048, pageCount: 2, cells: [-1], add: true })).pools, [{ cell: -1, pageSizeKiB: 2048, count: 6 }]);
    const args = h.calls(Proc.NODE_ALLOC_PAGES).map((c) => { const r = new XdrReader(c.payload); return [r.array((x) => x.uint()), r.array((x) => x.uhyper()), r.int(), r.uint(), r.uint()]; });
    assert.deepEqual(args, [[[2048], [3], 0, 1, 1], [[2048], [3], 1, 1, 1], [[2048], [2], -1, 1, 0]]);
  } finally { await h.close(); }
});

test('alloc pages: growth past free + buffers + cached is refused before any call', async () => {
  const h = await host();
  try {
    await assert.rejects(h.node.allocPages({ pageSizeKiB: 2048, pageCount: 300, cells: [0], add: false }),
      /^VirtError: refusing to grow the 2048 KiB page pool of node 0 from 1 to 300 pages: that takes 612352 KiB and the host has only 510000 KiB available \(free \+ buffers \+ cached, from nodememstats\); nothing was changed$/);
    assert.equal(h.calls(Proc.NODE_ALLOC_PAGES).length, 0);
  } finally { await h.close(); }
});

test('alloc pages: a pool libvirt filled in part, and the cell before it, are set back', async () => {
  const h = await host({ partialOnCell: 1 });
  try {
    await assert.rejects(h.node.allocPages({ pageSizeKiB: 2048, pageCount: 5, cells: [0, 1], add: false }), (e: unknown) => e instanceof LibvirtError && e.libvirtCode === 9
      && e.message === 'operation failed: Unable to allocate 5 pages. Allocated only 3 (undone: every pool is back at its size before the call)');
    assert.deepEqual(h.pools, [1, 2]);
  } finally { await h.close(); }
});
