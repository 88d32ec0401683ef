/**
 * `translate` / `memmap` output: address parsing, sizes, the text a person reads top to bottom,
 * JSON with 64-bit values as strings; and the page cache the translator uses for batches.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { UsageError } from '../../src/cli/args.js';
import { parseAddress } from '../../src/cli/inspect-commands.js';
import { formatBytes, formatMemoryMap, formatTranslation } from '../../src/cli/inspect-format.js';
import { memoryMapJson, translationJson } from '../../src/inspect/json.js';
import { GuestPhysMap } from '../../src/inspect/guest-phys-map.js';
import { parseFlatView } from '../../src/inspect/hmp-mtree.js';
import { parseRamBlocks } from '../../src/inspect/hmp-ramblock.js';
import type { MemoryMapReport, Translation } from '../../src/inspect/inspector.js';
import { PageCache } from '../../src/inspect/phys-reader.js';
import { walkSync, type PhysReadRequest } from '../../src/inspect/walk.js';
import { parseMemoryDevice } from '../../src/qmp/index.js';

const FIXTURES = new URL('../../../test/fixtures/inspect/', import.meta.url);
const fixture = (name: string): string => readFileSync(new URL(name, FIXTURES), 'utf8');

describe('parseAddress', () => {
  const ok: Array<[string, bigint]> = [
    ['0x1000', 0x1000n], ['1000', 0x1000n], ['ffffffffa6998480', 0xffff_ffff_a699_8480n], ['0XFFFF_8880_0000_0000', 0xffff_8880_0000_0000n],
    ['ffffffff`81000000', 0xffff_ffff_8100_0000n], ['0xffffffffffffffff', (1n << 64n) - 1n], ['0', 0n],
  ];
  for (const [text, v] of ok) it(`'${text}'`, () => assert.equal(parseAddress(text, 'address'), v));
  for (const bad of ['', '0x', 'xyz', '0x1ffffffffffffffff', '-1', '12 34', '0x10g']) {
    it(`refuses '${bad}'`, () => assert.throws(() => parseAddress(bad, 'address'), (e: unknown) => e instanceof UsageError && /invalid address/.test(e.message)));
  }
});

describe('formatBytes', () => {
  const cases: Array<[number, string]> = [[0, '0 bytes'], [1024, '1 KiB'], [780 * 1024, '780 KiB'], [511 * 1024 * 1024, '511 MiB'],
    [0xdebf8000, '3.48 GiB'], [1024 ** 3, '1 GiB'], [1536 * 1024 * 1024, '1.50 GiB']];
  for (const [n, s] of cases) it(`${n} -> ${s}`, () => assert.equal(formatBytes(n), s));
});

function mappedTranslation(): Translation {
  const map = GuestPhysMap.build({
    ranges: parseFlatView(fixture('plain-mtree-f.txt')), ramBlocks: parseRamBlocks(fixture('plain-ramblock.txt')),
    ramBlockHva: new Map([['pc.ram', 0x7f72_3fe0_0000n]]), memoryDevices: [],
  });
  const entries = new Map<bigint, bigint>();
  const fx = JSON.parse(fixture('walk-user-4k.json')) as { entries: Array<{ address: string; value: string }> };
  for (const e of fx.entries) entries.set(BigInt(e.address), BigInt(e.value));
  const walk = walkSync({ gva: 0x31c02000n, cr3: 0x1ff3c000n, mode: '5-level' }, (r) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(entries.get(r.gpa) ?? 0n);
    return b;
  });
  assert.equal(walk.kind, 'mapped');
  const gpa = walk.kind === 'mapped' ? walk.gpa : 0n;
  return {
    domain: 'g1', qemuPid: 7360, gva: 0x31c02000n, cpu: 0, cr3Source: 'option', mode: '5-level', pcid: null, readVia: 'proc-mem', walk,
    target: {
      gpa, region: map.locate(gpa), ramBlockOffset: gpa, hva: map.hvaOf(gpa), hpa: { hpa: 0x1_9292_f000n }, notMemory: null,
      bytes: Buffer.from('VIRTMEM!VIRTMEM!'), bytesUnread: null,
    },
    notes: [],
  };
}

describe('translate output', () => {
  it('text: the walk, then GVA -> GPA -> region -> HVA -> HPA -> bytes, in that order', () => {
    const text = formatTranslation(mappedTranslation());
    const order = ['Translation of 0x31c02000', '5-level paging', 'Page-table walk', ' PML5 ', ' PML4 ', ' PDPT ', ' PD ', ' PT ',
      '  GVA 0x0000000031c02000', '  GPA 0x000000001f12f000  4 KiB page', '  in  region pc.ram (ram) 0x100000-0x1fffffff; RAM block pc.ram at offset 0x1f12f000',
      '  HVA 0x00007f725ef2f000', '  HPA 0x000000019292f000', 'VIRTMEM!VIRTMEM!'];
    let at = -1;
    for (const s of order) {
      const next = text.indexOf(s, at + 1);
      assert.ok(next > at, `'${s}' after position ${at} in:\n${text}`);
      at = next;
    }
    assert.match(text, /present writable user accessed dirty no-execute {2}-> page/);
    assert.ok(text.endsWith('\n\n'), 'ends like every virsh command');
  });
  it('JSON: 64-bit values as hex strings, sizes as numbers', () => {
    const j = translationJson(mappedTranslation()) as Record<string, unknown> & { walk: { steps: Array<{ entry: string }>; pageSizeBytes: number } };
    assert.equal(j.gva, '0x31c02000');
    assert.equal(j.gpa, '0x1f12f000');
    assert.equal(j.hva, '0x7f725ef2f000');
    assert.equal(j.hpa, '0x19292f000');
    assert.equal(j.walk.steps[4]?.entry, '0x800000001f12f867');
    assert.equal(j.walk.pageSizeBytes, 4096);
    assert.doesNotThrow(() => JSON.stringify(j), 'no BigInt left');
  });
  it('text: an unmapped address names the level', () => {
    const t = mappedTranslation();
    const walk = walkSync({ gva: 0x1000n, cr3: 0x1ff3c000n, mode: '5-level' }, () => Buffer.alloc(8));
    const text = formatTranslation({ ...t, gva: 0x1000n, walk, target: null });
    assert.match(text, /0x1000 is not mapped: the PML5 entry \(index 0\) is not present, so the walk stopped at the PML5 level\./);
    assert.match(text, /PML5 .* not present/);
    assert.equal((translationJson({ ...t, gva: 0x1000n, walk, target: null }) as { walk: { stoppedAt: string } }).walk.stoppedAt, 'PML5');
  });
});

describe('memmap output', () => {
  const report = (): MemoryMapReport => {
    const map = GuestPhysMap.build({
      ranges: parseFlatView(fixture('vmem-mtree-f.txt')), ramBlocks: parseRamBlocks(fixture('vmem-ramblock.txt')),
      ramBlockHva: new Map([['pc.ram', 0x7efe_93e0_0000n], ['0000:00:03.0/mem-vmem0', 0x7efe_bbe0_0000n]]),
      memoryDevices: (JSON.parse(fixture('vmem-memory-devices-plugged.json')) as unknown[]).map((d) => parseMemoryDevice(d)),
    });
    return {
      domain: 'vmem', qemuPid: 5354,
      regions: map.regions.map((r) => ({ ...r, residentBytes: r.hva === null ? null : 4096, swappedBytes: r.hva === null ? null : 0 })),
      ramBlocks: parseRamBlocks(fixture('vmem-ramblock.txt')).map((b) => ({ ...b, hva: null, mapped: false, residentBytes: null })),
      memoryDevices: map.regions.filter((r) => r.memoryDevice).map((r) => r.memoryDevice!),
      residencyUnavailable: null,
    };
  };
  it('text: the map in address order, the virtio-mem line, the RAM blocks', () => {
    const text = formatMemoryMap(report());
    assert.match(text, /0x0000000000100000 +0x000000001fffffff +511 MiB +ram +pc\.ram @0x100000 +0x00007efe93f00000 +4 KiB/);
    assert.match(text, /0x0000000020000000 +0x00000000febf7fff +3\.48 GiB +hole/);
    assert.match(text, /device \(i\/o\) +hpet/);
    assert.match(text, /0x0000000100000000 +0x000000013fffffff +1 GiB +ram +mem-vmem0 \(virtio-mem vmem0\)/);
    assert.match(text, /virtio-mem vmem0 at 0x100000000-0x13fffffff: 256 MiB of 1 GiB plugged \(requested 256 MiB, blocks of 2 MiB\)/);
    assert.ok(text.indexOf('RAM blocks') > text.indexOf('virtio-mem vmem0 at'));
  });
  it('JSON: regions with hex addresses and byte sizes', () => {
    const j = memoryMapJson(report()) as { regions: Array<{ start: string; sizeBytes: number; kind: string; memoryDevice: { pluggedBytes: number } | null }> };
    const v = j.regions.find((r) => r.memoryDevice);
    assert.deepEqual([v?.start, v?.sizeBytes, v?.kind, v?.memoryDevice?.pluggedBytes], ['0x100000000', 1024 ** 3, 'ram', 256 * 1024 * 1024]);
    assert.doesNotThrow(() => JSON.stringify(j));
  });
});

describe('PageCache', () => {
  const backing = (): { read: (r: PhysReadRequest) => Uint8Array | { unreadable: string }; calls: PhysReadRequest[] } => {
    const calls: PhysReadRequest[] = [];
    return {
      calls,
      read: (r) => {
        calls.push(r);
        if (r.gpa >= 0x10000n) return { unreadable: 'hole' };
        const b = Buffer.alloc(r.length);
        for (let i = 0; i < r.length; i++) b[i] = Number((r.gpa + BigInt(i)) & 0xffn);
        return b;
      },
    };
  };
  it('reads a whole page once and answers later reads in it from memory', () => {
    const b = backing();
    const cache = new PageCache();
    const read = cache.sync(b.read);
    const x = read({ gpa: 0x1008n, length: 8 });
    const y = read({ gpa: 0x1ff8n, length: 8 });
    assert.deepEqual([...(x as Uint8Array)], [8, 9, 10, 11, 12, 13, 14, 15]);
    assert.equal((y as Uint8Array)[0], 0xf8);
    assert.deepEqual(b.calls, [{ gpa: 0x1000n, length: 4096 }]);
    assert.equal(cache.misses, 1);
  });
  it('reads crossing a page boundary bypass it; unreadable answers are kept', () => {
    const b = backing();
    const cache = new PageCache();
    const read = cache.sync(b.read);
    read({ gpa: 0x1ffcn, length: 8 });
    assert.deepEqual(read({ gpa: 0x20000n, length: 8 }), { unreadable: 'hole' });
    assert.deepEqual(read({ gpa: 0x20008n, length: 8 }), { unreadable: 'hole' });
    assert.deepEqual(b.calls, [{ gpa: 0x1ffcn, length: 8 }, { gpa: 0x20000n, length: 4096 }]);
  });
  it('async readers too', async () => {
    const b = backing();
    const read = new PageCache().async(async (r) => b.read(r));
    await read({ gpa: 0x3010n, length: 8 });
    await read({ gpa: 0x3018n, length: 8 });
    assert.equal(b.calls.length, 1);
  });
});
