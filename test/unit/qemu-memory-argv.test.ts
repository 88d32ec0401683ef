/**
 * virtmem's QEMU command line gives QEMU the same memory as libvirt's for the same XML: every
 * recorded `virsh domxml-to-native` of test/fixtures/memory-argv, and libvirt 9.0's own
 * test-suite command lines for what this machine cannot produce (huge pages, several host nodes),
 * written out here by hand. Plus the memory plan's own rules: sizes aligned as libvirt aligns
 * them, the start-time refusals, and which huge page mounts a plan needs.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import type { DomainDef } from '../../src/domain/definition.js';
import { VirtError } from '../../src/domain/errors.js';
import { defaultBalloon } from '../../src/domain/validate-def.js';
import { parseDomainXml } from '../../src/domain/xml.js';
import { StatePaths } from '../../src/driver/native/paths.js';
import { buildQemuArgv } from '../../src/driver/native/qemu-argv.js';
import { allBackends, hugetlbfsSizesNeeded, planMemoryLayout } from '../../src/driver/native/qemu-memory.js';
import { memoryArgv, shellWords, testSuitePageSize, type MemoryArgv } from '../../bench/lib/memory-argv.js';

const FIXTURES = new URL('../../../test/fixtures/memory-argv/', import.meta.url);
const RUN = new StatePaths('/var/lib/virtmem').run('m');
const MOUNTS = new Map([[2048, '/dev/hugepages2M'], [1048576, '/dev/hugepages1G']]);
const MiB = 1024;
const GiB = 1024 * MiB;

function virtmemArgv(def: DomainDef): string[] {
  const plan = planMemoryLayout(def, { defaultHugepageKiB: 2048 });
  return buildQemuArgv({ def, paths: RUN, accel: 'tcg', kernel: '/k', memory: { plan, backing: { hugetlbfs: MOUNTS, memoryDir: RUN.memoryDir } } });
}

function virtmemMemory(def: DomainDef): MemoryArgv {
  return memoryArgv(virtmemArgv(def), { pageSizeOfPath: testSuitePageSize, isMemoryDir: (p) => p === RUN.memoryDir });
}

function libvirtMemory(text: string): MemoryArgv {
  return memoryArgv(shellWords(text), { pageSizeOfPath: testSuitePageSize, isMemoryDir: (p) => p.includes('/qemu/ram/') });
}

describe("the memory part of virtmem's command line equals libvirt's (virsh domxml-to-native, QEMU 7.2)", () => {
  const keys = readdirSync(FIXTURES).filter((f) => f.endsWith('.argv')).map((f) => f.slice(0, -'.argv'.length)).sort();
  it('has the recorded probes', () => assert.ok(keys.length >= 40, `${keys.length} probes`));
  for (const key of keys) {
    it(key, () => {
      const { def } = parseDomainXml(readFileSync(new URL(`${key}.xml`, FIXTURES), 'utf8'));
      assert.deepEqual(virtmemMemory(def), libvirtMemory(readFileSync(new URL(`${key}.argv`, FIXTURES), 'utf8')));
    });
  }
});

function domain(parts: { top?: string; cpu?: string; devices?: string; memory?: string; vcpus?: number }): DomainDef {
  return parseDomainXml(`<domain type='qemu'><name>m</name>${parts.memory ?? "<memory unit='GiB'>4</memory>"}
    <vcpu>${parts.vcpus ?? 4}</vcpu>${parts.top ?? ''}<os><type arch='x86_64' machine='pc'>hvm</type></os>
    <cpu mode='custom' match='exact'><model>qemu64</model>${parts.cpu ?? ''}</cpu>
    <devices><memballoon model='none'/>${parts.devices ?? ''}</devices></domain>`).def;
}
const FOUR_CELLS = `<numa>${[0, 1, 2, 3].map((i) => `<cell id='${i}' cpus='${i}' memory='1' unit='GiB'/>`).join('')}</numa>`;

describe("huge pages as libvirt 9.0's test suite has them (its fake mounts /dev/hugepages2M and 1G)", () => {
  it('hugepages-default: all RAM on the default huge page size, preallocated', () => {
    const m = virtmemMemory(domain({ top: '<memoryBacking><hugepages/></memoryBacking>', memory: "<memory unit='KiB'>219136</memory>", vcpus: 1 }));
    assert.deepEqual(m.backends, [{ 'qom-type': 'memory-backend-file', id: 'pc.ram', 'mem-path': 'hugetlbfs:2048', prealloc: true, size: 224395264 }]);
    assert.deepEqual(m.machine, ['memory-backend=pc.ram']);
  });
  it('hugepages-numa-nodeset: a page size per cell (1 GiB for 0,2-3, 2 MiB for 1)', () => {
    const def = domain({ top: "<memoryBacking><hugepages><page size='2048' unit='KiB' nodeset='1'/><page size='1048576' unit='KiB' nodeset='0,2-3'/></hugepages></memoryBacking>", cpu: FOUR_CELLS });
    const file = (page: number) => ({ 'qom-type': 'memory-backend-file', 'mem-path': `hugetlbfs:${page}`, prealloc: true, size: GiB * 1024 });
    assert.deepEqual(virtmemMemory(def).backends, [
      { ...file(1048576), id: 'ram-node0' }, { ...file(2048), id: 'ram-node1' }, { ...file(1048576), id: 'ram-node2' }, { ...file(1048576), id: 'ram-node3' },
    ].map(({ id, ...rest }) => ({ 'qom-type': rest['qom-type'], id, 'mem-path': rest['mem-path'], prealloc: true, size: rest.size })));
    assert.deepEqual(hugetlbfsSizesNeeded(planMemoryLayout(def, { defaultHugepageKiB: 2048 })), [2048, 1048576]);
  });
  it('hugepages-numa-nodeset-part: a cell no page names gets ordinary RAM', () => {
    const def = domain({ top: "<memoryBacking><hugepages><page size='1048576' unit='KiB' nodeset='1'/></hugepages></memoryBacking>", vcpus: 2,
      memory: "<memory unit='GiB'>2</memory>", cpu: "<numa><cell id='0' cpus='0' memory='1' unit='GiB'/><cell id='1' cpus='1' memory='1' unit='GiB'/></numa>" });
    assert.deepEqual(virtmemMemory(def).backends.map((b) => [b['qom-type'], b['mem-path'] ?? null]), [['memory-backend-ram', null], ['memory-backend-file', 'hugetlbfs:1048576']]);
  });
  it('memfd-memory-numa: memfd with hugetlb, shared, preallocated by 8 threads, preferred host node 3', () => {
    const def = domain({
      top: `<memoryBacking><hugepages><page size='2' unit='M'/></hugepages><source type='memfd'/><access mode='shared'/><allocation mode='immediate' threads='8'/></memoryBacking>
        <numatune><memnode cellid='0' mode='preferred' nodeset='3'/></numatune>`,
      memory: "<memory unit='KiB'>14680064</memory>", vcpus: 8, cpu: "<numa><cell id='0' cpus='0-7' memory='14680064' unit='KiB'/></numa>",
    });
    assert.deepEqual(virtmemMemory(def).backends, [{
      'qom-type': 'memory-backend-memfd', id: 'ram-node0', hugetlb: true, hugetlbsize: 2097152, share: true, prealloc: true, 'prealloc-threads': 8,
      size: 15032385536, 'host-nodes': [3], policy: 'preferred',
    }]);
    assert.deepEqual(hugetlbfsSizesNeeded(planMemoryLayout(def, { defaultHugepageKiB: 2048 })), [], 'memfd needs no mount');
  });
  it('memory-hotplug-virtio-mem: a huge page virtio-mem is not reserved, and preallocates through the device', () => {
    const def = domain({
      memory: "<maxMemory slots='16' unit='GiB'>16</maxMemory><memory unit='GiB'>4</memory>", vcpus: 2,
      cpu: "<numa><cell id='0' cpus='0-1' memory='2' unit='GiB'/></numa>",
      devices: "<memory model='virtio-mem'><source><nodemask>0</nodemask><pagesize unit='KiB'>2048</pagesize></source><target><size unit='GiB'>2</size><node>0</node><block unit='KiB'>2048</block><requested unit='GiB'>1</requested></target></memory>",
    });
    const m = virtmemMemory(def);
    assert.deepEqual(m.backends[1], { 'qom-type': 'memory-backend-file', id: 'device0', 'mem-path': 'hugetlbfs:2048', reserve: false, size: 2 * GiB * 1024, 'host-nodes': [0], policy: 'bind' });
    assert.deepEqual(m.devices, [{ driver: 'virtio-mem-pci', node: 0, 'block-size': 2097152, 'requested-size': GiB * 1024, prealloc: true }]);
  });
});

describe('the memory plan', () => {
  const base = (): DomainDef => ({
    schemaVersion: 1, name: 'p', uuid: '0b5c5a0e-6a0f-4d7b-8e7e-2f1f4c3b2a19', vcpus: 2,
    memory: { maxKiB: GiB, currentKiB: GiB }, memoryDevices: [], os: {}, disks: [], balloon: defaultBalloon(),
  });
  it('aligns as libvirt does at start: cells and boot RAM to 1 MiB, devices to 2 MiB, the ceiling to 1 MiB', () => {
    const def: DomainDef = {
      ...base(),
      memory: { maxKiB: 20002 + 20002 + 524287, currentKiB: 20002 + 20002 + 524287, hotplug: { ceilingKiB: 4 * GiB + 1, slots: 2 } },
      numa: { cells: [{ cpus: [0], memoryKiB: 20002 }, { cpus: [1], memoryKiB: 20002 }] },
      memoryDevices: [{ model: 'dimm', sizeKiB: 524287 }],
    };
    const plan = planMemoryLayout(def, { defaultHugepageKiB: 2048 });
    assert.equal(plan.mOption, `size=${2 * 20480}k,slots=2,maxmem=${4 * GiB + 1024}k`);
    assert.deepEqual(allBackends(plan).map((b) => b.sizeKiB), [20480, 20480, 524288]);
  });
  it('keeps QEMU\u2019s own RAM for a plain guest (no backend, no machine option), as before', () => {
    const argv = virtmemArgv(base());
    assert.ok(!argv.includes('-object'));
    assert.deepEqual(argv.filter((_, i) => argv[i - 1] === '-machine'), ['pc,accel=tcg']);
  });
  it('refuses guest NUMA without a cell holding vCPUs, and sizes that overflow when aligned (libvirt\u2019s words)', () => {
    const noCpus: DomainDef = { ...base(), numa: { cells: [{ cpus: [], memoryKiB: GiB }] } };
    assert.throws(() => planMemoryLayout(noCpus, { defaultHugepageKiB: 2048 }), (e: unknown) => e instanceof VirtError && /At least one NUMA node has to have CPUs/.test(e.message));
    const huge: DomainDef = { ...base(), memory: { maxKiB: 9007199254740991, currentKiB: GiB } };
    assert.throws(() => planMemoryLayout(huge, { defaultHugepageKiB: 2048 }), (e: unknown) => e instanceof VirtError && e.code === 'CONFIG_UNSUPPORTED' && /overflowed after alignment/.test(e.message));
  });
  it('4 KiB "huge" pages are base pages; restrictive placement leaves the backend alone', () => {
    const plan = planMemoryLayout({ ...base(), memoryBacking: { hugepages: [{ sizeKiB: 4 }] }, numatune: { memory: { mode: 'restrictive', hostNodes: [0] } } }, { defaultHugepageKiB: 2048 });
    assert.equal(plan.ram[0]!.hugepageKiB, null);
    assert.equal(plan.ram[0]!.plain, true);
    assert.deepEqual(plan.ram[0]!.placement, { mode: 'restrictive', hostNodes: [0] });
  });
  it('vCPUs current and maximum; block disks through host_device; cdroms as ide-cd', () => {
    const argv = virtmemArgv({
      ...base(), vcpus: 4, currentVcpus: 1,
      disks: [
        { path: '/dev/loop3', type: 'block', format: 'raw', target: 'vdb', bus: 'virtio', readonly: false },
        { path: '/i.iso', device: 'cdrom', format: 'raw', target: 'hdc', bus: 'ide', readonly: true },
      ],
    });
    assert.deepEqual(argv.filter((_, i) => argv[i - 1] === '-smp'), ['1,maxcpus=4']);
    assert.ok(argv.includes('driver=host_device,node-name=file0,filename=/dev/loop3,read-only=off'));
    assert.ok(argv.includes('ide-cd,drive=drive-hdc,id=hdc'));
  });
});
