import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { formatDomainXml, parseDomainXml } from '../../src/domain/xml.js';
import {
  FactError, canonicalBitmap, describeDifference, diffMemoryFacts, extractMemoryFacts, toKiB,
} from '../../bench/lib/memory-facts.js';

// Tests run from dist/test/unit; fixtures stay in the source tree.
const FIXTURES = new URL('../../../test/fixtures/xml/', import.meta.url);
const fixture = (name: string): string => readFileSync(new URL(name, FIXTURES), 'utf8');

/** A domain with `top` at the top level, `cpu` inside <cpu> and `devices` inside <devices>. */
function doc({ memory = "<memory unit='KiB'>1048576</memory>", top = '', cpu = '', devices = '' } = {}): string {
  return `<domain type='qemu'>
  <name>facts</name>
  ${memory}
  ${top}
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  ${cpu === '' ? '' : `<cpu mode='custom'><model>qemu64</model>${cpu}</cpu>`}
  <devices>${devices}</devices>
</domain>`;
}

describe('memory facts: sizes and defaults', () => {
  it('reads every unit as KiB, rounding bytes up as libvirt does', () => {
    const a = extractMemoryFacts(doc({ memory: "<memory unit='GiB'>1</memory><currentMemory unit='MiB'>512</currentMemory>" }));
    const b = extractMemoryFacts(doc({ memory: '<memory>1048576</memory><currentMemory unit="b">536870912</currentMemory>' }));
    assert.deepEqual(a, b);
    assert.equal(a['memory'], '1048576');
    assert.equal(a['currentMemory'], '524288');
    assert.equal(toKiB('1000', 'b', 'x'), '1');
    assert.equal(toKiB('1', 'GB', 'x'), '976563');
  });

  it('treats an absent or zero <currentMemory> as equal to <memory>', () => {
    assert.equal(extractMemoryFacts(doc())['currentMemory'], '1048576');
    assert.equal(extractMemoryFacts(doc({ memory: "<memory>1048576</memory><currentMemory>0</currentMemory>" }))['currentMemory'], '1048576');
  });

  it('keeps maxMemory, its slots and memory dumpCore', () => {
    const f = extractMemoryFacts(doc({ memory: "<maxMemory slots='16' unit='GiB'>8</maxMemory><memory dumpCore='off' unit='GiB'>2</memory>" }));
    assert.equal(f['maxMemory'], String(8 * 1024 * 1024));
    assert.equal(f['maxMemory.slots'], '16');
    assert.equal(f['memory.dumpCore'], 'off');
  });

  it('gives a virtio balloon its libvirt defaults and a model=none balloon only its model', () => {
    const plain = extractMemoryFacts(doc({ devices: "<memballoon model='virtio'><stats period='0'/><address type='pci' slot='0x05'/></memballoon>" }));
    assert.equal(plain['memballoon.model'], 'virtio');
    assert.equal(plain['memballoon.autodeflate'], 'off');
    assert.equal(plain['memballoon.freePageReporting'], 'off');
    assert.equal(plain['memballoon.stats.period'], undefined);
    const set = extractMemoryFacts(doc({ devices: "<memballoon model='virtio' autodeflate='on' freePageReporting='on'><stats period='10'/><driver iommu='on'/></memballoon>" }));
    assert.equal(set['memballoon.autodeflate'], 'on');
    assert.equal(set['memballoon.freePageReporting'], 'on');
    assert.equal(set['memballoon.stats.period'], '10');
    assert.ok(!Object.keys(set).some((k) => k.includes('driver')), 'balloon driver options are not memory facts');
    const none = extractMemoryFacts(doc({ devices: "<memballoon model='none'/>" }));
    assert.deepEqual(Object.keys(none).filter((k) => k.startsWith('memballoon')), ['memballoon.model']);
  });

  it('refuses values libvirt would refuse rather than comparing them as equal', () => {
    assert.throws(() => extractMemoryFacts(doc({ memory: "<memory unit='parsecs'>1</memory>" })), FactError);
    assert.throws(() => extractMemoryFacts(doc({ memory: '<memory>-1</memory>' })), FactError);
    assert.throws(() => extractMemoryFacts('<network/>'), FactError);
  });
});

describe('memory facts: memoryBacking, numatune, memtune', () => {
  it('records every memoryBacking child and attribute, pages by position with canonical nodesets', () => {
    const f = extractMemoryFacts(doc({
      top: `<memoryBacking>
        <hugepages><page size='2' unit='M' nodeset='1'/><page size='1048576' nodeset='0,2,3'/></hugepages>
        <nosharepages/><locked/><source type='memfd'/><access mode='shared'/>
        <allocation mode='immediate' threads='8'/><discard/>
      </memoryBacking>`,
    }));
    assert.deepEqual(Object.fromEntries(Object.entries(f).filter(([k]) => k.startsWith('memoryBacking'))), {
      'memoryBacking.hugepages.page[0].size': '2048',
      'memoryBacking.hugepages.page[0].nodeset': '1',
      'memoryBacking.hugepages.page[1].size': '1048576',
      'memoryBacking.hugepages.page[1].nodeset': '0,2-3',
      'memoryBacking.nosharepages': 'yes',
      'memoryBacking.locked': 'yes',
      'memoryBacking.source.type': 'memfd',
      'memoryBacking.access.mode': 'shared',
      'memoryBacking.allocation.mode': 'immediate',
      'memoryBacking.allocation.threads': '8',
      'memoryBacking.discard': 'yes',
    });
  });

  it('records bare <hugepages/> but nothing for an empty <memoryBacking/>', () => {
    assert.equal(extractMemoryFacts(doc({ top: '<memoryBacking><hugepages/></memoryBacking>' }))['memoryBacking.hugepages'], 'yes');
    const empty = extractMemoryFacts(doc({ top: '<memoryBacking/>' }));
    assert.ok(!Object.keys(empty).some((k) => k.startsWith('memoryBacking')), JSON.stringify(empty));
  });

  it('records numatune memory and memnodes keyed by cellid', () => {
    const f = extractMemoryFacts(doc({
      top: "<numatune><memory mode='strict' nodeset='0-1,^1,3'/><memnode cellid='2' mode='preferred' nodeset='3'/><memnode cellid='0' mode='interleave' nodeset='0,1'/></numatune>",
    }));
    assert.equal(f['numatune.memory.mode'], 'strict');
    assert.equal(f['numatune.memory.nodeset'], '0,3');
    assert.equal(f['numatune.memnode[2].mode'], 'preferred');
    assert.equal(f['numatune.memnode[0].nodeset'], '0-1');
    assert.equal(f['numatune.memnode[0].cellid'], undefined, 'the key is not a fact of its own');
  });

  it('records memtune limits in KiB', () => {
    const f = extractMemoryFacts(doc({
      top: "<memtune><hard_limit unit='MiB'>512</hard_limit><soft_limit>1024</soft_limit><swap_hard_limit unit='G'>1</swap_hard_limit><min_guarantee unit='KiB'>4</min_guarantee></memtune>",
    }));
    assert.equal(f['memtune.hard_limit'], '524288');
    assert.equal(f['memtune.soft_limit'], '1024');
    assert.equal(f['memtune.swap_hard_limit'], '1048576');
    assert.equal(f['memtune.min_guarantee'], '4');
  });
});

describe('memory facts: guest NUMA', () => {
  const numa = `<numa>
    <cell id='1' cpus='2,3' memory='1' unit='GiB' memAccess='shared' discard='yes'>
      <distances><sibling id='0' value='21'/><sibling id='1' value='10'/></distances>
    </cell>
    <cell id='0' cpus='0-1' memory='524288'>
      <cache level='1' associativity='direct' policy='writeback'><size value='10' unit='KiB'/><line value='8' unit='B'/></cache>
    </cell>
    <interconnects>
      <latency initiator='0' target='1' type='access' value='5'/>
      <latency initiator='0' target='1' cache='1' type='access' value='10'/>
      <bandwidth initiator='0' target='1' type='access' value='200' unit='MiB'/>
    </interconnects>
  </numa>`;

  it('keys cells by id and normalises their memory, cpus, caches and distances', () => {
    const f = extractMemoryFacts(doc({ cpu: numa }));
    assert.equal(f['numa.cell[1].memory'], '1048576');
    assert.equal(f['numa.cell[1].cpus'], '2-3');
    assert.equal(f['numa.cell[1].memAccess'], 'shared');
    assert.equal(f['numa.cell[1].discard'], 'yes');
    assert.equal(f['numa.cell[1].distances.sibling[0].value'], '21');
    assert.equal(f['numa.cell[0].memory'], '524288');
    assert.equal(f['numa.cell[0].cache.size.bytes'], '10240');
    assert.equal(f['numa.cell[0].cache.line.bytes'], '8');
    assert.equal(f['numa.interconnects.latency[0,1,access].value'], '5');
    assert.equal(f['numa.interconnects.latency[0,1,1,access].value'], '10');
    assert.equal(f['numa.interconnects.bandwidth[0,1,access].value'], '204800');
  });

  it('numbers cells without an id by position, as libvirt does', () => {
    const f = extractMemoryFacts(doc({ cpu: "<numa><cell cpus='0' memory='1024'/><cell cpus='1' memory='2048'/></numa>" }));
    assert.equal(f['numa.cell[0].memory'], '1024');
    assert.equal(f['numa.cell[1].memory'], '2048');
  });

  it('ignores the rest of <cpu>', () => {
    const f = extractMemoryFacts(doc({ cpu: "<topology sockets='1' cores='2' threads='1'/>" }));
    assert.ok(!Object.keys(f).some((k) => k.startsWith('numa') || k.includes('topology')));
  });
});

describe('memory facts: memory devices', () => {
  it('records model, access, discard, every source and target child, and dimm addresses only', () => {
    const f = extractMemoryFacts(doc({
      devices: `
        <memory model='dimm' discard='yes'>
          <source><pagesize unit='MiB'>2</pagesize><nodemask>1,2,3</nodemask></source>
          <target><size unit='GiB'>1</size><node>0</node></target>
          <address type='dimm' slot='1' base='0x100000000'/>
          <alias name='dimm0'/>
        </memory>
        <memory model='nvdimm' access='shared'>
          <uuid>9066901e-c90a-46ad-8b55-c18868cf92ae</uuid>
          <source><path>/tmp/nvdimm</path><alignsize unit='KiB'>2048</alignsize><pmem/></source>
          <target><size unit='KiB'>523264</size><node>0</node><label><size unit='KiB'>128</size></label><readonly/></target>
        </memory>
        <memory model='virtio-mem'>
          <target><size unit='GiB'>2</size><node>0</node><block unit='MiB'>2</block><requested unit='MiB'>512</requested></target>
          <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>
        </memory>
        <memory model='virtio-pmem' access='shared'>
          <source><path>/tmp/pmem</path></source>
          <target><size unit='MiB'>512</size></target>
        </memory>`,
    }));
    const devices = Object.fromEntries(Object.entries(f).filter(([k]) => k.startsWith('devices.')));
    assert.deepEqual(devices, {
      'devices.memory[0].model': 'dimm',
      'devices.memory[0].discard': 'yes',
      'devices.memory[0].source.pagesize': '2048',
      'devices.memory[0].source.nodemask': '1-3',
      'devices.memory[0].target.size': '1048576',
      'devices.memory[0].target.node': '0',
      'devices.memory[0].address.type': 'dimm',
      'devices.memory[0].address.slot': '1',
      'devices.memory[0].address.base': '0x100000000',
      'devices.memory[1].model': 'nvdimm',
      'devices.memory[1].access': 'shared',
      'devices.memory[1].source.path': '/tmp/nvdimm',
      'devices.memory[1].source.alignsize': '2048',
      'devices.memory[1].source.pmem': 'yes',
      'devices.memory[1].target.size': '523264',
      'devices.memory[1].target.node': '0',
      'devices.memory[1].target.label.size': '128',
      'devices.memory[1].target.readonly': 'yes',
      'devices.memory[2].model': 'virtio-mem',
      'devices.memory[2].target.size': '2097152',
      'devices.memory[2].target.node': '0',
      'devices.memory[2].target.block': '2048',
      'devices.memory[2].target.requested': '524288',
      'devices.memory[3].model': 'virtio-pmem',
      'devices.memory[3].access': 'shared',
      'devices.memory[3].source.path': '/tmp/pmem',
      'devices.memory[3].target.size': '524288',
    });
  });
});

describe('memory facts: comparison', () => {
  it('canonicalises libvirt bitmaps and leaves other text alone', () => {
    assert.equal(canonicalBitmap('0,1,2,5'), '0-2,5');
    assert.equal(canonicalBitmap('0-7,^3,^5-6'), '0-2,4,7');
    assert.equal(canonicalBitmap(' 3 , 1 '), '1,3');
    assert.equal(canonicalBitmap('all'), 'all');
  });

  it('reports missing, different and extra facts, sorted by name', () => {
    const diffs = diffMemoryFacts({ memory: '1024', 'memtune.hard_limit': '10', b: '1' }, { memory: '2048', b: '1', 'memoryBacking.locked': 'yes' });
    assert.deepEqual(diffs, [
      { fact: 'memory', kind: 'different', expected: '1024', actual: '2048' },
      { fact: 'memoryBacking.locked', kind: 'extra', actual: 'yes' },
      { fact: 'memtune.hard_limit', kind: 'missing', expected: '10' },
    ]);
    assert.equal(describeDifference(diffs[2]!), 'missing memtune.hard_limit (libvirt: 10)');
    assert.deepEqual(diffMemoryFacts({ a: '1' }, { a: '1' }), []);
  });

  it('finds the facts of virtmem\u2019s own XML unchanged by a parse/format round trip', () => {
    for (const name of ['virtio-mem-hotplug.xml', 'virt-install-fedora.xml', 'minimal-formatted.xml']) {
      const text = fixture(name);
      const ours = formatDomainXml(parseDomainXml(text).def);
      assert.deepEqual(diffMemoryFacts(extractMemoryFacts(ours), extractMemoryFacts(formatDomainXml(parseDomainXml(ours).def))), [], name);
    }
  });

  it('sees a lost memory fact (the oracle is not blind)', () => {
    const libvirt = doc({ memory: "<memory unit='GiB'>1</memory>", top: "<memtune><hard_limit unit='GiB'>2</hard_limit></memtune>" });
    const lossy = doc({ memory: "<memory unit='GiB'>1</memory>" });
    assert.deepEqual(diffMemoryFacts(extractMemoryFacts(libvirt), extractMemoryFacts(lossy)).map((d) => d.fact), ['memtune.hard_limit']);
  });
});
