/**
 * The host memory parsers, on files recorded on this machine (test/fixtures/node/) and on the
 * odd shapes a kernel or libvirt can produce: NUMA node lists, node meminfo, huge page
 * directories and counters, KSM files, smaps' page size, libvirt's statistics fields and the
 * capabilities topology.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../helpers/cli.js';
import { nodeIdsFromEntries, parseNodeMeminfoKiB, stripNodePrefix } from '../../src/driver/native/host/numa-nodes.js';
import { hugepageSizeFromDirName, parsePoolCount, poolDir } from '../../src/driver/native/host/hugepages.js';
import { KSM_PARAMETERS, ksmFileOf, parseKsmValue } from '../../src/driver/native/host/ksm.js';
import { kernelPageSizeKiB } from '../../src/driver/native/host/page-size.js';
import { memoryStatsFromMeminfo } from '../../src/driver/native/host/memory-stats.js';
import { topologyFromCapabilities } from '../../src/driver/libvirt/node.js';
import { VirtError } from '../../src/domain/errors.js';

const fixture = (name: string): string => readFileSync(join(ROOT, 'test', 'fixtures', 'node', name), 'utf8');

test('NUMA node ids: nodeN entries only, numerically sorted', () => {
  assert.deepEqual(nodeIdsFromEntries(['has_cpu', 'node10', 'node2', 'online', 'node0', 'possible', 'nodeX', 'node', 'power']), [0, 2, 10]);
  assert.deepEqual(nodeIdsFromEntries([]), []);
});

test('node meminfo: the "Node N" prefix goes, values in KiB', () => {
  const text = fixture('node0-meminfo.txt');
  const m = parseNodeMeminfoKiB(text);
  assert.equal(m.get('MemTotal'), Number(/^Node 0 MemTotal:\s+(\d+) kB$/m.exec(text)![1]));
  assert.equal(m.get('MemFree'), Number(/^Node 0 MemFree:\s+(\d+) kB$/m.exec(text)![1]));
  assert.ok(m.has('HugePages_Total'), 'counts without a unit are kept');
  assert.equal(stripNodePrefix('Node 12 MemFree:  5 kB\nNode 12 MemUsed: 7 kB'), 'MemFree:  5 kB\nMemUsed: 7 kB');
  assert.equal(stripNodePrefix('MemFree: 5 kB'), 'MemFree: 5 kB', '/proc/meminfo lines stay as they are');
});

test('huge page directories and counters', () => {
  assert.equal(hugepageSizeFromDirName('hugepages-2048kB'), 2048);
  assert.equal(hugepageSizeFromDirName('hugepages-1048576kB'), 1048576);
  assert.equal(hugepageSizeFromDirName('hugepages-64KB'), 64);
  for (const bad of ['hugepages-', 'hugepages-2048', 'hugepages-2048MB', 'nr_hugepages', 'hugepages-x kB']) assert.equal(hugepageSizeFromDirName(bad), null, bad);
  assert.equal(parsePoolCount('0\n'), 0);
  assert.equal(parsePoolCount('11467\n'), 11467);
  for (const bad of ['', '12', '-1\n', '1 2\n', 'x\n', '99999999999999999999\n']) {
    assert.throws(() => parsePoolCount(bad), (e: unknown) => e instanceof VirtError && e.code === 'INTERNAL' && e.message === `internal error: unable to parse: ${bad}`, JSON.stringify(bad));
  }
  assert.equal(poolDir('/sys', -1, 2048), '/sys/kernel/mm/hugepages/hugepages-2048kB');
  assert.equal(poolDir('/sys', 3, 1048576), '/sys/devices/system/node/node3/hugepages/hugepages-1048576kB');
});

test('KSM: libvirt\'s fields, order and types; values as the kernel writes them', () => {
  assert.deepEqual(KSM_PARAMETERS.map((p) => p.field), ['shm_pages_to_scan', 'shm_sleep_millisecs', 'shm_pages_shared', 'shm_pages_sharing',
    'shm_pages_unshared', 'shm_pages_volatile', 'shm_full_scans', 'shm_merge_across_nodes']);
  assert.deepEqual(KSM_PARAMETERS.filter((p) => p.type === 'uint').map((p) => p.file), ['pages_to_scan', 'sleep_millisecs', 'merge_across_nodes']);
  assert.equal(ksmFileOf('shm_sleep_millisecs'), 'sleep_millisecs');
  assert.equal(ksmFileOf('shm_run'), null);
  assert.equal(parseKsmValue('100\n', 'pages_to_scan', 'uint'), 100);
  assert.equal(parseKsmValue('0', 'full_scans', 'ullong'), 0);
  assert.equal(parseKsmValue('4294967296\n', 'pages_shared', 'ullong'), 4294967296);
  for (const bad of ['4294967296\n', '-1\n', '\n', 'x\n', ' 5\n']) {
    assert.throws(() => parseKsmValue(bad, 'pages_to_scan', 'uint'), /^VirtError: internal error: failed to parse pages_to_scan$/, JSON.stringify(bad));
  }
});

test('system page size from smaps', () => {
  assert.equal(kernelPageSizeKiB(fixture('smaps-head.txt')), 4);
  assert.equal(kernelPageSizeKiB('00400000-00452000 r-xp 00000000 08:02 173521 /x\nSize: 328 kB\nKernelPageSize:       64 kB\n'), 64);
  assert.equal(kernelPageSizeKiB(''), null);
});

test('nodememstats fields: four host-wide, two per node, in the file\'s order, KiB', () => {
  const host = fixture('proc-meminfo.txt');
  const kib = (name: string, text: string): number => Number(new RegExp(`^(?:Node 0 )?${name}:\\s+(\\d+) kB$`, 'm').exec(text)![1]);
  assert.deepEqual(memoryStatsFromMeminfo(host, true), [
    { field: 'total', valueKiB: kib('MemTotal', host) }, { field: 'free', valueKiB: kib('MemFree', host) },
    { field: 'buffers', valueKiB: kib('Buffers', host) }, { field: 'cached', valueKiB: kib('Cached', host) },
  ]);
  const node = fixture('node0-meminfo.txt');
  assert.deepEqual(memoryStatsFromMeminfo(node, false), [{ field: 'total', valueKiB: kib('MemTotal', node) }, { field: 'free', valueKiB: kib('MemFree', node) }]);
  // SwapCached is not Cached; a file with none of the lines gives none.
  assert.deepEqual(memoryStatsFromMeminfo('SwapCached: 5 kB\nCached: 7 kB\n', true), [{ field: 'cached', valueKiB: 7 }]);
  assert.deepEqual(memoryStatsFromMeminfo('garbage\n', true), []);
});

test('capabilities topology: cells with their pools, page sizes from host/cpu', () => {
  const qemu = topologyFromCapabilities(fixture('capabilities-qemu.xml'));
  assert.deepEqual(qemu.pageSizesKiB, [4, 2048, 1048576]);
  assert.deepEqual(qemu.cells.map((c) => c.id), [0]);
  assert.deepEqual(qemu.cells[0]!.pages.map((p) => p.sizeKiB), [4, 2048, 1048576]);
  const test = topologyFromCapabilities(fixture('capabilities-test.xml'));
  assert.deepEqual(test.pageSizesKiB, [4, 8, 2048, 1048576]);
  assert.deepEqual(test.cells.map((c) => [c.id, c.pages.map((p) => `${p.sizeKiB}:${p.count}`)]), [[0, ['4:524288', '2048:0', '1048576:0']], [1, ['8:524288', '2048:0', '1048576:0']]]);
});

test('capabilities topology: page sizes from the cells when host/cpu lists none (deduplicated, sorted), no topology at all', () => {
  const xml = `<capabilities><host><cpu/><topology><cells num='2'>
    <cell id='1'><pages unit='KiB' size='2048'>3</pages><pages unit='KiB' size='4'>10</pages></cell>
    <cell id='0'><pages unit='KiB' size='4'>10</pages></cell></cells></topology></host></capabilities>`;
  const t = topologyFromCapabilities(xml);
  assert.deepEqual(t.pageSizesKiB, [4, 2048]);
  assert.deepEqual(t.cells.map((c) => c.id), [1, 0], 'in the document\'s order, as virsh walks them');
  assert.deepEqual(topologyFromCapabilities('<capabilities><host/></capabilities>'), { cells: [], pageSizesKiB: [] });
  assert.throws(() => topologyFromCapabilities('not xml'), (e: unknown) => e instanceof VirtError && e.code === 'XML_ERROR');
});
