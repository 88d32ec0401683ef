/**
 * The JSON form of the inspection results (translation chain, memory map): addresses as hex
 * strings (JSON numbers cannot hold 64 bits), the rest as it is. One form for the CLI's --json
 * and the HTTP API. Pure.
 */
import type { MemoryMapReport, Translation } from './inspector.js';
import type { MapRegion, MemoryDeviceSummary } from './guest-phys-map.js';
import type { WalkOutcome } from './walk.js';

const hex = (v: bigint): string => `0x${v.toString(16)}`;

/** Why a walk ended without a guest-physical address, in a sentence. */
export function walkFailure(w: WalkOutcome): string {
  const gva = hex(w.gva);
  switch (w.kind) {
    case 'mapped': return '';
    case 'not-present': {
      const s = w.steps[w.steps.length - 1]!;
      return `${gva} is not mapped: the ${w.level} entry (index ${s.index}) is not present, so the walk stopped at the ${w.level} level.`;
    }
    case 'non-canonical': {
      const n = w.vaBits;
      return `${gva} is not a canonical address under ${w.mode} paging: bits 63..${n - 1} must all be equal (${n}-bit virtual addresses). ` +
        'The CPU faults on it before any page table is read.';
    }
    case 'reserved-bit':
      return `${gva} cannot be translated: the ${w.level} entry has a reserved bit set (${w.reason}); the CPU raises a page fault there.`;
    case 'table-unreadable':
      return `${gva} cannot be translated: the ${w.level} table at guest-physical ${hex(w.tableGpa)} cannot be read: ${w.reason}.`;
    case 'unsupported-mode':
      return `${gva} cannot be translated: ${w.reason}.`;
  }
}

/** `virtmem translate --json` output. */
export function translationJson(t: Translation): unknown {
  const w = t.walk;
  const walk: Record<string, unknown> = {
    outcome: w.kind,
    mode: w.mode,
    cr3: hex(w.cr3),
    rootTable: w.rootGpa === null ? null : hex(w.rootGpa),
    steps: w.steps.map((s) => ({
      level: s.level, table: hex(s.tableGpa), index: s.index, entryAddress: hex(s.entryGpa), entry: hex(s.entry),
      flags: s.flags, leaf: s.leaf, ...(s.flags.present ? { [s.leaf ? 'page' : 'nextTable']: hex(s.address) } : {}),
    })),
  };
  if (w.kind === 'mapped') Object.assign(walk, { gpa: hex(w.gpa), pageSizeBytes: w.pageSizeBytes, page: hex(w.pageGpa), access: w.access });
  if (w.kind === 'not-present' || w.kind === 'reserved-bit' || w.kind === 'table-unreadable') walk.stoppedAt = w.level;
  if (w.kind === 'non-canonical') walk.virtualAddressBits = w.vaBits;
  if (w.kind === 'reserved-bit' || w.kind === 'table-unreadable' || w.kind === 'unsupported-mode') walk.reason = w.reason;
  if (w.kind !== 'mapped') walk.message = walkFailure(w);
  const target = t.target;
  return {
    domain: t.domain,
    qemuPid: t.qemuPid,
    gva: hex(t.gva),
    cpu: t.cpu,
    cr3Source: t.cr3Source,
    pcid: t.pcid,
    readVia: t.readVia,
    mapped: w.kind === 'mapped',
    gpa: w.kind === 'mapped' ? hex(w.gpa) : null,
    hva: target?.hva == null ? null : hex(target.hva),
    hpa: target?.hpa && 'hpa' in target.hpa ? hex(target.hpa.hpa) : null,
    walk,
    target: target && {
      region: regionJson(target.region),
      ramBlockOffset: target.ramBlockOffset === null ? null : hex(target.ramBlockOffset),
      notMemory: target.notMemory,
      hpaUnavailable: target.hpa && 'reason' in target.hpa ? target.hpa.reason : null,
      bytes: target.bytes ? Buffer.from(target.bytes).toString('hex') : null,
      bytesUnread: target.bytesUnread,
    },
    notes: t.notes,
  };
}

function deviceJson(d: MemoryDeviceSummary): unknown {
  return { ...d };
}

function regionJson(r: MapRegion): Record<string, unknown> {
  return {
    start: hex(r.start), end: hex(r.end), sizeBytes: r.sizeBytes, kind: r.kind, qemuType: r.qemuType, name: r.name,
    offset: r.offset === null ? null : hex(r.offset), ramBlock: r.ramBlock, hva: r.hva === null ? null : hex(r.hva),
    memoryDevice: r.memoryDevice ? deviceJson(r.memoryDevice) : null,
  };
}

/** `virtmem memmap --json` output. */
export function memoryMapJson(m: MemoryMapReport): unknown {
  return {
    domain: m.domain,
    qemuPid: m.qemuPid,
    regions: m.regions.map((r) => ({ ...regionJson(r), residentBytes: r.residentBytes, swappedBytes: r.swappedBytes })),
    ramBlocks: m.ramBlocks.map((b) => ({
      name: b.name, pageSizeBytes: b.pageSizeBytes, ramAddr: hex(b.ramAddr), usedBytes: b.usedBytes, maxBytes: b.maxBytes,
      hva: b.hva === null ? null : hex(b.hva), mapped: b.mapped, residentBytes: b.residentBytes,
    })),
    memoryDevices: m.memoryDevices.map(deviceJson),
    residencyUnavailable: m.residencyUnavailable,
  };
}

