/**
 * The page-table walk against fake guest memory (every outcome) and against page tables
 * recorded from the built-in guest (test/fixtures/inspect/walk-*.json).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { walkAsync, walkSteps, walkSync, type PhysReadAnswer, type PhysReadRequest, type WalkOutcome, type WalkRequest } from '../../src/inspect/walk.js';
import { pagingMode, type LevelName } from '../../src/inspect/paging.js';

const FIXTURES = new URL('../../../test/fixtures/inspect/', import.meta.url);

/** Guest memory holding only page-table entries; reads elsewhere are "not RAM". */
class FakeMemory {
  readonly entries = new Map<bigint, bigint>();
  readonly reads: PhysReadRequest[] = [];
  /** Tables at or above this GPA are "not RAM". */
  ramEnd = 1n << 40n;

  set(table: bigint, index: number, value: bigint): this {
    this.entries.set(table + BigInt(index * 8), value);
    return this;
  }

  read = (req: PhysReadRequest): PhysReadAnswer => {
    this.reads.push(req);
    if (req.gpa >= this.ramEnd) return { unreadable: `0x${req.gpa.toString(16)} is a hole` };
    const b = Buffer.alloc(req.length);
    b.writeBigUInt64LE(this.entries.get(req.gpa) ?? 0n);
    return b;
  };
}

const T = 0x67n; // present writable user accessed dirty: what Linux puts in table entries
const idx = (gva: bigint, shift: number): number => Number((gva >> BigInt(shift)) & 0x1ffn);

/** Page tables for `gva` -> `page` with a leaf at `leafLevel` (4-level or 5-level). */
function mapAddress(mem: FakeMemory, five: boolean, gva: bigint, page: bigint, leafLevel: LevelName, leafFlags = 0x8000_0000_0000_0067n): bigint {
  const levels: Array<[LevelName, number]> = [['PML5', 48], ['PML4', 39], ['PDPT', 30], ['PD', 21], ['PT', 12]];
  const used = five ? levels : levels.slice(1);
  const root = 0x10_0000n;
  let table = root;
  let next = 0x20_0000n;
  for (const [level, shift] of used) {
    if (level === leafLevel) {
      mem.set(table, idx(gva, shift), page | leafFlags | (level === 'PT' ? 0n : 0x80n));
      break;
    }
    mem.set(table, idx(gva, shift), next | T);
    table = next;
    next += 0x1000n;
  }
  return root;
}

describe('walk: mapped', () => {
  it('5-level, 4 KiB page: five 8-byte reads at table + 8 * index, offset kept', () => {
    const mem = new FakeMemory();
    const gva = 0x31c02abcn;
    const cr3 = mapAddress(mem, true, gva & ~0xfffn, 0x1f12f000n, 'PT');
    const w = walkSync({ gva, cr3, mode: '5-level' }, mem.read);
    assert.equal(w.kind, 'mapped');
    if (w.kind !== 'mapped') return;
    assert.equal(w.gpa, 0x1f12fabcn);
    assert.equal(w.pageGpa, 0x1f12f000n);
    assert.equal(w.pageSizeBytes, 4096);
    assert.deepEqual(w.steps.map((s) => s.level), ['PML5', 'PML4', 'PDPT', 'PD', 'PT']);
    assert.deepEqual(mem.reads.map((r) => r.length), [8, 8, 8, 8, 8]);
    assert.equal(mem.reads[0]!.gpa, cr3 + BigInt(idx(gva, 48) * 8));
    assert.equal(w.steps[3]!.index, 398);
    assert.deepEqual(w.access, { writable: true, user: true, executable: false });
  });
  it('4-level, 2 MiB page', () => {
    const mem = new FakeMemory();
    const gva = 0xffff_8880_1f12_f123n;
    const cr3 = mapAddress(mem, false, gva, 0x1f000000n, 'PD', 0x8000_0000_0000_0163n);
    const w = walkSync({ gva, cr3, mode: '4-level' }, mem.read);
    assert.equal(w.kind, 'mapped');
    if (w.kind !== 'mapped') return;
    assert.equal(w.gpa, 0x1f12f123n);
    assert.equal(w.pageSizeBytes, 2 * 1024 * 1024);
    assert.equal(w.steps.length, 3);
    assert.equal(w.steps[2]!.flags.hugePage, true);
  });
  it('5-level, 1 GiB page', () => {
    const mem = new FakeMemory();
    const gva = 0xff46_a5a3_5f12_f123n;
    const cr3 = mapAddress(mem, true, gva, 0x4000_0000n, 'PDPT');
    const w = walkSync({ gva, cr3, mode: '5-level' }, mem.read);
    assert.equal(w.kind, 'mapped');
    if (w.kind !== 'mapped') return;
    assert.equal(w.pageSizeBytes, 1024 ** 3);
    assert.equal(w.gpa, 0x4000_0000n + (gva & 0x3fff_ffffn));
  });
  it('access rights: writable/user AND over levels, no-execute OR', () => {
    const mem = new FakeMemory();
    const gva = 0x40_0000n;
    const cr3 = mapAddress(mem, false, gva, 0x5000n, 'PT', 0x63n); // leaf: not user, not NX
    let w = walkSync({ gva, cr3, mode: '4-level' }, mem.read);
    assert.deepEqual(w.kind === 'mapped' && w.access, { writable: true, user: false, executable: true });
    mem.set(cr3, 0, 0x20_0000n | 0x8000_0000_0000_0025n); // PML4 entry: read-only, NX
    w = walkSync({ gva, cr3, mode: '4-level' }, mem.read);
    assert.deepEqual(w.kind === 'mapped' && w.access, { writable: false, user: false, executable: false });
    w = walkSync({ gva, cr3, mode: '4-level', nx: false }, mem.read);
    assert.equal(w.kind, 'reserved-bit', 'XD set while EFER.NXE is off');
  });
  it('PCID bits of CR3 are masked', () => {
    const mem = new FakeMemory();
    const cr3 = mapAddress(mem, false, 0x40_0000n, 0x5000n, 'PT');
    assert.equal(walkSync({ gva: 0x40_0000n, cr3: cr3 | 0x801n, mode: '4-level' }, mem.read).kind, 'mapped');
  });
  it('paging off: guest-physical = guest-virtual, nothing read', () => {
    const mem = new FakeMemory();
    const w = walkSync({ gva: 0x1234n, cr3: 0n, mode: 'off' }, mem.read);
    assert.equal(w.kind === 'mapped' && w.gpa, 0x1234n);
    assert.equal(mem.reads.length, 0);
  });
});

describe('walk: no translation', () => {
  for (const level of ['PML5', 'PML4', 'PDPT', 'PD', 'PT'] as const) {
    it(`not present at ${level}: stops there and names it`, () => {
      const mem = new FakeMemory();
      const gva = 0x7f00_1234_5000n;
      const cr3 = mapAddress(mem, true, gva, 0x9000n, 'PT');
      const step = ['PML5', 'PML4', 'PDPT', 'PD', 'PT'].indexOf(level);
      const probe = walkSync({ gva, cr3, mode: '5-level' }, mem.read);
      mem.set(probe.steps[step]!.tableGpa, probe.steps[step]!.index, 0x1234_5000n); // present bit clear
      const w = walkSync({ gva, cr3, mode: '5-level' }, mem.read);
      assert.equal(w.kind, 'not-present');
      assert.equal(w.kind === 'not-present' && w.level, level);
      assert.equal(w.steps.length, step + 1);
    });
  }
  it('non-canonical: nothing is read', () => {
    const mem = new FakeMemory();
    const w = walkSync({ gva: 0x0100_0000_0000_0000n, cr3: 0x1000n, mode: '5-level' }, mem.read);
    assert.equal(w.kind, 'non-canonical');
    assert.equal(w.kind === 'non-canonical' && w.vaBits, 57);
    assert.equal(mem.reads.length, 0);
    assert.equal(walkSync({ gva: 0x0000_8000_0000_0000n, cr3: 0x1000n, mode: '4-level' }, mem.read).kind, 'non-canonical');
    assert.equal(walkSync({ gva: 0x0000_8000_0000_0000n, cr3: 0x1000n, mode: '5-level' }, mem.read).kind, 'not-present');
  });
  it('a table outside RAM: table-unreadable with the reader\'s reason', () => {
    const mem = new FakeMemory();
    mem.ramEnd = 0x4000_0000n;
    const w = walkSync({ gva: 0x1000n, cr3: 0x4000_0000n, mode: '5-level' }, mem.read);
    assert.equal(w.kind, 'table-unreadable');
    if (w.kind !== 'table-unreadable') return;
    assert.equal(w.level, 'PML5');
    assert.equal(w.tableGpa, 0x4000_0000n);
    assert.match(w.reason, /hole/);
  });
  it('a short read is unreadable, not a crash', () => {
    const w = walkSync({ gva: 0x1000n, cr3: 0x1000n, mode: '4-level' }, () => new Uint8Array(4));
    assert.equal(w.kind, 'table-unreadable');
  });
  it('reserved bit: PS in a PML4 entry', () => {
    const mem = new FakeMemory();
    mem.set(0x1000n, 0, 0x2000n | 0x83n);
    const w = walkSync({ gva: 0x1000n, cr3: 0x1000n, mode: '4-level' }, mem.read);
    assert.equal(w.kind, 'reserved-bit');
    assert.equal(w.kind === 'reserved-bit' && w.level, 'PML4');
  });
  it('PAE and 32-bit paging are named as unsupported', () => {
    const mem = new FakeMemory();
    for (const mode of ['pae', '32-bit'] as const) {
      const w = walkSync({ gva: 0x1000n, cr3: 0x1000n, mode }, mem.read);
      assert.equal(w.kind, 'unsupported-mode');
      assert.match(w.kind === 'unsupported-mode' ? w.reason : '', /4-level and 5-level/);
    }
  });
});

describe('walk: KPTI', () => {
  // The user copy of a process's top-level table sits 4 KiB above the kernel copy (CR3 bit 12).
  const kernelRoot = 0x1fef4000n;
  const userRoot = 0x1fef5000n;
  const gva = 0xffff_ffff_9919_8480n;
  function tables(kernelMaps: boolean): FakeMemory {
    const mem = new FakeMemory();
    mem.set(userRoot, idx(gva, 48), 0x2000_0000n | 0x63n); // user copy: PML5 -> PML4 without the kernel's PDPT
    if (kernelMaps) {
      mem.set(kernelRoot, idx(gva, 48), 0x3000_0000n | 0x63n);
      mem.set(0x3000_0000n, idx(gva, 39), 0x3000_1000n | 0x63n);
      mem.set(0x3000_1000n, idx(gva, 30), 0x3000_2000n | 0x63n);
      mem.set(0x3000_2000n, idx(gva, 21), 0x1560_0000n | 0xe1n);
    }
    return mem;
  }
  it('a kernel address the user copy lacks is walked in the kernel copy, with a note', () => {
    const w = walkSync({ gva, cr3: userRoot, mode: '5-level' }, tables(true).read);
    assert.equal(w.kind, 'mapped');
    assert.equal(w.kind === 'mapped' && w.gpa, 0x1579_8480n);
    assert.equal(w.rootGpa, kernelRoot);
    assert.equal(w.cr3, userRoot);
    assert.match(w.notes.join(' '), /KPTI.*kernel copy 4 KiB below \(0x1fef4000\) was walked/);
  });
  it('when neither copy maps it, the user copy\'s answer stands, with a note', () => {
    const w = walkSync({ gva, cr3: userRoot, mode: '5-level' }, tables(false).read);
    assert.equal(w.kind, 'not-present');
    assert.equal(w.rootGpa, userRoot);
    assert.match(w.notes.join(' '), /does not map it either/);
  });
  it('no fallback for user addresses, an even CR3, or when disabled', () => {
    assert.equal(walkSync({ gva: 0x1000n, cr3: userRoot, mode: '5-level' }, tables(true).read).notes.length, 0);
    assert.equal(walkSync({ gva, cr3: kernelRoot + 0x2000n, mode: '5-level' }, tables(true).read).kind, 'not-present');
    assert.equal(walkSync({ gva, cr3: userRoot, mode: '5-level', kptiFallback: false }, tables(true).read).kind, 'not-present');
  });
});

describe('walk: drivers', () => {
  it('walkAsync gives what walkSync gives', async () => {
    const mem = new FakeMemory();
    const cr3 = mapAddress(mem, true, 0x31c02000n, 0x1f12f000n, 'PT');
    const req: WalkRequest = { gva: 0x31c02010n, cr3, mode: '5-level' };
    assert.deepEqual(await walkAsync(req, async (r) => mem.read(r)), walkSync(req, mem.read));
  });
  it('the generator yields exactly the reads, and can be fed by hand', () => {
    const mem = new FakeMemory();
    const cr3 = mapAddress(mem, false, 0x40_0000n, 0x5000n, 'PT');
    const gen = walkSteps({ gva: 0x40_0000n, cr3, mode: '4-level' });
    let n = 0;
    let r = gen.next();
    while (!r.done) {
      n++;
      r = gen.next(mem.read(r.value));
    }
    assert.equal(n, 4);
    assert.equal(r.value.kind, 'mapped');
  });
});

describe('walk: page tables recorded from the built-in guest', () => {
  interface Recorded {
    description: string; gva: string; cr3: string; cr0: string; cr4: string; efer: string;
    entries: Array<{ level: string; address: string; value: string }>;
    expected: { gpa: string; pageSizeBytes: number; oracle: string };
  }
  for (const file of ['walk-user-4k.json', 'walk-directmap-2m.json', 'walk-kpti-user-cr3.json']) {
    const fx = JSON.parse(readFileSync(new URL(file, FIXTURES), 'utf8')) as Recorded;
    it(`${file}: ${fx.description}`, () => {
      const mem = new FakeMemory();
      for (const e of fx.entries) mem.entries.set(BigInt(e.address), BigInt(e.value));
      const mode = pagingMode({ cr0: BigInt(fx.cr0), cr4: BigInt(fx.cr4), efer: BigInt(fx.efer) });
      assert.equal(mode, '5-level');
      const w: WalkOutcome = walkSync({ gva: BigInt(fx.gva), cr3: BigInt(fx.cr3), mode }, mem.read);
      assert.equal(w.kind, 'mapped', fx.expected.oracle);
      if (w.kind !== 'mapped') return;
      assert.equal(`0x${w.gpa.toString(16)}`, fx.expected.gpa, fx.expected.oracle);
      assert.equal(w.pageSizeBytes, fx.expected.pageSizeBytes);
      // Every recorded entry (and only those) was read.
      assert.deepEqual(mem.reads.map((r) => `0x${r.gpa.toString(16)}`).sort(), fx.entries.map((e) => e.address).sort());
    });
  }
});
