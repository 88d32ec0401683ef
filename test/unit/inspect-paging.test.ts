/** x86-64 paging arithmetic: modes, canonical form, indices, entry decoding (Intel SDM 3A ch. 4). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  cr3Pcid, cr3TableAddress, decodeEntry, flagWords, indexAt, indicesOf, isCanonical, leafSizeBytes, levelsOf, nxEnabled, pagingMode,
} from '../../src/inspect/paging.js';

// Registers of the built-in guest (test/fixtures/inspect/plain-registers-idle.txt).
const CR0 = 0x80050033n;
const CR4_LA57 = 0x751eb0n;
const EFER = 0xd01n;

describe('pagingMode', () => {
  it('reads the recorded guest as 5-level (CR4.LA57)', () => assert.equal(pagingMode({ cr0: CR0, cr4: CR4_LA57, efer: EFER }), '5-level'));
  it('4-level without LA57', () => assert.equal(pagingMode({ cr0: CR0, cr4: CR4_LA57 & ~(1n << 12n), efer: EFER }), '4-level'));
  it('PAE without EFER.LMA', () => assert.equal(pagingMode({ cr0: CR0, cr4: 0x20n, efer: 0n }), 'pae'));
  it('legacy 32-bit without CR4.PAE', () => assert.equal(pagingMode({ cr0: CR0, cr4: 0n, efer: 0n }), '32-bit'));
  it('off without CR0.PG', () => assert.equal(pagingMode({ cr0: 0x11n, cr4: 0n, efer: 0n }), 'off'));
  it('NX follows EFER.NXE', () => {
    assert.equal(nxEnabled(EFER), true);
    assert.equal(nxEnabled(0x500n), false);
  });
  it('levels top down', () => {
    assert.deepEqual(levelsOf('5-level'), ['PML5', 'PML4', 'PDPT', 'PD', 'PT']);
    assert.deepEqual(levelsOf('4-level'), ['PML4', 'PDPT', 'PD', 'PT']);
    assert.deepEqual(levelsOf('pae'), []);
  });
  it('leaf sizes', () => {
    assert.equal(leafSizeBytes('PT'), 4096);
    assert.equal(leafSizeBytes('PD'), 2 * 1024 * 1024);
    assert.equal(leafSizeBytes('PDPT'), 1024 * 1024 * 1024);
  });
});

describe('isCanonical', () => {
  const cases: Array<[bigint, boolean, boolean]> = [
    // address, canonical with 4-level, canonical with 5-level
    [0n, true, true],
    [0x0000_7fff_ffff_ffffn, true, true],
    [0x0000_8000_0000_0000n, false, true],
    [0xffff_8000_0000_0000n, true, true],
    [0xffff_7fff_ffff_ffffn, false, true],
    [0x00ff_ffff_ffff_ffffn, false, true],
    [0x0100_0000_0000_0000n, false, false],
    [0xff00_0000_0000_0000n, false, true],
    [0xfeff_ffff_ffff_ffffn, false, false],
    [0xffff_ffff_ffff_ffffn, true, true],
    [0xff46_a5a3_1f12_f000n, false, true], // a direct-map address of the LA57 guest
  ];
  for (const [a, four, five] of cases) {
    it(`0x${a.toString(16)}: 4-level ${four}, 5-level ${five}`, () => {
      assert.equal(isCanonical(a, '4-level'), four);
      assert.equal(isCanonical(a, '5-level'), five);
    });
  }
});

describe('indexAt', () => {
  it('splits a 5-level kernel address', () => {
    const gva = 0xff46_a5a3_1f12_f000n; // walked on a real guest: 326 / 331 / 140 / 248 (2 MiB page)
    assert.deepEqual(['PML5', 'PML4', 'PDPT', 'PD', 'PT'].map((l) => indexAt(gva, l as 'PT')), [326, 331, 140, 248, 303]);
  });
  it('indicesOf (32-bit halves) agrees with indexAt for every level', () => {
    const levels = ['PML5', 'PML4', 'PDPT', 'PD', 'PT'] as const;
    let x = 0x12345678n;
    for (let i = 0; i < 500; i++) {
      x = (x * 6364136223846793005n + 1442695040888963407n) & ((1n << 64n) - 1n);
      assert.deepEqual(indicesOf(x, levels), levels.map((l) => indexAt(x, l)), `0x${x.toString(16)}`);
    }
  });
  it('splits a user address', () => {
    assert.deepEqual(['PML5', 'PML4', 'PDPT', 'PD', 'PT'].map((l) => indexAt(0x31c02000n, l as 'PT')), [0, 0, 0, 398, 2]);
  });
});

describe('CR3', () => {
  it('table address is bits 51:12; PCID or PWT/PCD bits are dropped', () => {
    assert.equal(cr3TableAddress(0x1ff3c000n), 0x1ff3c000n);
    assert.equal(cr3TableAddress(0x1ff3c801n), 0x1ff3c000n);
    assert.equal(cr3TableAddress(0x8000_0000_1ff3_c018n), 0x1ff3c000n); // bit 63 = no-flush hint
  });
  it('PCID only with CR4.PCIDE', () => {
    assert.equal(cr3Pcid(0x1ff3c801n, CR4_LA57), null);
    assert.equal(cr3Pcid(0x1ff3c801n, CR4_LA57 | (1n << 17n)), 0x801);
  });
});

describe('decodeEntry', () => {
  it('a user 4 KiB PTE (recorded: 0x800000001f12f867)', () => {
    const d = decodeEntry(0x8000_0000_1f12_f867n, 'PT');
    assert.equal(d.leaf, true);
    assert.equal(d.address, 0x1f12f000n);
    assert.deepEqual(d.flags, {
      present: true, writable: true, user: true, writeThrough: false, cacheDisabled: false, accessed: true,
      hugePage: false, noExecute: true, dirty: true, global: false, protectionKey: 0,
    });
    assert.equal(d.reservedBitProblem, undefined);
    assert.deepEqual(flagWords(d.flags), ['present', 'writable', 'user', 'accessed', 'dirty', 'no-execute']);
  });
  it('a table entry: no dirty/global (those bits are ignored there)', () => {
    const d = decodeEntry(0x190fd067n, 'PML5');
    assert.equal(d.leaf, false);
    assert.equal(d.address, 0x190fd000n);
    assert.equal(d.flags.dirty, undefined);
    assert.equal(d.flags.global, undefined);
    assert.deepEqual(flagWords(d.flags), ['present', 'writable', 'user', 'accessed']);
  });
  it('a 2 MiB direct-map page (recorded: 0x800000001f0001e3)', () => {
    const d = decodeEntry(0x8000_0000_1f00_01e3n, 'PD');
    assert.equal(d.leaf, true);
    assert.equal(d.flags.hugePage, true);
    assert.equal(d.flags.global, true);
    assert.equal(d.address, 0x1f000000n);
  });
  it('a 2 MiB page with PAT (bit 12) keeps its frame address', () => {
    const d = decodeEntry(0x1f0010e3n, 'PD');
    assert.equal(d.address, 0x1f000000n);
    assert.equal(d.reservedBitProblem, undefined);
  });
  it('a 1 GiB page', () => {
    const d = decodeEntry(0x4000_00e3n, 'PDPT');
    assert.equal(d.leaf, true);
    assert.equal(d.address, 0x40000000n);
  });
  it('PS at PT level is PAT, not a huge page', () => {
    const d = decodeEntry(0x1000_0083n, 'PT');
    assert.equal(d.flags.hugePage, false);
    assert.equal(d.address, 0x10000000n);
  });
  it('reserved: PS in a PML4/PML5 entry', () => {
    assert.match(decodeEntry(0x1000_0083n, 'PML4').reservedBitProblem ?? '', /PS.*PML4/);
    assert.match(decodeEntry(0x1000_0083n, 'PML5').reservedBitProblem ?? '', /PML5/);
  });
  it('reserved: low frame bits of a huge page', () => {
    assert.match(decodeEntry(0x1f00_20e3n, 'PD').reservedBitProblem ?? '', /2 MiB/);
    assert.match(decodeEntry(0x4020_00e3n, 'PDPT').reservedBitProblem ?? '', /1 GiB/);
  });
  it('reserved: XD without EFER.NXE', () => {
    assert.match(decodeEntry(0x8000_0000_1f12_f867n, 'PT', false).reservedBitProblem ?? '', /NXE/);
  });
  it('not present: no reserved-bit complaints (the other bits belong to the OS)', () => {
    const d = decodeEntry(0x1000_0082n, 'PML4');
    assert.equal(d.flags.present, false);
    assert.equal(d.reservedBitProblem, undefined);
  });
  it('protection key of a leaf', () => {
    assert.equal(decodeEntry(0x3800_0000_1f12_f867n, 'PT').flags.protectionKey, 7);
    assert.deepEqual(flagWords(decodeEntry(0x3800_0000_1f12_f867n, 'PT').flags).at(-1), 'pkey=7');
  });
});
