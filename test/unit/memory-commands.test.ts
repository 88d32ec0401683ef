/**
 * The pure parts of virsh's memory commands and of the memory truth: virsh's value parsing and
 * layouts (memtune, numatune, domstats), the choice and rewrite of a memory device the way
 * virsh does it on libvirt's XML (recorded from libvirt 9.0 on this machine), libvirt's request
 * size rules, the dirty rate group, KSM's per-process counters, a definition's backing and
 * placement, and the API's byte form of them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError } from '../../src/cli/args.js';
import { cIntBase0, virshMemtuneKiB } from '../../src/cli/virsh-values.js';
import { formatDomainStats, formatDominfo, formatMemoryParameters, formatNumaParameters, hostMemoryLines, typedParamText } from '../../src/cli/format.js';
import { memoryDeviceTexts, updatedMemoryDeviceXml } from '../../src/driver/libvirt/memory-device-xml.js';
import { asDeviceInDomain, checkRequestedSize, libxmlNodeText, selectMemoryDevice } from '../../src/driver/memory/device-rules.js';
import { dirtyRateParams } from '../../src/driver/native/domain-stats.js';
import { definedHostMemory, parseKsmStat } from '../../src/driver/memory/guest-host-memory.js';
import { guestBacking, guestPlacement, regionHugepageKiB } from '../../src/driver/memory/backing.js';
import { parseProcCgroup } from '../../src/driver/memory/cgroup-hierarchy.js';
import { hostMemoryDocument, hostMemoryFromDocument, type GuestHostMemory } from '../../src/driver/domain-memory-api.js';
import { stateCodes, reasonOf, stateOf } from '../../src/driver/state-codes.js';
import { balloonBaseKiB } from '../../src/driver/native/qemu-memory.js';
import { hostMemoryView } from '../../src/dashboard/web/model.js';
import { formatMetrics } from '../../src/http/metrics.js';
import { viewFromDefinition } from '../../src/driver/view.js';
import { VirtError } from '../../src/domain/errors.js';
import type { DomainDef } from '../../src/domain/definition.js';
import type { DomainInfo } from '../../src/driver/api.js';

test('memtune values: strtoll, any negative number unlimited, units, rounded up to KiB; bad ones in virsh\u2019s words', () => {
  assert.equal(virshMemtuneKiB('1048576', 'hard-limit'), 1048576);
  assert.equal(virshMemtuneKiB('1G', 'hard-limit'), 1048576);
  assert.equal(virshMemtuneKiB('1500M', 'hard-limit'), 1536000);
  assert.equal(virshMemtuneKiB('1025b', 'hard-limit'), 2);
  assert.equal(virshMemtuneKiB(' +5', 'hard-limit'), 5);
  assert.equal(virshMemtuneKiB('-1', 'hard-limit'), null);
  assert.equal(virshMemtuneKiB('-7Q', 'hard-limit'), null, 'negative: unlimited before the unit is looked at');
  assert.throws(() => virshMemtuneKiB('x', 'hard-limit'), (e: unknown) => e instanceof UsageError && e.message === 'Unable to parse integer parameter hard-limit');
  assert.throws(() => virshMemtuneKiB('1Q', 'soft-limit'), { message: "Unable to parse integer parameter soft-limit\nerror: invalid argument: unknown suffix 'Q'" });
  assert.throws(() => virshMemtuneKiB('99999999999999999999', 'soft-limit'), { message: 'Unable to parse integer parameter soft-limit' });
  assert.throws(() => virshMemtuneKiB('9223372036854775807', 'hard-limit'), { message: 'Unable to parse integer parameter hard-limit\nerror: numerical overflow: value too large: 9223372036854775807' });
});

test('numatune --mode as a number: C base 0 (decimal, 0x hex, 0 octal), the whole text', () => {
  assert.deepEqual(['0', '3', '0x2', '010', ' +1', '-1'].map(cIntBase0), [0, 3, 2, 8, 1, -1]);
  assert.deepEqual(['', 'x', '1x', '08', '0x', '2147483648'].map(cIntBase0), [null, null, null, null, null, null]);
});

test('memtune, numatune and domstats layouts are virsh\u2019s', () => {
  assert.equal(formatMemoryParameters([{ field: 'hard_limit', valueKiB: 900000 }, { field: 'soft_limit', valueKiB: null }, { field: 'swap_hard_limit', valueKiB: null }]),
    'hard_limit     : 900000\nsoft_limit     : unlimited\nswap_hard_limit: unlimited\n\n');
  assert.equal(formatNumaParameters({ mode: 1, nodeset: '0' }), 'numa_mode      : preferred\nnuma_nodeset   : 0\n\n');
  assert.equal(formatNumaParameters({ mode: 9, nodeset: '' }), 'numa_mode      : (null)\nnuma_nodeset   : \n\n');
  assert.equal(formatDomainStats([]), '\n');
  assert.equal(formatDomainStats([
    { name: 'a', params: [{ field: 'state.state', value: { type: 'int', value: 1 } }, { field: 'balloon.current', value: { type: 'ullong', value: 262144n } }] },
    { name: 'b', params: [] },
  ]), "Domain: 'a'\n  state.state=1\n  balloon.current=262144\n\nDomain: 'b'\n\n");
  assert.deepEqual([
    typedParamText({ type: 'double', value: 1.5 }), typedParamText({ type: 'boolean', value: true }), typedParamText({ type: 'boolean', value: false }),
    typedParamText({ type: 'llong', value: -3n }), typedParamText({ type: 'string', value: 'page-sampling' }),
  ], ['1.500000', 'yes', 'no', '-3', 'page-sampling']);
});

/** libvirt 9.0's live XML of a guest with a virtio-mem device and a hot-plugged DIMM (recorded with virsh dumpxml). */
const LIVE_XML = `<domain type='qemu' id='76'>
  <devices>
    <memballoon model='virtio'>
      <stats period='1'/>
      <alias name='balloon0'/>
    </memballoon>
    <memory model='virtio-mem'>
      <target>
        <size unit='KiB'>262144</size>
        <node>0</node>
        <block unit='KiB'>2048</block>
        <requested unit='KiB'>65536</requested>
        <current unit='KiB'>65536</current>
      </target>
      <alias name='virtiomem0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </memory>
    <memory model='dimm'>
      <target>
        <size unit='KiB'>131072</size>
        <node>0</node>
      </target>
      <alias name='dimm0'/>
      <address type='dimm' slot='0' base='0x110000000'/>
    </memory>
  </devices>
</domain>
`;

test('update-memory-device picks and rewrites a device as virsh does on libvirt\u2019s XML', () => {
  assert.deepEqual(memoryDeviceTexts(LIVE_XML).map((d) => [d.node, d.alias]), [[0, 'virtiomem0'], [0, 'dimm0']]);
  // virsh printed exactly this (libxml2's node dump: the document's indentation, double quotes).
  assert.equal(updatedMemoryDeviceXml(LIVE_XML, { alias: 'virtiomem0' }, 4096), `<memory model="virtio-mem">
      <target>
        <size unit="KiB">262144</size>
        <node>0</node>
        <block unit="KiB">2048</block>
        <requested unit="KiB">4096</requested>
        <current unit="KiB">65536</current>
      </target>
      <alias name="virtiomem0"/>
      <address type="pci" domain="0x0000" bus="0x00" slot="0x03" function="0x0"/>
    </memory>`);
  assert.match(updatedMemoryDeviceXml(LIVE_XML, { alias: 'dimm0' }, undefined), /^<memory model="dimm">\n {6}<target>[\s\S]*<address type="dimm" slot="0" base="0x110000000"\/>\n {4}<\/memory>$/);
  assert.throws(() => updatedMemoryDeviceXml(LIVE_XML, {}, undefined), { message: 'multiple memory devices found, use --alias or --node to select one' });
  assert.throws(() => updatedMemoryDeviceXml(LIVE_XML, { node: 0 }, undefined), { message: 'multiple memory devices found, use --alias or --node to select one' });
  assert.throws(() => updatedMemoryDeviceXml(LIVE_XML, { node: 1 }, undefined), { message: 'no memory device found' });
  assert.throws(() => updatedMemoryDeviceXml(LIVE_XML, { alias: 'dimm0' }, 2048), { message: 'virtio-mem device is missing <requested/>' });
  assert.throws(() => selectMemoryDevice([], {}, () => ({ node: 0, alias: null })), (e: unknown) => e instanceof VirtError && e.code === 'INVALID_ARG');
  // The native driver writes its own device XML where libvirt's stands: inside <devices>.
  assert.equal(libxmlNodeText(asDeviceInDomain("<memory model='dimm'>\n  <target>\n    <size unit='KiB'>131072</size>\n  </target>\n</memory>\n")),
    '<memory model="dimm">\n      <target>\n        <size unit="KiB">131072</size>\n      </target>\n    </memory>');
});

test('a virtio-mem request: libvirt\u2019s two rules, its words', () => {
  const dev = { sizeKiB: 262144, blockKiB: 2048 };
  checkRequestedSize(dev, 0);
  checkRequestedSize(dev, 262144);
  assert.throws(() => checkRequestedSize(dev, 3072), (e: unknown) => e instanceof VirtError && e.code === 'XML_ERROR' && e.message === 'requested size must be an integer multiple of block size');
  assert.throws(() => checkRequestedSize(dev, 1048576), { message: 'requested size must be smaller than or equal to @size (262144KiB)' });
});

test('domstats: libvirt\u2019s state numbers and its dirtyrate group from QEMU\u2019s answer', () => {
  assert.deepEqual(stateCodes('running', 'booted'), { state: 1, reason: 1 });
  assert.deepEqual(stateCodes('shutoff', 'destroyed'), { state: 5, reason: 2 });
  assert.deepEqual(stateCodes('paused', 'user'), { state: 3, reason: 1 });
  assert.deepEqual(stateCodes('shutoff', 'whatever'), { state: 5, reason: 0 });
  assert.equal(stateOf(6), 'crashed');
  assert.equal(reasonOf(5, 3), 'crashed');
  const text = (p: ReturnType<typeof dirtyRateParams>): string[] => p.map((x) => `${x.field}=${typedParamText(x.value)}`);
  assert.deepEqual(text(dirtyRateParams({ status: 'unstarted', startTimeS: 0, calcTimeS: 0, mode: 'page-sampling' })),
    ['dirtyrate.calc_status=0', 'dirtyrate.calc_start_time=0', 'dirtyrate.calc_period=0', 'dirtyrate.calc_mode=page-sampling']);
  assert.deepEqual(text(dirtyRateParams({ status: 'measured', startTimeS: 7013, calcTimeS: 1, mode: 'page-sampling', dirtyRateMiBps: 3 })).slice(-2),
    ['dirtyrate.calc_mode=page-sampling', 'dirtyrate.megabytes_per_second=3']);
  assert.deepEqual(text(dirtyRateParams({ status: 'measured', startTimeS: 1, calcTimeS: 1, mode: 'dirty-ring', dirtyRateMiBps: 9, vcpuRates: [{ id: 0, dirtyRateMiBps: 4 }, { id: 1, dirtyRateMiBps: 5 }] })).slice(-2),
    ['dirtyrate.vcpu.0.megabytes_per_second=4', 'dirtyrate.vcpu.1.megabytes_per_second=5']);
});

test('KSM\u2019s per-process counters from /proc/PID/ksm_stat (6.1+ layout)', () => {
  assert.deepEqual(parseKsmStat('ksm_rmap_items 120\nksm_zero_pages 3\nksm_merging_pages 1234\nksm_process_profit -4096\nksm_merge_any: no\nksm_mergeable: yes\n'),
    { mergingPages: 1234, zeroPages: 3, profitBytes: -4096 });
  assert.deepEqual(parseKsmStat('ksm_rmap_items 0\nksm_merging_pages 0\n'), { mergingPages: 0, zeroPages: null, profitBytes: null });
  assert.equal(parseKsmStat(''), null);
  assert.deepEqual(parseProcCgroup('4:memory:/machine/qemu-1-a.libvirt-qemu\n3:cpuset,cpu:/x\n0::/user.slice\n'),
    { v1: new Map([['memory', '/machine/qemu-1-a.libvirt-qemu'], ['cpuset', '/x'], ['cpu', '/x']]), v2: '/user.slice' });
});

const def = (extra: Partial<DomainDef>): DomainDef => ({
  schemaVersion: 1, name: 'g', uuid: '6d2b3f0e-0000-4000-8000-000000000001', vcpus: 2,
  memory: { maxKiB: 1048576, currentKiB: 1048576 }, memoryDevices: [], os: {}, disks: [],
  balloon: { model: 'virtio', statsPeriodS: 5, autodeflate: true, freePageReporting: true }, ...extra,
});

test('a definition\u2019s backing: huge page pools per region (cells, DIMMs, plugged virtio-mem), shared, locked, mergeable; placement', () => {
  const plain = def({});
  assert.deepEqual(guestBacking(plain), { hugepages: [], source: 'anonymous', shared: false, locked: false, mergeable: true });
  assert.equal(guestPlacement(plain), null);
  const rich = def({
    memory: { maxKiB: 1048576 + 262144 + 131072, currentKiB: 1048576, hotplug: { ceilingKiB: 4194304, slots: 4 } },
    memoryBacking: { hugepages: [{ sizeKiB: 2048 }, { sizeKiB: 1048576, cells: [1] }], locked: true, nosharepages: true, source: 'memfd' },
    numa: { cells: [{ cpus: [0], memoryKiB: 524288, memAccess: 'shared' }, { cpus: [1], memoryKiB: 524288 }] },
    numatune: { memory: { mode: 'strict', hostNodes: [0, 1] }, memnodes: [{ cell: 1, mode: 'interleave', hostNodes: [1] }] },
    memoryDevices: [
      { model: 'virtio-mem', sizeKiB: 262144, blockKiB: 2048, requestedKiB: 65536, node: 0 },
      { model: 'dimm', sizeKiB: 131072, node: 1, source: { pageSizeKiB: 4 } },
    ],
  });
  assert.deepEqual(guestBacking(rich), {
    // cell 0: 256 pages of 2 MiB; cell 1: one 1 GiB page... of 512 MiB (rounded up); virtio-mem's plugged 64 MiB: 32 pages; the DIMM: base pages.
    hugepages: [{ sizeKiB: 2048, pages: 256 + 32 }, { sizeKiB: 1048576, pages: 1 }], source: 'memfd', shared: true, locked: true, mergeable: false,
  });
  assert.equal(regionHugepageKiB(def({ memoryBacking: { hugepages: [] } }), { cell: null }, 1048576), 1048576, '<hugepages/>: the host\u2019s default size');
  assert.deepEqual(guestPlacement(rich), { mode: 'strict', nodeset: '0-1', memnodes: [{ cell: 1, mode: 'interleave', nodeset: '1' }] });
  const h = definedHostMemory(def({ memtune: { hardLimitKiB: 2097152 } }));
  assert.deepEqual(h.cgroup, { hardLimitKiB: 2097152, softLimitKiB: null, usageKiB: null });
  assert.equal(definedHostMemory(plain).cgroup, null);
});

test('what QEMU\u2019s balloon counts beyond boot RAM: DIMMs and NVDIMMs (aligned), not virtio-mem or virtio-pmem', () => {
  assert.equal(balloonBaseKiB({ memoryDevices: [] }), 0);
  assert.equal(balloonBaseKiB({ memoryDevices: [
    { model: 'dimm', sizeKiB: 131072 }, { model: 'dimm', sizeKiB: 1000 }, { model: 'virtio-mem', sizeKiB: 262144, blockKiB: 2048, requestedKiB: 65536 },
    { model: 'nvdimm', sizeKiB: 262144, path: '/x' }, { model: 'virtio-pmem', sizeKiB: 262144, path: '/y' },
  ] }), 131072 + 2048 + 262144);
});

const TRUTH: GuestHostMemory = {
  backing: { hugepages: [{ sizeKiB: 2048, pages: 256 }], source: 'anonymous', shared: true, locked: false, mergeable: true },
  placement: { mode: 'strict', nodeset: '0', memnodes: [] },
  cgroup: { hardLimitKiB: 1536000, softLimitKiB: null, usageKiB: 300000 },
  ksm: { mergingPages: 1234, mergingKiB: 4936, zeroPages: 0, profitKiB: -12 },
};

test('dominfo\u2019s lines about the memory on the host: only what differs from libvirt\u2019s defaults', () => {
  assert.deepEqual(hostMemoryLines(TRUTH), [
    ['Memory backing', '256 x 2048 KiB huge pages, shared'], ['NUMA placement', 'strict on host nodes 0'],
    ['Memory cgroup', 'usage 300000 KiB, hard limit 1536000 KiB'], ['KSM sharing', '1234 pages (4936 KiB) merged'],
  ]);
  const plain = definedHostMemory(def({}));
  assert.deepEqual(hostMemoryLines({ ...plain, ksm: { mergingPages: 0, mergingKiB: 0, zeroPages: 0, profitKiB: 0 } }), []);
  const info: DomainInfo = {
    id: 1, name: 'g', uuid: 'u', state: 'running', reason: 'booted', persistent: true, osType: 'hvm', vcpus: 1, cpuTimeS: 1, maxMemoryKiB: 1, usedMemoryKiB: 1,
    autostart: false, accel: 'tcg', cpuModel: null, accelNote: null, memory: { bootKiB: 1, balloonKiB: 1, dimmKiB: 0, pluggedKiB: 0, hotplugSizeKiB: 0 }, hostMemory: TRUTH,
  };
  assert.match(formatDominfo(info), /\nSecurity DOI:   0\nMemory backing: 256 x 2048 KiB huge pages, shared\nNUMA placement: strict on host nodes 0\nMemory cgroup:  usage 300000 KiB, hard limit 1536000 KiB\nKSM sharing:    1234 pages \(4936 KiB\) merged\n\n$/);
});

test('the API\u2019s byte form of it goes back to the same record; the dashboard\u2019s lines and /metrics read it', () => {
  const doc = hostMemoryDocument(TRUTH);
  assert.deepEqual(doc.cgroup, { hardLimitBytes: 1536000 * 1024, softLimitBytes: null, usageBytes: 300000 * 1024 });
  assert.deepEqual(hostMemoryFromDocument(JSON.parse(JSON.stringify(doc)) as Record<string, unknown>), TRUTH);
  assert.deepEqual(hostMemoryView(doc), {
    backing: '256 × 2.00 MiB huge pages, shared', placement: 'strict on node 0', cgroup: '293 MiB of 1.46 GiB limit', ksm: '1234 pages merged (4.82 MiB)',
  });
  assert.deepEqual(hostMemoryView(hostMemoryDocument({ ...TRUTH, placement: null, cgroup: null, ksm: null })).ksm, 'not known');
  const view = viewFromDefinition(def({}), { id: 1, state: 'running', pid: 1 }, 0);
  view.hostMemory = TRUTH;
  const text = formatMetrics({ guests: [{ view }], host: { memTotalBytes: null, memAvailableBytes: null, swapTotalBytes: null, swapFreeBytes: null, psi: null, sampledAtS: 0 },
    daemon: { startedAtS: 0, operationsStarted: 0, sseClients: 0, httpRequests: 0 }, nowS: 0 });
  for (const line of ['virtmem_guest_ksm_merging_pages{domain="g"} 1234', `virtmem_guest_ksm_merging_bytes{domain="g"} ${4936 * 1024}`, `virtmem_guest_hugepages_bytes{domain="g"} ${256 * 2048 * 1024}`,
    `virtmem_guest_cgroup_memory_limit_bytes{domain="g"} ${1536000 * 1024}`, 'virtmem_guest_memory_shared{domain="g"} 1', 'virtmem_guest_numa_placement_info{domain="g",mode="strict",nodeset="0"} 1',
    `virtmem_guest_hugepages{domain="g",page_size_bytes="${2048 * 1024}"} 256`, 'virtmem_guest_ksm_profit_bytes{domain="g"} -12288']) {
    assert.ok(text.split('\n').includes(line), line);
  }
  assert.doesNotMatch(text, /virtmem_guest_cgroup_memory_soft_limit_bytes\{/, 'an unlimited limit is absent, not 0');
});
