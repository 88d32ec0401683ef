/**
 * x86-64 paging facts as pure functions: which paging mode the control registers select, how a
 * virtual address splits into table indices, canonical form, and what a page-table entry's bits
 * mean. Everything 64-bit is a bigint.
 *
 * Reference: Intel SDM vol. 3A, ch. 4 ("Paging"): 4.5 (4-level and 5-level paging), tables
 * 4-14..4-20 (entry formats); AMD APM vol. 2, 5.3.
 */

/** The paging mode in effect. Only '4-level' and '5-level' are walked. */
export type PagingMode = 'off' | '32-bit' | 'pae' | '4-level' | '5-level';

/** Table levels, top down, with the SDM's names. Linux calls them pgd, p4d, pud, pmd, pte. */
export type LevelName = 'PML5' | 'PML4' | 'PDPT' | 'PD' | 'PT';

/** The control registers that decide how an address is translated. */
export interface ControlRegisters {
  cr0: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
}

const bit = (v: bigint, n: number): boolean => ((v >> BigInt(n)) & 1n) === 1n;

export const CR0_PG = 31;
export const CR4_PAE = 5;
export const CR4_LA57 = 12;
export const CR4_PCIDE = 17;
export const CR4_PKE = 22;
export const EFER_LMA = 10;
export const EFER_NXE = 11;

/** Page size in bytes of a leaf at each level. */
export const PAGE_4K = 4096;
export const PAGE_2M = 2 * 1024 * 1024;
export const PAGE_1G = 1024 * 1024 * 1024;

/** Bits 51:12: the address field of CR3 and of every entry (the SDM's M is at most 52). */
export const ADDRESS_MASK = 0x000f_ffff_ffff_f000n;

/** Bit of a virtual address where each level's 9-bit index starts. */
const SHIFT: Record<LevelName, number> = { PML5: 48, PML4: 39, PDPT: 30, PD: 21, PT: 12 };

/** Size in bytes of what one entry of a level maps when it is a leaf (PT: 4 KiB, PD: 2 MiB, PDPT: 1 GiB). */
export function leafSizeBytes(level: LevelName): number {
  return 2 ** SHIFT[level];
}

/** The paging mode selected by CR0.PG, CR4.PAE, EFER.LMA and CR4.LA57 (SDM 4.1.1). */
export function pagingMode(r: Pick<ControlRegisters, 'cr0' | 'cr4' | 'efer'>): PagingMode {
  if (!bit(r.cr0, CR0_PG)) return 'off';
  if (!bit(r.cr4, CR4_PAE)) return '32-bit';
  if (!bit(r.efer, EFER_LMA)) return 'pae';
  return bit(r.cr4, CR4_LA57) ? '5-level' : '4-level';
}

/** Whether execute-disable (bit 63 of entries) is enabled; otherwise bit 63 is reserved. */
export function nxEnabled(efer: bigint): boolean {
  return bit(efer, EFER_NXE);
}

/** The table levels a mode walks, top down; empty for modes that are not walked. */
export function levelsOf(mode: PagingMode): LevelName[] {
  if (mode === '5-level') return ['PML5', 'PML4', 'PDPT', 'PD', 'PT'];
  if (mode === '4-level') return ['PML4', 'PDPT', 'PD', 'PT'];
  return [];
}

/** Number of virtual-address bits a mode translates (57 with LA57, else 48). */
export function virtualAddressBits(mode: '4-level' | '5-level'): number {
  return mode === '5-level' ? 57 : 48;
}

/** The 9-bit index of `gva` into a table of `level`. */
export function indexAt(gva: bigint, level: LevelName): number {
  return Number((gva >> BigInt(SHIFT[level])) & 0x1ffn);
}

/** The indices of `gva` for every level, top down as `levelsOf(mode)` lists them. */
export function indicesOf(gva: bigint, levels: readonly LevelName[]): number[] {
  const hi = Number(gva >> 32n);
  const lo = Number(gva & 0xffff_ffffn);
  return levels.map((l) => {
    const s = SHIFT[l];
    return (s >= 32 ? hi >>> (s - 32) : (hi << (32 - s)) | (lo >>> s)) & 0x1ff;
  });
}

/**
 * Canonical form (SDM 3.3.7.1): bits 63..N-1 all equal, N = 48 or 57. Any other address faults
 * before the page tables are consulted.
 */
export function isCanonical(gva: bigint, mode: '4-level' | '5-level'): boolean {
  const n = virtualAddressBits(mode);
  const top = gva >> BigInt(n - 1);
  return top === 0n || top === (1n << BigInt(64 - n + 1)) - 1n;
}

/** The top-level table's guest-physical address: CR3 bits 51:12 (the low bits are PCID or PWT/PCD). */
export function cr3TableAddress(cr3: bigint): bigint {
  return cr3 & ADDRESS_MASK;
}

/** The PCID in CR3 bits 11:0 when CR4.PCIDE is set, else null (SDM 4.10.1). */
export function cr3Pcid(cr3: bigint, cr4: bigint): number | null {
  return bit(cr4, CR4_PCIDE) ? Number(cr3 & 0xfffn) : null;
}

/** The flags of one entry. `dirty`, `global` and `protectionKey` exist only for leaf entries. */
export interface EntryFlags {
  present: boolean;
  writable: boolean;
  user: boolean;
  writeThrough: boolean;
  cacheDisabled: boolean;
  accessed: boolean;
  /** Leaf only (bit 6 is ignored in entries that point to a table). */
  dirty?: boolean;
  /** PS (bit 7) in a PDPT or PD entry: the entry maps a 1 GiB / 2 MiB page. */
  hugePage: boolean;
  /** Leaf only. */
  global?: boolean;
  /** Bit 63 (XD/NX); reserved when EFER.NXE is clear. */
  noExecute: boolean;
  /** Leaf only, bits 62:59; meaningful when CR4.PKE is set. */
  protectionKey?: number;
}

/** An entry decoded in the context of its level. */
export interface DecodedEntry {
  flags: EntryFlags;
  /** True when the entry maps a page (PT entry, or PS set in a PDPT/PD entry). */
  leaf: boolean;
  /** Next table's address, or the page frame's address for a leaf (guest-physical). */
  address: bigint;
  /** Set when a bit that must be 0 is 1; the CPU raises a page fault (SDM 4.7). */
  reservedBitProblem?: string;
}

/**
 * Decodes an entry of `level`. `nx` says whether bit 63 means execute-disable (EFER.NXE).
 * A non-present entry decodes too (its other bits are free for the OS); callers stop there.
 */
export function decodeEntry(value: bigint, level: LevelName, nx = true): DecodedEntry {
  // Flag tests on two 32-bit halves: this runs for every level of every walk, and BigInt
  // arithmetic allocates.
  const lo = Number(value & 0xffff_ffffn);
  const hi = Number(value >> 32n);
  const ps = (lo & 0x80) !== 0;
  const canBeHuge = level === 'PDPT' || level === 'PD';
  const leaf = level === 'PT' || (canBeHuge && ps);
  const flags: EntryFlags = {
    present: (lo & 0x1) !== 0,
    writable: (lo & 0x2) !== 0,
    user: (lo & 0x4) !== 0,
    writeThrough: (lo & 0x8) !== 0,
    cacheDisabled: (lo & 0x10) !== 0,
    accessed: (lo & 0x20) !== 0,
    hugePage: canBeHuge && ps,
    noExecute: (hi & 0x8000_0000) !== 0,
  };
  if (leaf) {
    flags.dirty = (lo & 0x40) !== 0;
    flags.global = (lo & 0x100) !== 0;
    flags.protectionKey = (hi >>> 27) & 0xf;
  }
  const hugeLeaf = leaf && level !== 'PT';
  // A huge leaf's frame is aligned to its size; bit 12 of it is PAT (SDM tables 4-17, 4-19).
  const decoded: DecodedEntry = { flags, leaf, address: value & (hugeLeaf ? hugeFrameMask(level) : ADDRESS_MASK) };
  if (flags.present) {
    if ((level === 'PML5' || level === 'PML4') && ps) {
      decoded.reservedBitProblem = `bit 7 (PS) is set in a ${level} entry, where it is reserved`;
    } else if (hugeLeaf && (value & (BigInt(leafSizeBytes(level)) - 1n) & ~0x1fffn & ADDRESS_MASK) !== 0n) {
      decoded.reservedBitProblem = `the ${level === 'PD' ? '2 MiB' : '1 GiB'} page frame address has low bits set (they are reserved in a huge-page entry)`;
    } else if (!nx && flags.noExecute) {
      decoded.reservedBitProblem = 'bit 63 (XD) is set but EFER.NXE is off, so it is reserved';
    }
  }
  return decoded;
}

const HUGE_FRAME_MASK_PD = ADDRESS_MASK & ~(BigInt(2 ** SHIFT.PD) - 1n);
const HUGE_FRAME_MASK_PDPT = ADDRESS_MASK & ~(BigInt(2 ** SHIFT.PDPT) - 1n);
const hugeFrameMask = (level: LevelName): bigint => (level === 'PD' ? HUGE_FRAME_MASK_PD : HUGE_FRAME_MASK_PDPT);

/** Names of the set flags, for people ("present writable user accessed dirty huge-page no-execute"). */
export function flagWords(f: EntryFlags): string[] {
  const words: string[] = [];
  if (f.present) words.push('present');
  if (f.writable) words.push('writable');
  if (f.user) words.push('user');
  if (f.writeThrough) words.push('write-through');
  if (f.cacheDisabled) words.push('cache-disabled');
  if (f.accessed) words.push('accessed');
  if (f.dirty) words.push('dirty');
  if (f.hugePage) words.push('huge-page');
  if (f.global) words.push('global');
  if (f.noExecute) words.push('no-execute');
  if (f.protectionKey) words.push(`pkey=${f.protectionKey}`);
  return words;
}
