/**
 * The guest-physical map built from recorded QEMU output: ranges, holes, RAM blocks, host
 * addresses, virtio-mem; and the host page-map decoding.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { GuestPhysMap, isMemory, whyNotMemory } from '../../src/inspect/guest-phys-map.js';
import { parseFlatView } from '../../src/inspect/hmp-mtree.js';
import { parseRamBlocks } from '../../src/inspect/hmp-ramblock.js';
import { parseMemoryDevice } from '../../src/qmp/index.js';
import { decodePagemapEntry, hostPhysFromEntry } from '../../src/inspect/host-pagemap.js';

const FIXTURES = new URL('../../../test/fixtures/inspect/', import.meta.url);
const fixture = (name: string): string => readFileSync(new URL(name, FIXTURES), 'utf8');
const MiB = 1024 * 1024;

function plainMap(): GuestPhysMap {
  return GuestPhysMap.build({
    ranges: parseFlatView(fixture('plain-mtree-f.txt')),
    ramBlocks: parseRamBlocks(fixture('plain-ramblock.txt')),
    ramBlockHva: new Map([['pc.ram', 0x7f72_3fe0_0000n], ['pc.bios', 0x7f72_ace0_0000n]]),
    memoryDevices: [],
  });
}

function vmemMap(file: string): GuestPhysMap {
  const devices = (JSON.parse(fixture(file)) as unknown[]).map((d) => parseMemoryDevice(d));
  return GuestPhysMap.build({
    ranges: parseFlatView(fixture('vmem-mtree-f.txt')),
    ramBlocks: parseRamBlocks(fixture('vmem-ramblock.txt')),
    ramBlockHva: new Map([['pc.ram', 0x7efe_93e0_0000n], ['0000:00:03.0/mem-vmem0', 0x7efe_bbe0_0000n]]),
    memoryDevices: devices,
  });
}

describe('GuestPhysMap', () => {
  it('covers 0 to the last range without gaps; holes fill what QEMU does not list', () => {
    const m = plainMap();
    let next = 0n;
    for (const r of m.regions) {
      assert.equal(r.start, next);
      assert.equal(BigInt(r.sizeBytes), r.end - r.start + 1n);
      next = r.end + 1n;
    }
    const hole = m.locate(0x3000_0000n);
    assert.deepEqual([hole.kind, hole.start, hole.name, hole.hva], ['hole', 0x2000_0000n, null, null]);
  });
  it('RAM and ROM ranges carry their block and host address', () => {
    const m = plainMap();
    const r = m.locate(0x1f12_f000n);
    assert.deepEqual([r.kind, r.name, r.ramBlock, r.start, r.hva], ['ram', 'pc.ram', 'pc.ram', 0x100000n, 0x7f72_3ff0_0000n]);
    assert.equal(m.hvaOf(0x1f12_f123n), 0x7f72_3fe0_0000n + 0x1f12_f123n);
    const rom = m.locate(0xc4000n);
    assert.equal(rom.kind, 'rom');
    assert.equal(m.hvaOf(0xc4000n), 0x7f72_3fe0_0000n + 0xc4000n, 'write-protected RAM is the same mapping');
    assert.equal(m.hvaOf(0xffff_fff0n), 0x7f72_ace0_0000n + 0x3_fff0n);
  });
  it('devices and holes have no host address, and say why', () => {
    const m = plainMap();
    const hpet = m.locate(0xfed0_0010n);
    assert.deepEqual([hpet.kind, hpet.qemuType, hpet.name], ['device', 'i/o', 'hpet']);
    assert.equal(isMemory(hpet), false);
    assert.equal(m.hvaOf(0xfed0_0010n), null);
    assert.match(whyNotMemory(0xfed0_0010n, hpet), /device region "hpet".*side effects/);
    assert.match(whyNotMemory(0x3000_0000n, m.locate(0x3000_0000n)), /hole/);
  });
  it('beyond the last range: a hole to the end of the address space', () => {
    const r = plainMap().locate(0x1_0000_0000n);
    assert.equal(r.kind, 'hole');
    assert.equal(r.start, 0x1_0000_0000n);
    assert.equal(r.end, (1n << 64n) - 1n);
  });
  it('a block without a known host address gives no HVA', () => {
    const m = GuestPhysMap.build({ ranges: parseFlatView(fixture('plain-mtree-f.txt')), ramBlocks: parseRamBlocks(fixture('plain-ramblock.txt')), ramBlockHva: new Map(), memoryDevices: [] });
    assert.equal(m.locate(0x1000n).ramBlock, 'pc.ram');
    assert.equal(m.hvaOf(0x1000n), null);
  });
  it('virtio-mem: the region is the device\'s, with plugged and requested sizes', () => {
    const before = vmemMap('vmem-memory-devices-unplugged.json').locate(0x1_0000_0000n);
    assert.equal(before.kind, 'ram');
    assert.equal(before.ramBlock, '0000:00:03.0/mem-vmem0');
    assert.deepEqual(before.memoryDevice, {
      model: 'virtio-mem', id: 'vmem0', memdev: '/objects/mem-vmem0', regionBytes: 1024 * MiB, pluggedBytes: 0, requestedBytes: 0, blockSizeBytes: 2 * MiB,
    });
    const after = vmemMap('vmem-memory-devices-plugged.json').locate(0x1_3fff_ffffn);
    assert.equal(after.memoryDevice?.pluggedBytes, 256 * MiB);
    assert.equal(after.memoryDevice?.requestedBytes, 256 * MiB);
    assert.equal(after.hva, 0x7efe_bbe0_0000n);
  });
});

describe('host page map entries', () => {
  it('present with a PFN (root)', () => {
    const e = decodePagemapEntry((1n << 63n) | (1n << 56n) | 0x19292fn);
    assert.deepEqual(e, { present: true, swapped: false, pfn: 0x19292fn, exclusive: true, softDirty: false });
    assert.deepEqual(hostPhysFromEntry(0x7fd6_a6f2_f123n, e), { hpa: 0x1_9292_f123n });
  });
  it('present, PFN hidden (no CAP_SYS_ADMIN)', () => {
    const r = hostPhysFromEntry(0x1000n, decodePagemapEntry(1n << 63n));
    assert.match('reason' in r ? r.reason : '', /CAP_SYS_ADMIN/);
  });
  it('not resident, swapped', () => {
    assert.match(JSON.stringify(hostPhysFromEntry(0x1000n, decodePagemapEntry(0n))), /not resident/);
    assert.match(JSON.stringify(hostPhysFromEntry(0x1000n, decodePagemapEntry((1n << 62n) | 0x1234n))), /swapped/);
    assert.equal(decodePagemapEntry((1n << 62n) | 0x1234n).pfn, null, 'a swap entry is not a PFN');
  });
});
