import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DomainDef } from '../../src/domain/definition.js';
import { defaultBalloon } from '../../src/domain/validate-def.js';
import { formatDomainXml, parseDomainXml } from '../../src/domain/xml.js';
import { MAX_XML_BYTES, MAX_XML_DEPTH, formatXmlTree, element, parseXmlTree } from '../../src/domain/xml-tree.js';
import { skipUnlessCi } from '../helpers/skip.js';
import { assertVirtError } from '../helpers/virt-error.js';

// Tests run from dist/test/unit; fixtures stay in the source tree.
const FIXTURES = new URL('../../../test/fixtures/xml/', import.meta.url);
const fixture = (name: string): string => readFileSync(new URL(name, FIXTURES), 'utf8');

const MiB = 1024;
const GiB = 1024 * 1024;

// ---- definitions used in round trips ---------------------------------------------------------

function minimalDef(): DomainDef {
  return {
    schemaVersion: 1,
    name: 'mini',
    uuid: '0b5c5a0e-6a0f-4d7b-8e7e-2f1f4c3b2a19',
    vcpus: 1,
    memory: { maxKiB: 512 * MiB, currentKiB: 512 * MiB },
    memoryDevices: [],
    os: {},
    disks: [],
    balloon: defaultBalloon(),
  };
}

function kernelDef(): DomainDef {
  return {
    ...minimalDef(),
    name: 'kernel-guest',
    uuid: '3f0d5f8e-9a55-4f59-9b0e-7c1e1a2b3c4d',
    title: "Tom's <test> & \"guest\"",
    description: 'first line\nsecond line with <markup> & ampersand\n\ttabbed',
    emulator: '/usr/local/bin/qemu-system-x86_64',
    vcpus: 4,
    memory: { maxKiB: 2 * GiB, currentKiB: 1536 * MiB },
    os: { kernel: '/boot/vmlinuz-6.6', initrd: '/boot/initrd-6.6.img', cmdline: "console=ttyS0 root=/dev/vda rw quiet x='y'", machine: 'q35' },
    disks: [
      { path: '/var/lib/virtmem/images/root & data.qcow2', format: 'qcow2', target: 'vda', bus: 'virtio', readonly: false },
      { path: '/var/lib/virtmem/images/seed.img', format: 'raw', target: 'sdb', bus: 'sata', readonly: true },
      { path: '/srv/old.img', format: 'raw', target: 'hdc', bus: 'ide', readonly: false },
      { path: "/srv/it's.img", format: 'raw', target: 'sdd', bus: 'scsi', readonly: false },
    ],
  };
}

function hotplugDef(): DomainDef {
  return {
    ...minimalDef(),
    name: 'hotplug',
    uuid: '9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a5b4',
    vcpus: 2,
    memory: { maxKiB: 4 * GiB, currentKiB: 3 * GiB, hotplug: { ceilingKiB: 16 * GiB, slots: 8 } },
    memoryDevices: [
      { model: 'virtio-mem', sizeKiB: 2 * GiB, blockKiB: 2 * MiB, requestedKiB: 512 * MiB },
      { model: 'dimm', sizeKiB: 512 * MiB },
      { model: 'virtio-mem', sizeKiB: 256 * MiB, blockKiB: 4 * MiB, requestedKiB: 0 },
    ],
    os: { kernel: '/boot/vmlinuz', cmdline: 'memhp_default_state=online_movable' },
    balloon: { model: 'virtio', statsPeriodS: 0, autodeflate: false, freePageReporting: true },
  };
}

function hotplugOnlyCeilingDef(): DomainDef {
  return {
    ...minimalDef(),
    name: 'ceiling-only',
    uuid: '11111111-2222-4333-8444-555555555555',
    memory: { maxKiB: GiB, currentKiB: GiB, hotplug: { ceilingKiB: 4 * GiB, slots: 1 } },
    os: { machine: 'pc' },
    balloon: { model: 'none', statsPeriodS: 0, autodeflate: false, freePageReporting: false },
  };
}

/** Guest NUMA, host placement, huge pages and every other <memoryBacking> setting, memtune. */
function numaDef(): DomainDef {
  return {
    ...minimalDef(),
    name: 'numa-guest',
    uuid: '5d0c1f4e-2b3a-4c5d-8e6f-7a8b9c0d1e2f',
    vcpus: 4,
    currentVcpus: 2,
    memory: { maxKiB: 1536 * MiB, currentKiB: 1536 * MiB },
    numa: {
      cells: [
        { cpus: [0, 1], memoryKiB: 512 * MiB, memAccess: 'shared', discard: true, distances: [{ cell: 0, value: 10 }, { cell: 1, value: 21 }] },
        { cpus: [2, 3], memoryKiB: GiB, discard: false, distances: [{ cell: 0, value: 21 }, { cell: 1, value: 10 }] },
      ],
    },
    numatune: { memory: { mode: 'strict', hostNodes: [0] }, memnodes: [{ cell: 1, mode: 'preferred', hostNodes: [0] }] },
    memoryBacking: {
      hugepages: [{ sizeKiB: 2 * MiB, cells: [1] }, { sizeKiB: GiB }],
      nosharepages: true,
      locked: true,
      source: 'file',
      access: 'private',
      allocation: { mode: 'immediate', threads: 2 },
      discard: true,
    },
    memtune: { hardLimitKiB: 3 * GiB, softLimitKiB: 2 * GiB, swapHardLimitKiB: 4 * GiB },
  };
}

/** Every memory device model with its host source, guest node and address; block disk, cdrom, i686. */
function devicesDef(): DomainDef {
  return {
    ...minimalDef(),
    name: 'devices-guest',
    uuid: '6e1d2f5a-3c4b-4d6e-9f70-8b9cad0e1f20',
    vcpus: 2,
    emulator: '/usr/bin/qemu-system-i386',
    memory: { maxKiB: 1024 * MiB + 524287 + 512 * MiB + 256 * MiB + 1024 * MiB, currentKiB: GiB, hotplug: { ceilingKiB: 16 * GiB, slots: 16 } },
    numa: { cells: [{ cpus: [0], memoryKiB: 512 * MiB }, { cpus: [1], memoryKiB: 512 * MiB }] },
    memoryDevices: [
      { model: 'dimm', sizeKiB: 524287, node: 1, access: 'shared', discard: true, source: { hostNodes: [0], pageSizeKiB: 2 * MiB }, address: { slot: 2, baseAddress: 0x100000000 } },
      { model: 'nvdimm', sizeKiB: 512 * MiB, path: '/tmp/nvdimm', alignKiB: 2 * MiB, pmem: true, labelKiB: 128, readonly: true, access: 'shared', address: { slot: 0 } },
      { model: 'virtio-pmem', sizeKiB: 256 * MiB, path: '/tmp/virtio-pmem', access: 'shared' },
      { model: 'virtio-mem', sizeKiB: GiB, blockKiB: 4 * MiB, requestedKiB: 256 * MiB, node: 1, source: { hostNodes: [0] } },
    ],
    os: { arch: 'i686', machine: 'pc' },
    disks: [
      { path: '/dev/loop7', type: 'block', format: 'raw', target: 'vdb', bus: 'virtio', readonly: false },
      { path: '/srv/install.iso', device: 'cdrom', format: 'raw', target: 'hdc', bus: 'ide', readonly: true },
    ],
  };
}

/** A definition's accelerator as XML carries it: <domain type> has no 'auto'. */
const withAccel = (def: DomainDef, accel: 'kvm' | 'tcg' = 'kvm'): DomainDef => ({ ...def, accel: def.accel ?? accel });

const ROUND_TRIP_DEFS: Array<[string, () => DomainDef]> = [
  ['minimal (built-in guest, no optional fields)', () => withAccel(minimalDef(), 'tcg')],
  ['kernel, disks, escaped title/description/paths', () => withAccel(kernelDef())],
  ['virtio-mem and dimm hot-plug', () => withAccel(hotplugDef())],
  ['hot-plug ceiling without devices, no balloon', () => withAccel(hotplugOnlyCeilingDef(), 'tcg')],
  ['cpu host-passthrough under KVM', () => ({ ...minimalDef(), accel: 'kvm', cpu: { mode: 'host-passthrough' } })],
  ['cpu maximum under TCG', () => ({ ...minimalDef(), accel: 'tcg', cpu: { mode: 'maximum' } })],
  ['cpu host-model', () => ({ ...minimalDef(), accel: 'kvm', cpu: { mode: 'host-model' } })],
  ['policy settings in <metadata> (all of them)', () => ({ ...withAccel(hotplugDef()), policy: { enabled: true, floorKiB: 384 * MiB, ceilingKiB: 3 * 1024 * MiB, shares: 2000 } })],
  ['policy settings in <metadata> (defaults)', () => ({ ...withAccel(minimalDef()), policy: { enabled: false } })],
  ['cpu custom model with hot-plug (model and NUMA cell in one <cpu>)', () => ({ ...hotplugDef(), accel: 'tcg', cpu: { mode: 'custom', model: 'qemu64' } })],
  ['guest NUMA cells, numatune, huge pages, memory backing, memtune, vcpu current', () => withAccel(numaDef(), 'tcg')],
  ['dimm, nvdimm, virtio-pmem and virtio-mem with sources and addresses; block disk, cdrom, i686', () => withAccel(devicesDef(), 'tcg')],
  ['automatic host NUMA placement', () => ({ ...withAccel(minimalDef(), 'tcg'), numatune: { memory: { mode: 'interleave', placement: 'auto' } } })],
];

// ---- helpers ---------------------------------------------------------------------------------

/** A domain document with `top` inserted at the top level and `devices` inside <devices>. */
function domainXml({ top = '', devices = '', memory = "<memory unit='MiB'>512</memory>", root = "<domain type='qemu'>" } = {}): string {
  return `${root}
  <name>t</name>
  ${memory}
  <os><type arch='x86_64'>hvm</type><kernel>/boot/vmlinuz</kernel></os>
  ${top}
  <devices>${devices}</devices>
</domain>`;
}

const HOTPLUG = "<maxMemory slots='4' unit='GiB'>8</maxMemory><memory unit='GiB'>2</memory>";

function hasCommand(cmd: string): boolean {
  const r = spawnSync(cmd, ['--version'], { stdio: 'ignore' });
  return r.error === undefined;
}

// ---- round trips -----------------------------------------------------------------------------

describe('formatDomainXml -> parseDomainXml round trip', () => {
  for (const [what, make] of ROUND_TRIP_DEFS) {
    it(what, () => {
      const def = make();
      const { def: back, warnings } = parseDomainXml(formatDomainXml(def));
      assert.deepEqual(back, def);
      assert.deepEqual(warnings, [], 'virtmem output must parse without warnings');
    });
  }
  it('is stable: format(parse(format(def))) == format(def)', () => {
    for (const [, make] of ROUND_TRIP_DEFS) {
      const xml = formatDomainXml(make());
      assert.equal(formatDomainXml(parseDomainXml(xml).def), xml);
    }
  });
});

describe('formatDomainXml output', () => {
  it('matches libvirt style exactly for a minimal definition', () => {
    assert.equal(formatDomainXml(minimalDef(), { accel: 'qemu' }), fixture('minimal-formatted.xml'));
  });
  it("defaults to type='qemu' and honours accel='kvm'", () => {
    assert.match(formatDomainXml(minimalDef()), /^<domain type='qemu'>\n/);
    assert.match(formatDomainXml(minimalDef(), { accel: 'kvm' }), /^<domain type='kvm'>\n/);
  });
  it('reports the live balloon size and the id for a running domain, like virsh dumpxml', () => {
    const xml = formatDomainXml(minimalDef(), { accel: 'kvm', running: { id: 7, actualKiB: 300 * MiB } });
    assert.match(xml, /^<domain type='kvm' id='7'>\n/);
    assert.match(xml, /<currentMemory unit='KiB'>307200<\/currentMemory>/);
    assert.match(xml, /<memory unit='KiB'>524288<\/memory>/);
    assert.equal(parseDomainXml(xml).def.memory.currentKiB, 300 * MiB);
  });
  it('escapes text and attributes', () => {
    const xml = formatDomainXml(kernelDef());
    assert.match(xml, /<title>Tom's &lt;test&gt; &amp; "guest"<\/title>/);
    assert.match(xml, /<source file='\/var\/lib\/virtmem\/images\/root &amp; data.qcow2'\/>/);
    assert.match(xml, /<source file='\/srv\/it&apos;s.img'\/>/);
  });
  it('emits one NUMA cell holding the boot RAM when hot-plug is configured', () => {
    const xml = formatDomainXml(hotplugDef());
    // 4 GiB total - 2 GiB - 512 MiB - 256 MiB of devices = 1280 MiB boot RAM.
    assert.match(xml, /<cell id='0' cpus='0-1' memory='1310720' unit='KiB'\/>/);
    assert.match(xml, /<maxMemory slots='8' unit='KiB'>16777216<\/maxMemory>/);
    assert.doesNotMatch(formatDomainXml(kernelDef()), /<numa>/);
  });
  it('omits <stats> when polling is off (libvirt wants a positive period)', () => {
    assert.doesNotMatch(formatDomainXml(hotplugDef()), /<stats/);
    assert.match(formatDomainXml(hotplugDef()), /<memballoon model='virtio' autodeflate='off' freePageReporting='on'\/>/);
    assert.match(formatDomainXml(hotplugOnlyCeilingDef()), /<memballoon model='none'\/>/);
  });
  it('refuses characters XML cannot carry instead of writing a broken document', () => {
    const def = { ...minimalDef(), title: 'bell\u0007' };
    assertVirtError(() => formatDomainXml(def), 'XML_ERROR', '<title>');
  });
});

describe('formatted XML against libvirt itself', () => {
  const hasValidator = hasCommand('virt-xml-validate');
  it('validates against libvirt RNG schema (skipped when virt-xml-validate is absent)', { skip: skipUnlessCi(!hasValidator && 'virt-xml-validate not installed') }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtmem-xml-'));
    try {
      const variants = ROUND_TRIP_DEFS.flatMap(([what, make]) => [
        [what, formatDomainXml(make())],
        [`${what} (running)`, formatDomainXml(make(), { accel: 'qemu', running: { id: 3, actualKiB: make().memory.currentKiB } })],
      ]);
      for (const [what, xml] of variants) {
        const file = join(dir, 'domain.xml');
        writeFileSync(file, xml as string);
        const r = spawnSync('virt-xml-validate', [file, 'domain'], { encoding: 'utf8' });
        assert.equal(r.status, 0, `${what}: ${r.stderr}${r.stdout}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const hasVirsh = hasCommand('virsh');
  it("survives libvirt's define + dumpxml (test:///default driver; skipped when virsh is absent)", { skip: skipUnlessCi(!hasVirsh && 'virsh not installed') }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtmem-xml-'));
    try {
      for (const [what, make] of ROUND_TRIP_DEFS) {
        const def = make();
        const file = join(dir, 'domain.xml');
        writeFileSync(file, formatDomainXml(def));
        // One virsh process: the test driver keeps its state in memory only.
        const r = spawnSync('virsh', ['-q', '-c', 'test:///default', `define ${file}; dumpxml ${def.name}`], { encoding: 'utf8' });
        assert.equal(r.status, 0, `${what}: ${r.stderr}`);
        const dumped = r.stdout.slice(r.stdout.indexOf('<domain'));
        const { def: back, warnings } = parseDomainXml(dumped);
        assert.deepEqual(back, def, what);
        // libvirt adds a controller for SATA/IDE/SCSI disks and <os/boot>; nothing else.
        for (const w of warnings) assert.match(w, /^ignored: <(devices\/controller|os\/boot)>/, `${what}: ${w}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---- parsing real-world documents ----------------------------------------------------------

describe('parseDomainXml on real-world documents', () => {
  it('a virt-install guest parses, with one warning per ignored element name', () => {
    const { def, warnings } = parseDomainXml(fixture('virt-install-fedora.xml'));
    assert.deepEqual(def, {
      schemaVersion: 1,
      name: 'fedora39',
      uuid: '2f4e5c6a-8b1d-4a3e-9c7f-0d1e2f3a4b5c',
      emulator: '/usr/bin/qemu-system-x86_64',
      vcpus: 2,
      accel: 'kvm',
      cpu: { mode: 'host-passthrough' },
      memory: { maxKiB: 4 * GiB, currentKiB: 4 * GiB },
      memoryDevices: [],
      os: { machine: 'q35' },
      disks: [{ path: '/var/lib/libvirt/images/fedora39.qcow2', format: 'qcow2', target: 'vda', bus: 'virtio', readonly: false }],
      // A present <memballoon> without settings means libvirt's defaults: everything off.
      balloon: { model: 'virtio', statsPeriodS: 0, autodeflate: false, freePageReporting: false },
    });
    assert.deepEqual([...warnings].sort(), [
      "<os/type machine='pc-q35-8.2'>: using QEMU's current 'q35' machine",
      'ignored: <devices/audio>',
      'ignored: <devices/channel>',
      'ignored: <devices/controller>',
      "ignored: <devices/disk device='cdrom'>",
      'ignored: <devices/graphics>',
      'ignored: <devices/input>',
      'ignored: <devices/interface>',
      'ignored: <devices/redirdev>',
      'ignored: <devices/rng>',
      'ignored: <devices/sound>',
      'ignored: <devices/video>',
      'ignored: <features/vmport>',
      'ignored: <os/boot> (no <os/kernel>: virtmem boots its built-in guest kernel)',
    ]);
  });

  it('a libvirt-docs hot-plug guest (units, NUMA cell, virtio-mem, dimm) parses without warnings', () => {
    const { def, warnings } = parseDomainXml(fixture('virtio-mem-hotplug.xml'));
    assert.deepEqual(warnings, []);
    assert.deepEqual(def, {
      schemaVersion: 1,
      name: 'hotplug-guest',
      uuid: '8c3d2b1a-0f9e-4d8c-b7a6-5f4e3d2c1b0a',
      title: 'virtio-mem and dimm',
      emulator: '/usr/bin/qemu-system-x86_64',
      vcpus: 4,
      accel: 'kvm',
      memory: { maxKiB: 6 * GiB, currentKiB: 3 * GiB, hotplug: { ceilingKiB: 32 * GiB, slots: 16 } },
      memoryDevices: [
        { model: 'virtio-mem', sizeKiB: 2 * GiB, blockKiB: 2 * MiB, requestedKiB: GiB },
        { model: 'dimm', sizeKiB: 2 * GiB, address: { slot: 0 } },
      ],
      os: {
        kernel: '/var/lib/virtmem/vmlinuz',
        initrd: '/var/lib/virtmem/initrd.img',
        cmdline: 'console=ttyS0 memhp_default_state=online_movable',
        machine: 'pc',
      },
      disks: [{ path: '/var/lib/virtmem/root.img', format: 'raw', target: 'vda', bus: 'virtio', readonly: true }],
      balloon: { model: 'virtio', statsPeriodS: 10, autodeflate: true, freePageReporting: true },
    });
  });
});

// ---- libvirt semantics -------------------------------------------------------------------------

describe('parseDomainXml memory semantics (as libvirt)', () => {
  const units: Array<[string, string, number]> = [
    ['524288', '', 512 * MiB], // no unit attribute at all: KiB
    ['524288', "unit='KiB'", 512 * MiB],
    ['524288', "unit='k'", 512 * MiB],
    ['524288', "unit='K'", 512 * MiB],
    ['536870912', "unit='b'", 512 * MiB],
    ['536870912', "unit='bytes'", 512 * MiB],
    ['536870912', "unit='byte'", 512 * MiB],
    ['512', "unit='M'", 512 * MiB],
    ['512', "unit='MiB'", 512 * MiB],
    ['512', "unit='mib'", 512 * MiB],
    ['1000', "unit='MB'", 976563], // 10^9 bytes rounded up to KiB
    ['1', "unit='G'", GiB],
    ['1', "unit='GiB'", GiB],
    ['2', "unit='GB'", 1953125],
    ['536870912', "unit='KB'", 524288000], // 536870912000 bytes
    ['1', "unit='T'", 1024 * GiB],
    ['1', "unit='TiB'", 1024 * GiB],
  ];
  for (const [value, attr, kib] of units) {
    it(`<memory ${attr || '(no unit)'}>${value}</memory> is ${kib} KiB`, () => {
      const { def } = parseDomainXml(domainXml({ memory: `<memory ${attr}>${value}</memory>` }));
      assert.equal(def.memory.maxKiB, kib);
      assert.equal(def.memory.currentKiB, kib, '<currentMemory> defaults to <memory>');
    });
  }
  it('reads <currentMemory> with its own unit', () => {
    const { def } = parseDomainXml(domainXml({ memory: "<memory unit='GiB'>2</memory><currentMemory unit='MiB'>1536</currentMemory>" }));
    assert.deepEqual(def.memory, { maxKiB: 2 * GiB, currentKiB: 1536 * MiB });
  });
  it('treats <currentMemory>0</currentMemory> as absent', () => {
    const { def } = parseDomainXml(domainXml({ memory: "<memory unit='GiB'>2</memory><currentMemory>0</currentMemory>" }));
    assert.equal(def.memory.currentKiB, 2 * GiB);
  });
  it('clamps <currentMemory> above <memory> with a warning (libvirt clamps silently)', () => {
    const { def, warnings } = parseDomainXml(domainXml({ memory: "<memory unit='GiB'>1</memory><currentMemory unit='GiB'>2</currentMemory>" }));
    assert.equal(def.memory.currentKiB, GiB);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0] ?? '', /<currentMemory> \(2097152 KiB\) exceeds <memory> \(1048576 KiB\)/);
  });
  it('derives <memory> from the NUMA cell plus devices when <memory> is absent', () => {
    const xml = domainXml({
      memory: "<maxMemory slots='2' unit='GiB'>8</maxMemory>",
      top: "<cpu><numa><cell id='0' cpus='0' memory='1' unit='GiB'/></numa></cpu>",
      devices: "<memory model='dimm'><target><size unit='GiB'>1</size></target></memory>",
    });
    assert.equal(parseDomainXml(xml).def.memory.maxKiB, 2 * GiB);
  });
  it('prefers the NUMA cell over a disagreeing <memory>, with a warning (libvirt recomputes on define)', () => {
    const xml = domainXml({ memory: "<memory unit='GiB'>3</memory>", top: "<cpu><numa><cell memory='1' unit='GiB'/></numa></cpu>" });
    const { def, warnings } = parseDomainXml(xml);
    assert.equal(def.memory.maxKiB, GiB);
    assert.match(warnings.join('\n'), /using the NUMA size/);
  });
  it('defaults virtio-mem <block> to 2 MiB and <requested> to 0', () => {
    const xml = domainXml({ memory: HOTPLUG, devices: "<memory model='virtio-mem'><target><size unit='MiB'>512</size></target></memory>" });
    assert.deepEqual(parseDomainXml(xml).def.memoryDevices, [{ model: 'virtio-mem', sizeKiB: 512 * MiB, blockKiB: 2 * MiB, requestedKiB: 0 }]);
  });
  it('adds virtmem\u2019s default balloon when <memballoon> is absent', () => {
    assert.deepEqual(parseDomainXml(domainXml()).def.balloon, defaultBalloon());
  });
  it('generates a UUID when <uuid> is absent and normalises a given one', () => {
    const a = parseDomainXml(domainXml()).def.uuid;
    assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.notEqual(parseDomainXml(domainXml()).def.uuid, a);
    const given = parseDomainXml(domainXml({ top: '<uuid> 6B1E3C1A2F0B4E2A9D3C1234567890AB </uuid>' })).def.uuid;
    assert.equal(given, '6b1e3c1a-2f0b-4e2a-9d3c-1234567890ab');
  });
  it('infers the disk bus from the target name like libvirt', () => {
    const disk = (dev: string): string => `<disk type='file' device='disk'><source file='/i/${dev}'/><target dev='${dev}'/></disk>`;
    const { def } = parseDomainXml(domainXml({ devices: disk('vda') + disk('sdb') + disk('hdc') }));
    assert.deepEqual(def.disks.map((d) => [d.target, d.bus, d.format]), [['vda', 'virtio', 'raw'], ['sdb', 'scsi', 'raw'], ['hdc', 'ide', 'raw']]);
  });
  it('accepts vcpu current equal to the count, and placement', () => {
    assert.equal(parseDomainXml(domainXml({ top: "<vcpu placement='auto' current='3'>3</vcpu>" })).def.vcpus, 3);
  });
  it('maps machine types to their family', () => {
    const machine = (m: string): string | undefined =>
      parseDomainXml(domainXml().replace("arch='x86_64'", `arch='x86_64' machine='${m}'`)).def.os.machine;
    assert.equal(machine('pc'), 'pc');
    assert.equal(machine('q35'), 'q35');
    assert.equal(machine('pc-i440fx-8.2'), 'pc');
    assert.equal(machine('pc-q35-8.2'), 'q35');
    assert.equal(machine('pc-1.0'), 'pc');
  });
});

describe('parseDomainXml: automatic host NUMA placement (libvirt asks numad; virtmem chooses at start)', () => {
  const tune = (top: string): unknown => parseDomainXml(domainXml({ top })).def.numatune;
  it("reads placement='auto', and drops a nodeset given with it as libvirt does", () => {
    assert.deepEqual(tune("<numatune><memory mode='preferred' placement='auto'/></numatune>"), { memory: { mode: 'preferred', placement: 'auto' } });
    assert.deepEqual(tune("<numatune><memory placement='auto' nodeset='0'/></numatune>"), { memory: { mode: 'strict', placement: 'auto' } });
  });
  it("takes <vcpu placement='auto'> as automatic memory placement too, with or without <numatune>", () => {
    assert.deepEqual(tune("<vcpu placement='auto'>2</vcpu>"), { memory: { mode: 'strict', placement: 'auto' } });
    assert.deepEqual(tune("<vcpu placement='auto'>2</vcpu><numatune><memory mode='interleave'/></numatune>"), { memory: { mode: 'interleave', placement: 'auto' } });
    assert.deepEqual(tune("<vcpu placement='auto'>2</vcpu><numatune><memory mode='interleave' nodeset='0'/></numatune>"), { memory: { mode: 'interleave', hostNodes: [0] } });
  });
  it('refuses per-node binding with it, in libvirt\u2019s words', () => {
    assertVirtError(() => parseDomainXml(domainXml({
      top: "<vcpu>2</vcpu><cpu><numa><cell id='0' cpus='0' memory='256' unit='MiB'/><cell id='1' cpus='1' memory='256' unit='MiB'/></numa></cpu><numatune><memory placement='auto'/><memnode cellid='0' nodeset='0'/></numatune>",
      memory: '',
    })), 'XML_ERROR', 'Per-node binding is not compatible with automatic NUMA placement.');
  });
});

describe('parseDomainXml warnings', () => {
  const cases: Array<[string, Parameters<typeof domainXml>[0], string]> = [
    ['an unknown top-level element', { top: '<iothreads>2</iothreads>' }, 'ignored: <iothreads>'],
    ['cputune', { top: "<cputune><shares>2048</shares></cputune>" }, 'ignored: <cputune>'],
    ['cpu topology', { top: "<cpu mode='maximum'><topology sockets='1' cores='1' threads='1'/></cpu>" }, '<cpu/topology>: virtmem sets the CPU model only'],
    ["a model with mode='host-model'", { top: "<cpu mode='host-model'><model>qemu64</model></cpu>" }, "<cpu mode='host-model'>: <model> is used only with mode='custom'"],
    ['a non-default on_reboot', { top: '<on_reboot>destroy</on_reboot>' }, "ignored: <on_reboot>destroy</on_reboot> (virtmem always does 'restart')"],
    ['a non-default on_crash', { top: '<on_crash>coredump-restart</on_crash>' }, 'ignored: <on_crash>coredump-restart</on_crash>'],
    ['clock localtime', { top: "<clock offset='localtime'/>" }, "ignored: <clock offset='localtime'>"],
    ['enabled suspend', { top: "<pm><suspend-to-mem enabled='yes'/></pm>" }, "ignored: <pm/suspend-to-mem enabled='yes'>"],
    ['an extra feature', { top: '<features><acpi/><hyperv mode="custom"/></features>' }, 'ignored: <features/hyperv>'],
    ['vcpu cpuset', { top: "<vcpu cpuset='0-1'>2</vcpu>" }, 'ignored: <vcpu cpuset>'],
    ['a transitional balloon', { devices: "<memballoon model='virtio-transitional'/>" }, "<devices/memballoon model='virtio-transitional'> is treated as model='virtio'"],
    ['a non-pty serial', { devices: "<serial type='file'><source path='/tmp/x'/></serial>" }, "ignored: <devices/serial type='file'>"],
    ['a disk iotune', { devices: "<disk type='file'><source file='/i'/><target dev='vda'/><iotune><total_bytes_sec>1</total_bytes_sec></iotune></disk>" }, 'ignored: <devices/disk/iotune>'],
    ['a watchdog', { devices: "<watchdog model='i6300esb'/>" }, 'ignored: <devices/watchdog>'],
  ];
  for (const [what, parts, expected] of cases) {
    it(what, () => {
      const { warnings } = parseDomainXml(domainXml(parts));
      assert.ok(warnings.some((w) => w.startsWith(expected)), `${JSON.stringify(warnings)} should include ${JSON.stringify(expected)}`);
    });
  }
  it('UEFI loader and firmware attribute', () => {
    const xml = domainXml().replace('<os>', "<os firmware='efi'><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>");
    assert.deepEqual(parseDomainXml(xml).warnings, ["ignored: <os firmware='efi'>", 'ignored: <os/loader>']);
  });
  it('one warning per element name, however many elements', () => {
    const nic = "<interface type='network'><source network='default'/></interface>";
    const { warnings } = parseDomainXml(domainXml({ devices: nic + nic + nic, top: '<foo/><foo/>' }));
    assert.deepEqual(warnings, ['ignored: <foo>', 'ignored: <devices/interface>']);
  });
  it('metadata and an empty <memoryBacking/> are accepted silently', () => {
    assert.deepEqual(parseDomainXml(domainXml({ top: '<metadata><x:y xmlns:x="urn:x"/></metadata><memoryBacking/>' })).warnings, []);
  });
  it('an XML declaration, a byte order mark and comments are fine', () => {
    const { def, warnings } = parseDomainXml(`\ufeff<?xml version='1.0' encoding='UTF-8'?>\n<!-- saved by hand -->\n${domainXml()}`);
    assert.equal(def.name, 't');
    assert.deepEqual(warnings, []);
  });
  it('element names that are Object.prototype keys are just unknown elements', () => {
    const disk = "<disk type='file'><source file='/i'/><target dev='vda'/><toString/></disk>";
    const { warnings } = parseDomainXml(domainXml({ top: '<constructor/><__proto__/>', devices: disk }));
    assert.deepEqual(warnings, ['ignored: <constructor>', 'ignored: <__proto__>', 'ignored: <devices/disk/toString>']);
    assertVirtError(
      () => parseDomainXml(domainXml({ memory: HOTPLUG, devices: "<memory model='constructor'><target><size>1</size></target></memory>" })),
      'CONFIG_UNSUPPORTED',
      "<devices/memory model='constructor'>: this model is not supported",
    );
  });
  it('boot order is irrelevant with a kernel: no warning', () => {
    assert.deepEqual(parseDomainXml(domainXml().replace('</os>', "<boot dev='hd'/></os>")).warnings, []);
  });
});

// ---- refusals ----------------------------------------------------------------------------------

describe('parseDomainXml refuses what virtmem cannot honour (CONFIG_UNSUPPORTED, naming the element)', () => {
  const cases: Array<[string, Parameters<typeof domainXml>[0], string]> = [
    ['launchSecurity', { top: "<launchSecurity type='sev'/>" }, '<launchSecurity>'],
    ['qemu:commandline', {
      root: "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>",
      top: "<qemu:commandline><qemu:arg value='-m'/></qemu:commandline>",
    }, '<qemu:commandline>'],
    ['sgx-epc', { memory: HOTPLUG, devices: "<memory model='sgx-epc'><target><size unit='MiB'>64</size></target></memory>" }, "<devices/memory model='sgx-epc'>"],
    ['a core dump setting (dropping it would change the guest)', { memory: "<memory unit='MiB' dumpCore='off'>512</memory>" }, "<memory dumpCore='off'>"],
    ['HMAT interconnects', { top: "<cpu><numa><cell id='0' cpus='0' memory='512' unit='MiB'/><interconnects><latency initiator='0' target='0' type='access' value='5'/></interconnects></numa></cpu>" }, '<cpu/numa/interconnects>'],
    ['an HMAT cache', { top: "<cpu><numa><cell id='0' cpus='0' memory='512' unit='MiB'><cache level='1' associativity='direct' policy='writeback'><size value='10' unit='KiB'/><line value='8' unit='B'/></cache></cell></numa></cpu>" }, '<cpu/numa/cell/cache>'],
    ['an unknown memory backing setting', { top: '<memoryBacking><hugepages/><quantum/></memoryBacking>' }, '<memoryBacking/quantum>'],
    ['an unknown memtune setting', { top: "<memtune><hard_limit unit='G'>1</hard_limit><shares>3</shares></memtune>" }, '<memtune/shares>'],
    ['a vhost-user disk', { devices: "<disk type='vhostuser' device='disk'><source type='unix' path='/tmp/s'/><target dev='vda' bus='virtio'/></disk>" }, "<devices/disk type='vhostuser'>"],
    ['a network disk', { devices: "<disk type='network' device='disk'><source protocol='nbd' name='x'/><target dev='vdb'/></disk>" }, "<devices/disk type='network'>"],
    ['a volume disk', { devices: "<disk type='volume' device='disk'><source pool='p' volume='v'/><target dev='vdb'/></disk>" }, "<devices/disk type='volume'>"],
    ['a lun', { devices: "<disk type='file' device='lun'><source file='/i'/><target dev='sda'/></disk>" }, "<devices/disk device='lun'>"],
    ['a vmdk image', { devices: "<disk type='file'><driver name='qemu' type='vmdk'/><source file='/i'/><target dev='vda'/></disk>" }, "<devices/disk/driver type='vmdk'>"],
    ['a transient disk', { devices: "<disk type='file'><source file='/i'/><target dev='vda'/><transient/></disk>" }, '<devices/disk/transient>'],
    ['a usb disk', { devices: "<disk type='file'><source file='/i'/><target dev='sda' bus='usb'/></disk>" }, "<devices/disk/target bus='usb'>"],
    ['a xen balloon', { devices: "<memballoon model='xen'/>" }, "<devices/memballoon model='xen'>"],
    ['too many vcpus', { top: '<vcpu>300</vcpu>' }, '<vcpu>300</vcpu>'],
    ['a xen domain', { root: "<domain type='xen'>" }, "<domain type='xen'>"],
    ['memory below the minimum', { memory: "<memory unit='MiB'>32</memory>" }, '<memory>: '],
  ];
  for (const [what, parts, names] of cases) {
    it(what, () => assertVirtError(() => parseDomainXml(domainXml(parts)), 'CONFIG_UNSUPPORTED', names));
  }
  it('an aarch64 guest', () => {
    assertVirtError(() => parseDomainXml(domainXml().replace("arch='x86_64'", "arch='aarch64'")), 'CONFIG_UNSUPPORTED', "<os/type arch='aarch64'>");
  });
  it('a microvm machine', () => {
    assertVirtError(() => parseDomainXml(domainXml().replace("arch='x86_64'", "arch='x86_64' machine='microvm'")), 'CONFIG_UNSUPPORTED', "machine='microvm'");
  });
  it('a non-hvm OS type', () => {
    assertVirtError(() => parseDomainXml(domainXml().replace('>hvm<', '>linux<')), 'CONFIG_UNSUPPORTED', '<os/type>linux');
  });
});

describe('parseDomainXml rejects contradictory or malformed content (XML_ERROR, naming the element)', () => {
  const cases: Array<[string, Parameters<typeof domainXml>[0], string]> = [
    ['devices larger than <memory>', { memory: "<maxMemory slots='2' unit='GiB'>8</maxMemory><memory unit='GiB'>1</memory>", devices: "<memory model='dimm'><target><size unit='GiB'>2</size></target></memory>" }, 'exceeds <memory>'],
    ['<maxMemory> below <memory>', { memory: "<maxMemory slots='2' unit='GiB'>1</maxMemory><memory unit='GiB'>2</memory>" }, '<maxMemory> (1048576 KiB) must be at least <memory>'],
    ['<maxMemory> without slots', { memory: "<maxMemory unit='GiB'>8</maxMemory><memory unit='GiB'>2</memory>" }, "<maxMemory> needs a slots='N' attribute"],
    ['memory devices without <maxMemory>', { devices: "<memory model='virtio-mem'><target><size unit='MiB'>128</size></target></memory>" }, 'add <maxMemory'],
    ['an unknown unit', { memory: "<memory unit='XB'>512</memory>" }, "<memory>: unknown unit 'XB'"],
    ['a fractional size', { memory: "<memory unit='GiB'>1.5</memory>" }, "<memory>: '1.5'"],
    ['a negative size', { memory: '<memory>-1</memory>' }, "<memory>: '-1'"],
    ['a missing <memory>', { memory: '' }, 'missing <memory>'],
    ['a zero <memory>', { memory: '<memory>0</memory>' }, 'missing <memory>'],
    ['a duplicated <memory>', { memory: "<memory unit='MiB'>512</memory><memory unit='MiB'>1024</memory>" }, '<memory> appears 2 times'],
    ['a duplicated <memballoon>', { devices: "<memballoon model='virtio'/><memballoon model='virtio'/>" }, '<devices/memballoon> appears 2 times'],
    ['a virtio-mem size not a multiple of its block', { memory: HOTPLUG, devices: "<memory model='virtio-mem'><target><size unit='MiB'>129</size><block unit='MiB'>2</block></target></memory>" }, '<devices/memory #1 target/size>'],
    ['a virtio-mem request above its size', { memory: HOTPLUG, devices: "<memory model='virtio-mem'><target><size unit='MiB'>128</size><requested unit='MiB'>256</requested></target></memory>" }, '<devices/memory #1 target/requested>'],
    ['a bad autodeflate', { devices: "<memballoon model='virtio' autodeflate='maybe'/>" }, "<devices/memballoon autodeflate>: expected 'on' or 'off'"],
    ['a bad stats period', { devices: "<memballoon model='virtio'><stats period='-5'/></memballoon>" }, '<devices/memballoon/stats period>'],
    ['a disk without source', { devices: "<disk type='file' device='disk'><target dev='vda'/></disk>" }, "<devices/disk> needs <source file='...'/>"],
    ['a disk without target', { devices: "<disk type='file' device='disk'><source file='/i'/></disk>" }, "<devices/disk> needs <target dev='...'/>"],
    ['a disk with an odd target', { devices: "<disk type='file'><source file='/i'/><target dev='xvda'/></disk>" }, "<devices/disk/target dev='xvda'>: cannot infer the bus"],
    ['a relative disk path', { devices: "<disk type='file'><source file='img.qcow2'/><target dev='vda'/></disk>" }, "<devices/disk #1 source file='...'>"],
    ['duplicate disk targets', { devices: "<disk type='file'><source file='/a'/><target dev='vda'/></disk><disk type='file'><source file='/b'/><target dev='vda'/></disk>" }, "<devices/disk #2 target dev='...'>"],
    ['a bad uuid', { top: '<uuid>not-a-uuid</uuid>' }, "<uuid>: malformed UUID 'not-a-uuid'"],
    ['zero vcpus', { top: '<vcpu>0</vcpu>' }, '<vcpu>: a guest needs at least one vCPU'],
    ['a title with a newline', { top: '<title>a\nb</title>' }, '<title>: must be a single line'],
  ];
  for (const [what, parts, names] of cases) {
    it(what, () => assertVirtError(() => parseDomainXml(domainXml(parts)), 'XML_ERROR', names));
  }
  it('a relative kernel path', () => {
    assertVirtError(() => parseDomainXml(domainXml().replace('/boot/vmlinuz', 'vmlinuz')), 'XML_ERROR', '<os/kernel>: ');
  });
  it('a missing or bad name', () => {
    assertVirtError(() => parseDomainXml(domainXml().replace('<name>t</name>', '')), 'XML_ERROR', 'missing <name>');
    assertVirtError(() => parseDomainXml(domainXml().replace('<name>t</name>', '<name>../etc</name>')), 'XML_ERROR', '<name>', "'/'");
  });
  it('a root other than <domain>', () => {
    assertVirtError(() => parseDomainXml("<network><name>default</name></network>"), 'XML_ERROR', 'the root element is <network>');
  });
  it('a <domain> without type', () => {
    assertVirtError(() => parseDomainXml(domainXml({ root: '<domain>' })), 'XML_ERROR', '<domain> has no type');
  });
  it('a missing <os>', () => {
    assertVirtError(() => parseDomainXml("<domain type='qemu'><name>t</name><memory>524288</memory></domain>"), 'XML_ERROR', 'missing <os>');
  });
});

// ---- hostile and malformed documents --------------------------------------------------------------

describe('parseDomainXml on hostile or malformed documents (XML_ERROR)', () => {
  it('refuses entity expansion ("billion laughs") by refusing the DOCTYPE', () => {
    assertVirtError(() => parseDomainXml(fixture('billion-laughs.xml')), 'XML_ERROR', '<!DOCTYPE> is not allowed', 'ENTITY');
  });
  it('refuses external entities', () => {
    assertVirtError(() => parseDomainXml(fixture('external-entity.xml')), 'XML_ERROR', '<!DOCTYPE> is not allowed');
  });
  it('refuses a DOCTYPE without entities too', () => {
    assertVirtError(() => parseDomainXml(`<!DOCTYPE domain>${domainXml()}`), 'XML_ERROR', '<!DOCTYPE>');
  });
  it('refuses an undeclared entity reference', () => {
    assertVirtError(() => parseDomainXml(domainXml({ top: '<title>&xxe;</title>' })), 'XML_ERROR', 'malformed XML at line 5', 'undefined entity');
  });
  it('refuses documents over 1 MiB before parsing', () => {
    const big = domainXml({ top: `<description>${'x'.repeat(MAX_XML_BYTES)}</description>` });
    assertVirtError(() => parseDomainXml(big), 'XML_ERROR', 'over the 1048576-byte limit');
  });
  it('counts the limit in UTF-8 bytes, not characters', () => {
    const chars = Math.ceil(MAX_XML_BYTES / 3); // each '\u20ac' is 3 bytes
    assertVirtError(() => parseDomainXml(domainXml({ top: `<description>${'\u20ac'.repeat(chars)}</description>` })), 'XML_ERROR', 'byte limit');
  });
  it('refuses absurd nesting', () => {
    const deep = `${'<a>'.repeat(MAX_XML_DEPTH + 1)}${'</a>'.repeat(MAX_XML_DEPTH + 1)}`;
    assertVirtError(() => parseDomainXml(domainXml({ top: `<metadata>${deep}</metadata>` })), 'XML_ERROR', `deeper than ${MAX_XML_DEPTH}`);
  });
  const malformed: Array<[string, string, string]> = [
    ['an unclosed element', "<domain type='qemu'>\n  <name>t</name>\n  <memory>1", 'line 3'],
    ['a mismatched close tag', "<domain type='qemu'>\n<name>t</nam>\n</domain>", 'line 2'],
    ['two root elements', "<domain type='qemu'/>\n<domain type='qemu'/>", 'line 2'],
    ['text outside the root', "<domain type='qemu'/>trailing", 'line 1'],
    ['a duplicate attribute', "<domain type='qemu' type='kvm'/>", 'duplicate'],
    ['an unquoted attribute', '<domain type=qemu/>', 'line 1'],
    ['an empty document', '', 'malformed XML'],
    ['not XML at all', '{"name": "vm"}', 'malformed XML'],
  ];
  for (const [what, text, part] of malformed) {
    it(what, () => assertVirtError(() => parseDomainXml(text), 'XML_ERROR', 'XML', part));
  }
  it('reports the 1-based line and column of the offending character', () => {
    assertVirtError(() => parseDomainXml("<domain type='qemu'>\n  <name>t</nam>\n</domain>"), 'XML_ERROR', 'line 2, column 15');
  });
});

describe('xml-tree', () => {
  it('keeps attribute names like __proto__ and constructor as plain data', () => {
    const root = parseXmlTree("<a constructor='x' __proto__='y' toString='z'/>");
    assert.equal(root.attrs['constructor'], 'x');
    assert.equal(root.attrs['__proto__'], 'y');
    assert.equal(root.attrs['toString'], 'z');
    assert.equal(parseXmlTree('<a/>').attrs['constructor'], undefined);
  });
  it('joins text and CDATA, decodes references', () => {
    assert.equal(parseXmlTree('<a>x &amp; <![CDATA[<y>]]> &#65;&#x42;</a>').text, 'x & <y> AB');
  });
  it('serialises and re-parses text with every special character unchanged', () => {
    const nasty = `a&b<c>d'e"f\r\ng\th ]]> &amp;`;
    const xml = formatXmlTree(element('r', { v: nasty }, [element('t', {}, [], nasty)]));
    const back = parseXmlTree(xml);
    assert.equal(back.attrs['v'], nasty);
    assert.equal(back.children[0]?.text, nasty);
  });
});
