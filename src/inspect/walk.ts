/**
 * The page-table walk, without I/O: a generator that yields each guest-physical read it needs
 * and is resumed with the bytes (or the reason they cannot be read). `walkSync` and
 * `walkAsync` drive it with a reader, so the same arithmetic serves a direct read of QEMU's
 * memory and a read through the monitor, and unit tests drive it with a fake memory.
 *
 * Reference: Intel SDM vol. 3A, 4.5 (4-level and 5-level paging) and 4.6 (access rights).
 */
import { VirtError } from '../domain/errors.js';
import {
  cr3TableAddress,
  decodeEntry,
  indicesOf,
  isCanonical,
  leafSizeBytes,
  levelsOf,
  virtualAddressBits,
  type DecodedEntry,
  type EntryFlags,
  type LevelName,
  type PagingMode,
} from './paging.js';

/** A read the walk needs: `length` bytes at guest-physical `gpa`. */
export interface PhysReadRequest {
  gpa: bigint;
  length: number;
}

/** What a reader answers: the bytes, or why they cannot be read (not RAM, ...). */
export type PhysReadAnswer = Uint8Array | { unreadable: string };

export interface WalkRequest {
  gva: bigint;
  /** CR3 as the vCPU holds it (PCID / PWT / PCD bits are masked here). */
  cr3: bigint;
  mode: PagingMode;
  /** EFER.NXE: whether bit 63 of entries means no-execute. Default true. */
  nx?: boolean;
  /**
   * With KPTI, a process runs on a user copy of its top-level table, 4 KiB above the kernel
   * copy (CR3 bit 12 set), which maps almost none of the kernel. When a kernel-half address
   * is not present in such a copy, walk again from the kernel copy. Default true.
   */
  kptiFallback?: boolean;
}

/** One level of a walk. */
export interface WalkStep {
  level: LevelName;
  /** Guest-physical address of the table. */
  tableGpa: bigint;
  index: number;
  /** Guest-physical address of the entry (table + 8 * index). */
  entryGpa: bigint;
  entry: bigint;
  flags: EntryFlags;
  leaf: boolean;
  /** The next table or, for a leaf, the page frame. Meaningless when not present. */
  address: bigint;
}

/** Effective access rights of a mapping: the AND (writable, user) / OR (no-execute) of all levels. */
export interface AccessRights {
  writable: boolean;
  user: boolean;
  executable: boolean;
}

interface WalkBase {
  gva: bigint;
  mode: PagingMode;
  cr3: bigint;
  /** Top-level table actually walked (after masking and any KPTI fallback). */
  rootGpa: bigint | null;
  steps: WalkStep[];
  /** Things a reader should know about how this answer was reached. */
  notes: string[];
}

export type WalkOutcome =
  | (WalkBase & {
      kind: 'mapped';
      gpa: bigint;
      /** Page size in bytes; null with paging off. */
      pageSizeBytes: number | null;
      pageGpa: bigint;
      access: AccessRights;
    })
  /** An entry on the way is not present: the address is not mapped. `level` names where. */
  | (WalkBase & { kind: 'not-present'; level: LevelName })
  /** The address is not canonical for the mode: it faults before any table is read. */
  | (WalkBase & { kind: 'non-canonical'; vaBits: number })
  /** An entry has a reserved bit set: the CPU would fault there. */
  | (WalkBase & { kind: 'reserved-bit'; level: LevelName; reason: string })
  /** A table lies where guest memory cannot be read (not RAM: a hole or a device). */
  | (WalkBase & { kind: 'table-unreadable'; level: LevelName; tableGpa: bigint; reason: string })
  /** A paging mode this walker does not implement (legacy 32-bit and PAE paging). */
  | (WalkBase & { kind: 'unsupported-mode'; reason: string });

export type WalkGenerator = Generator<PhysReadRequest, WalkOutcome, PhysReadAnswer>;

const ENTRY_BYTES = 8;
const KPTI_USER_BIT = 1n << 12n;

/** Little-endian u64 (x86 entries) from the first 8 bytes. */
function readU64(b: Uint8Array): bigint {
  const lo = (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
  const hi = (b[4]! | (b[5]! << 8) | (b[6]! << 16) | (b[7]! << 24)) >>> 0;
  return (BigInt(hi) << 32n) | BigInt(lo);
}

/** Walk once from the given CR3, with no KPTI fallback. */
function* walkOnce(req: WalkRequest): WalkGenerator {
  const { gva, cr3, mode } = req;
  const base = (): WalkBase => ({ gva, mode, cr3, rootGpa: null, steps: [], notes: [] });
  if (mode === 'off') {
    return { ...base(), kind: 'mapped', gpa: gva, pageSizeBytes: null, pageGpa: gva, access: { writable: true, user: true, executable: true },
      notes: ['paging is off on this vCPU: addresses are guest-physical'] };
  }
  if (mode !== '4-level' && mode !== '5-level') {
    return { ...base(), kind: 'unsupported-mode', reason: `the vCPU uses ${mode === 'pae' ? 'PAE' : 'legacy 32-bit'} paging; only 4-level and 5-level (long mode) paging are walked` };
  }
  if (!isCanonical(gva, mode)) {
    return { ...base(), kind: 'non-canonical', vaBits: virtualAddressBits(mode) };
  }
  const rootGpa = cr3TableAddress(cr3);
  const out: WalkBase = { ...base(), rootGpa };
  const access: AccessRights = { writable: true, user: true, executable: true };
  let table = rootGpa;
  const levels = levelsOf(mode);
  const indices = indicesOf(gva, levels);
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!;
    const index = indices[i]!;
    const entryGpa = table + BigInt(index * ENTRY_BYTES);
    const answer = yield { gpa: entryGpa, length: ENTRY_BYTES };
    if (!(answer instanceof Uint8Array)) {
      return { ...out, kind: 'table-unreadable', level, tableGpa: table, reason: answer.unreadable };
    }
    if (answer.byteLength < ENTRY_BYTES) {
      return { ...out, kind: 'table-unreadable', level, tableGpa: table, reason: `short read of ${answer.byteLength} bytes at 0x${entryGpa.toString(16)}` };
    }
    const entry = readU64(answer);
    const d: DecodedEntry = decodeEntry(entry, level, req.nx ?? true);
    out.steps.push({ level, tableGpa: table, index, entryGpa, entry, flags: d.flags, leaf: d.leaf, address: d.address });
    if (!d.flags.present) return { ...out, kind: 'not-present', level };
    if (d.reservedBitProblem) return { ...out, kind: 'reserved-bit', level, reason: d.reservedBitProblem };
    access.writable &&= d.flags.writable;
    access.user &&= d.flags.user;
    if ((req.nx ?? true) && d.flags.noExecute) access.executable = false;
    if (d.leaf) {
      const size = leafSizeBytes(level);
      const offset = gva & (BigInt(size) - 1n);
      return { ...out, kind: 'mapped', gpa: d.address + offset, pageSizeBytes: size, pageGpa: d.address, access };
    }
    table = d.address;
  }
  // levelsOf() ends with PT, whose entries are always leaves.
  throw new VirtError('INTERNAL', 'internal error: a page-table walk ended without a leaf entry');
}

/**
 * The walk of `req.gva`, as a generator of reads (see the module comment). With KPTI (see
 * {@link WalkRequest.kptiFallback}) a kernel-half address that the user copy does not map is
 * walked again from the kernel copy, and a note says so.
 */
export function* walkSteps(req: WalkRequest): WalkGenerator {
  const first = yield* walkOnce(req);
  const kernelHalf = (req.gva >> 63n) === 1n;
  const userCopy = (cr3TableAddress(req.cr3) & KPTI_USER_BIT) !== 0n;
  if (!(req.kptiFallback ?? true) || !kernelHalf || !userCopy || first.kind !== 'not-present') return first;
  // Linux allocates the two copies as one 8 KiB-aligned pair, kernel copy first, so the
  // kernel's CR3 has bit 12 clear (arch/x86/include/asm/pgalloc.h, PGD_ALLOCATION_ORDER).
  const kernelCr3 = req.cr3 & ~KPTI_USER_BIT;
  const second = yield* walkOnce({ ...req, cr3: kernelCr3 });
  const why = `CR3 0x${req.cr3.toString(16)} has bit 12 set and its tables do not map this kernel address (the walk stopped at ${first.level}): ` +
    'with KPTI (kernel page-table isolation) that is the user copy of a process\'s page tables, which maps almost none of the kernel';
  if (second.kind !== 'mapped') {
    return { ...first, notes: [...first.notes, `${why}; the kernel copy 4 KiB below (0x${cr3TableAddress(kernelCr3).toString(16)}) does not map it either`] };
  }
  return { ...second, cr3: req.cr3, notes: [...second.notes, `${why}, so the kernel copy 4 KiB below (0x${cr3TableAddress(kernelCr3).toString(16)}) was walked`] };
}

/** Runs a walk with a synchronous reader. */
export function walkSync(req: WalkRequest, read: (r: PhysReadRequest) => PhysReadAnswer): WalkOutcome {
  const gen = walkSteps(req);
  let next = gen.next();
  while (!next.done) next = gen.next(read(next.value));
  return next.value;
}

/** Runs a walk with an asynchronous reader (e.g. through the QEMU monitor). */
export async function walkAsync(req: WalkRequest, read: (r: PhysReadRequest) => Promise<PhysReadAnswer>): Promise<WalkOutcome> {
  const gen = walkSteps(req);
  let next = gen.next();
  while (!next.done) next = gen.next(await read(next.value));
  return next.value;
}
