/**
 * The memory model of a definition (memoryBacking, guest NUMA, numatune, memtune, memory device
 * sources and addresses, block disks, cdroms, vcpu current, i686): libvirt's readings of the XML
 * and libvirt's define-time checks, each refusal naming the field or the element.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { DomainDef } from '../../src/domain/definition.js';
import { formatIdSet, parseIdSet } from '../../src/domain/node-set.js';
import { DefValidationError, defaultBalloon, validateDomainDef } from '../../src/domain/validate-def.js';
import { formatDomainXml, parseDomainXml } from '../../src/domain/xml.js';
import { assertVirtError } from '../helpers/virt-error.js';

const MiB = 1024;
const GiB = 1024 * MiB;

function doc({ top = '', devices = '', memory = "<memory unit='MiB'>1024</memory>", vcpu = '<vcpu>2</vcpu>', cpu = '' } = {}): string {
  return `<domain type='qemu'>
  <name>m</name>
  ${memory}
  ${vcpu}
  ${top}
  <os><type arch='x86_64'>hvm</type><kernel>/boot/vmlinuz</kernel></os>
  ${cpu}
  <devices>${devices}</devices>
</domain>`;
}

const TWO_CELLS = "<cpu><numa><cell id='0' cpus='0' memory='512' unit='MiB'/><cell id='1' cpus='1' memory='512' unit='MiB'/></numa></cpu>";
const HOTPLUG = "<maxMemory slots='4' unit='GiB'>8</maxMemory><memory unit='GiB'>2</memory>";

describe('node and CPU lists (libvirt bitmaps)', () => {
  it('reads ranges, exclusions and repeats, and prints the canonical form', () => {
    assert.deepEqual(parseIdSet('0-3,^2,8'), [0, 1, 3, 8]);
    assert.deepEqual(parseIdSet(' 3 , 1,1 '), [1, 3]);
    assert.equal(formatIdSet([0, 1, 2, 5, 7, 8]), '0-2,5,7-8');
    assert.equal(formatIdSet(parseIdSet('1-27,29')!), '1-27,29');
  });
  it('refuses what is not a bitmap', () => {
    for (const bad of ['', 'all', '3-1', '1,,2', '-1', '70000']) assert.equal(parseIdSet(bad), null, bad);
  });
});

describe('parseDomainXml: the memory model as libvirt reads it', () => {
  it('numbers cells without an id by position and orders cells by id', () => {
    const cpu = "<cpu><numa><cell id='1' cpus='1' memory='256' unit='MiB'/><cell id='0' cpus='0' memory='768' unit='MiB'/></numa></cpu>";
    assert.deepEqual(parseDomainXml(doc({ cpu })).def.numa, { cells: [{ cpus: [0], memoryKiB: 768 * MiB }, { cpus: [1], memoryKiB: 256 * MiB }] });
    const noIds = "<cpu><numa><cell cpus='0' memory='256' unit='MiB'/><cell cpus='1' memory='768' unit='MiB'/></numa></cpu>";
    assert.deepEqual(parseDomainXml(doc({ cpu: noIds })).def.numa?.cells.map((c) => c.memoryKiB), [256 * MiB, 768 * MiB]);
  });
  it('takes <memory> as the cells plus memory devices, as libvirt recomputes it', () => {
    const cpu = "<cpu><numa><cell id='0' cpus='0-1' memory='1' unit='GiB'/></numa></cpu>";
    const { def } = parseDomainXml(doc({ memory: HOTPLUG, cpu, devices: "<memory model='dimm'><target><size unit='KiB'>524287</size><node>0</node></target></memory>" }));
    assert.equal(def.memory.maxKiB, GiB + 524287);
    assert.equal(def.numa, undefined, 'one cell holding every vCPU and all boot RAM is what no cells means with hot-plug');
  });
  it('keeps a single cell that something names (a memnode, a huge page size)', () => {
    const cpu = "<cpu><numa><cell id='0' cpus='0-1' memory='2' unit='GiB'/></numa></cpu>";
    const top = "<numatune><memnode cellid='0' mode='preferred' nodeset='0'/></numatune>";
    assert.equal(parseDomainXml(doc({ memory: HOTPLUG, cpu, top })).def.numa?.cells.length, 1);
  });
  it('reads every <memoryBacking> setting', () => {
    const top = `<memoryBacking><hugepages><page size='1' unit='G' nodeset='0'/><page size='2048'/></hugepages><nosharepages/><locked/>
      <source type='memfd'/><access mode='shared'/><allocation mode='immediate' threads='4'/><discard/></memoryBacking>`;
    assert.deepEqual(parseDomainXml(doc({ top, cpu: TWO_CELLS })).def.memoryBacking, {
      hugepages: [{ sizeKiB: GiB, cells: [0] }, { sizeKiB: 2 * MiB }],
      nosharepages: true, locked: true, source: 'memfd', access: 'shared', allocation: { mode: 'immediate', threads: 4 }, discard: true,
    });
    assert.deepEqual(parseDomainXml(doc({ top: '<memoryBacking><hugepages/></memoryBacking>' })).def.memoryBacking, { hugepages: [] });
  });
  it('reads numatune with libvirt\u2019s default mode (strict)', () => {
    const top = "<numatune><memory nodeset='0-1,^1'/><memnode cellid='1' nodeset='0'/></numatune>";
    assert.deepEqual(parseDomainXml(doc({ top, cpu: TWO_CELLS })).def.numatune, {
      memory: { mode: 'strict', hostNodes: [0] }, memnodes: [{ cell: 1, mode: 'strict', hostNodes: [0] }],
    });
  });
  it('reads memtune in any unit, and drops libvirt\u2019s "unlimited"', () => {
    const top = "<memtune><hard_limit unit='G'>2</hard_limit><soft_limit>0</soft_limit><swap_hard_limit unit='KiB'>9007199254740991</swap_hard_limit><min_guarantee unit='M'>64</min_guarantee></memtune>";
    assert.deepEqual(parseDomainXml(doc({ top })).def.memtune, { hardLimitKiB: 2 * GiB, softLimitKiB: 0, minGuaranteeKiB: 64 * MiB });
    assert.equal(parseDomainXml(doc({ top: '<memtune><hard_limit>9007199254740991</hard_limit></memtune>' })).def.memtune, undefined);
  });
  it('keeps DIMM sizes libvirt keeps (unaligned), and DIMM slots and base addresses', () => {
    const devices = "<memory model='dimm' discard='no'><target><size unit='KiB'>524287</size><node>0</node></target><address type='dimm' slot='1' base='0x100000000'/></memory>";
    assert.deepEqual(parseDomainXml(doc({ memory: HOTPLUG, devices })).def.memoryDevices, [
      { model: 'dimm', sizeKiB: 524287, discard: false, address: { slot: 1, baseAddress: 0x100000000 } },
    ]);
  });
  it('reads vcpu current, i686 guests, block disks and cdroms (always read-only)', () => {
    const devices = "<disk type='block' device='disk'><source dev='/dev/sdz'/><target dev='vdb' bus='virtio'/></disk><disk type='file' device='cdrom'><source file='/i.iso'/><target dev='hdc' bus='ide'/></disk>";
    const { def } = parseDomainXml(doc({ vcpu: "<vcpu current='1'>2</vcpu>", devices }).replace("arch='x86_64'", "arch='i686'"));
    assert.equal(def.currentVcpus, 1);
    assert.equal(def.os.arch, 'i686');
    assert.deepEqual(def.disks, [
      { path: '/dev/sdz', type: 'block', format: 'raw', target: 'vdb', bus: 'virtio', readonly: false },
      { path: '/i.iso', device: 'cdrom', format: 'raw', target: 'hdc', bus: 'ide', readonly: true },
    ]);
    assert.match(formatDomainXml(def), /<disk type='block' device='disk'>\n\s*<driver name='qemu' type='raw'\/>\n\s*<source dev='\/dev\/sdz'\/>/);
  });
  it('writes the elements in libvirt\u2019s order', () => {
    const top = "<memtune><hard_limit unit='G'>2</hard_limit></memtune><memoryBacking><locked/></memoryBacking><numatune><memory mode='interleave' nodeset='0'/></numatune>";
    const xml = formatDomainXml(parseDomainXml(doc({ top })).def);
    const order = ['<memory ', '<memtune>', '<memoryBacking>', '<vcpu ', '<numatune>', '<os>'].map((t) => xml.indexOf(t));
    assert.deepEqual([...order].sort((a, b) => a - b), order, xml);
  });
});

describe('parseDomainXml: libvirt\u2019s define-time refusals (XML_ERROR, naming the element)', () => {
  const cases: Array<[string, Parameters<typeof doc>[0], string]> = [
    ['a page size for a cell that does not exist', { top: "<memoryBacking><hugepages><page size='2048' nodeset='2'/></hugepages></memoryBacking>", cpu: TWO_CELLS }, 'hugepages: node 2 not found'],
    ['a page size for a cell without guest NUMA', { top: "<memoryBacking><hugepages><page size='2048' nodeset='0'/></hugepages></memoryBacking>" }, 'hugepages: node 0 not found'],
    ['two master page sizes', { top: "<memoryBacking><hugepages><page size='2048'/><page size='1048576'/></hugepages></memoryBacking>" }, 'two master hugepages detected: 2048 and 1048576'],
    ['a memnode without guest NUMA', { top: "<numatune><memnode cellid='0' mode='strict' nodeset='0'/></numatune>" }, "Element 'memnode' is invalid without any guest NUMA cells"],
    ['a memnode for a missing cell', { top: "<numatune><memnode cellid='2' mode='strict' nodeset='0'/></numatune>", cpu: TWO_CELLS }, '<numatune/memnode #1 cell>'],
    ['restrictive mixed with strict', { top: "<numatune><memory mode='restrictive' nodeset='0'/><memnode cellid='0' mode='strict' nodeset='0'/></numatune>", cpu: TWO_CELLS }, "'restrictive' mode is required in memnode element"],
    ['a static nodeset missing', { top: "<numatune><memory mode='strict'/></numatune>" }, "nodeset for NUMA memory tuning must be set if 'placement' is 'static'"],
    ['swap_hard_limit below hard_limit', { top: "<memtune><hard_limit unit='G'>2</hard_limit><swap_hard_limit unit='G'>1</swap_hard_limit></memtune>" }, 'must be lower than or equal to swap_hard_limit'],
    ['overlapping cell vCPUs', { cpu: "<cpu><numa><cell id='0' cpus='0-1' memory='512' unit='MiB'/><cell id='1' cpus='1' memory='512' unit='MiB'/></numa></cpu>" }, 'overlapping vCPU ids'],
    ['a cell vCPU beyond the vCPUs', { cpu: "<cpu><numa><cell id='0' cpus='0-2' memory='1' unit='GiB'/></numa></cpu>" }, '<cpu/numa/cell #1 cpus>'],
    ['a gap in the cell ids', { cpu: "<cpu><numa><cell id='0' cpus='0' memory='512' unit='MiB'/><cell id='2' cpus='1' memory='512' unit='MiB'/></numa></cpu>" }, 'cell ids must be 0 to 1'],
    ['a distance to itself other than 10', { cpu: "<cpu><numa><cell id='0' cpus='0-1' memory='1' unit='GiB'><distances><sibling id='0' value='20'/></distances></cell></numa></cpu>" }, 'the distance of a cell to itself is 10'],
    ['a memory device on a missing node', { memory: HOTPLUG, devices: "<memory model='dimm'><target><size unit='MiB'>128</size><node>1</node></target></memory>" }, "can't add memory backend for guest node '1'"],
    ['two DIMMs in one slot', { memory: HOTPLUG, devices: "<memory model='dimm'><target><size unit='MiB'>128</size></target><address type='dimm' slot='1'/></memory><memory model='dimm'><target><size unit='MiB'>128</size></target><address type='dimm' slot='1'/></memory>" }, "memory device slot '1' is already being used"],
    ['a DIMM slot beyond the slots', { memory: HOTPLUG, devices: "<memory model='dimm'><target><size unit='MiB'>128</size></target><address type='dimm' slot='4'/></memory>" }, "memory device slot '4' exceeds slots count '4'"],
    ['an NVDIMM label below 128 KiB', { memory: HOTPLUG, devices: "<memory model='nvdimm'><source><path>/tmp/n</path></source><target><size unit='MiB'>128</size><label><size unit='KiB'>64</size></label></target></memory>" }, '<devices/memory #1 target/label/size>'],
    ['an NVDIMM without a path', { memory: HOTPLUG, devices: "<memory model='nvdimm'><target><size unit='MiB'>128</size></target></memory>" }, 'needs <source><path>'],
    ['vcpu current above the count', { vcpu: "<vcpu current='3'>2</vcpu>" }, "<vcpu current='3'>"],
    ['a cdrom on virtio', { devices: "<disk type='file' device='cdrom'><source file='/i.iso'/><target dev='vdc' bus='virtio'/></disk>" }, "<devices/disk #1 target bus='...'>"],
  ];
  for (const [what, parts, names] of cases) {
    it(what, () => assertVirtError(() => parseDomainXml(doc(parts)), 'XML_ERROR', names));
  }
});

function base(): DomainDef {
  return {
    schemaVersion: 1, name: 'v', uuid: '0b5c5a0e-6a0f-4d7b-8e7e-2f1f4c3b2a19', vcpus: 2,
    memory: { maxKiB: GiB, currentKiB: GiB }, memoryDevices: [], os: {}, disks: [], balloon: defaultBalloon(),
  };
}

describe('validateDomainDef: the memory model', () => {
  it('definitions written before the memory model still load unchanged', () => {
    assert.deepEqual(validateDomainDef(base()), base());
  });
  it("keeps automatic host placement as 'auto' (the nodes are chosen at start)", () => {
    const def: DomainDef = { ...base(), numatune: { memory: { mode: 'preferred', placement: 'auto' } } };
    assert.deepEqual(validateDomainDef(JSON.parse(JSON.stringify(def))), def);
  });
  it('drops defaults so one meaning has one spelling (false flags, node 0, all vCPUs current, empty sections)', () => {
    const def = {
      ...base(), currentVcpus: 2, memoryBacking: { locked: false }, memtune: {}, numatune: { memnodes: [] },
      memory: { maxKiB: GiB + 128 * MiB, currentKiB: GiB, hotplug: { ceilingKiB: 4 * GiB, slots: 2 } },
      memoryDevices: [{ model: 'dimm', sizeKiB: 128 * MiB, node: 0, source: {}, address: {} }],
      disks: [{ path: '/i', type: 'file', device: 'disk', format: 'raw', target: 'vda', bus: 'virtio', readonly: false }],
    };
    assert.deepEqual(validateDomainDef(def), {
      ...base(), memory: def.memory, memoryDevices: [{ model: 'dimm', sizeKiB: 128 * MiB }],
      disks: [{ path: '/i', format: 'raw', target: 'vda', bus: 'virtio', readonly: false }],
    });
  });
  const rejected: Array<[string, (d: DomainDef) => void, string]> = [
    ['cells that do not add up to boot RAM', (d) => { d.numa = { cells: [{ cpus: [0, 1], memoryKiB: 512 * MiB }] }; }, 'numa.cells'],
    ['an unknown backing source', (d) => { (d as { memoryBacking: unknown }).memoryBacking = { source: 'ramdisk' }; }, 'memoryBacking.source'],
    ['zero preallocation threads', (d) => { d.memoryBacking = { allocation: { threads: 0 } }; }, 'memoryBacking.allocation.threads'],
    ['a huge page smaller than a page', (d) => { d.memoryBacking = { hugepages: [{ sizeKiB: 2 }] }; }, 'memoryBacking.hugepages[0].sizeKiB'],
    ['host nodes not ascending', (d) => { d.numatune = { memory: { mode: 'strict', hostNodes: [1, 0] } }; }, 'numatune.memory.hostNodes'],
    ['an unknown NUMA mode', (d) => { (d as { numatune: unknown }).numatune = { memory: { mode: 'bind', hostNodes: [0] } }; }, 'numatune.memory.mode'],
    ['automatic placement with host nodes', (d) => { (d as { numatune: unknown }).numatune = { memory: { mode: 'strict', placement: 'auto', hostNodes: [0] } }; }, 'numatune.memory.hostNodes'],
    ['a placement other than auto', (d) => { (d as { numatune: unknown }).numatune = { memory: { mode: 'strict', placement: 'static' } }; }, 'numatune.memory.placement'],
    ['static placement without host nodes', (d) => { (d as { numatune: unknown }).numatune = { memory: { mode: 'strict' } }; }, 'numatune.memory.hostNodes'],
    ['per-node binding with automatic placement', (d) => {
      d.numa = { cells: [{ cpus: [0], memoryKiB: GiB / 2 }, { cpus: [1], memoryKiB: GiB / 2 }] };
      d.numatune = { memory: { mode: 'strict', placement: 'auto' }, memnodes: [{ cell: 0, mode: 'strict', hostNodes: [0] }] };
    }, 'numatune.memnodes'],
    ['a negative limit', (d) => { d.memtune = { hardLimitKiB: -1 }; }, 'memtune.hardLimitKiB'],
    ['current vCPUs above vCPUs', (d) => { d.currentVcpus = 3; }, 'currentVcpus'],
    ['a writable cdrom', (d) => { d.disks = [{ path: '/i.iso', device: 'cdrom', format: 'raw', target: 'hdc', bus: 'ide', readonly: false }]; }, 'disks[0].readonly'],
    ['an unknown arch', (d) => { (d.os as { arch: string }).arch = 'aarch64'; }, 'os.arch'],
  ];
  for (const [what, change, path] of rejected) {
    it(`rejects ${what} (${path})`, () => {
      const def = base();
      change(def);
      assert.throws(() => validateDomainDef(def), (err: unknown) => err instanceof DefValidationError && err.path === path || assert.fail(String(err)));
    });
  }
});
