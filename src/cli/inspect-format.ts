/**
 * Text and JSON output of `translate` and `memmap`, as pure functions. Text reads top to
 * bottom like the chain it describes; JSON spells every 64-bit value as a "0x..." string
 * (JSON numbers lose precision above 2^53) and every size as a number of bytes.
 */
import { flagWords, walkFailure, type MapRegion, type MemoryMapReport, type PagingMode, type Translation } from '../driver/api.js';
import { formatTable } from './format.js';

const hex = (v: bigint): string => `0x${v.toString(16)}`;
/** Fixed-width hex, for columns. */
const hex16 = (v: bigint): string => `0x${v.toString(16).padStart(16, '0')}`;

const UNITS = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'] as const;

/** "4 KiB", "780 KiB", "3.48 GiB": exact when the size is a whole number of the unit. */
export function formatBytes(n: number): string {
  let u = 0;
  let v = n;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  const text = Number.isInteger(v) ? String(v) : v.toFixed(2);
  return `${text} ${UNITS[u]}`;
}

function modeText(mode: PagingMode): string {
  switch (mode) {
    case '5-level': return '5-level paging (CR4.LA57, 57-bit virtual addresses)';
    case '4-level': return '4-level paging (48-bit virtual addresses)';
    case 'pae': return 'PAE paging (32-bit)';
    case '32-bit': return 'legacy 32-bit paging';
    case 'off': return 'paging off';
  }
}

function printable(bytes: Uint8Array): string {
  return [...bytes].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
}

function bytesHex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ');
}

/** The region a GPA lies in, and its place in the RAM block. */
function regionText(r: MapRegion, ramBlockOffset: bigint | null): string {
  const range = `${hex(r.start)}-${hex(r.end)}`;
  if (r.kind === 'hole') return `a hole in the guest-physical map (${range})`;
  const dev = r.memoryDevice ? `, ${r.memoryDevice.model} ${r.memoryDevice.id ?? r.memoryDevice.memdev}` : '';
  const block = r.ramBlock && ramBlockOffset !== null ? `; RAM block ${r.ramBlock} at offset ${hex(ramBlockOffset)}` : '';
  return `region ${r.name} (${r.qemuType}) ${range}${dev}${block}`;
}

/** `virtmem translate` text output. */
export function formatTranslation(t: Translation): string {
  const w = t.walk;
  const out: string[] = [];
  out.push(`Translation of ${hex(t.gva)} in domain '${t.domain}' (QEMU pid ${t.qemuPid})`);
  const cr3 = `CR3 ${hex(w.cr3)}${t.cr3Source === 'vcpu' ? ` of vCPU ${t.cpu}` : ' (given)'}${t.pcid !== null ? `, PCID ${t.pcid}` : ''}`;
  out.push(`  vCPU ${t.cpu}: ${modeText(t.mode)}; ${cr3}`);
  out.push(`  guest memory read ${t.readVia === 'proc-mem' ? `directly from the QEMU process (/proc/${t.qemuPid}/mem)` : 'through the QEMU monitor (HMP xp)'}`);
  out.push('');
  if (w.steps.length > 0) {
    out.push('Page-table walk (table addresses are guest-physical):');
    const rows = w.steps.map((s) => [
      s.level, hex16(s.tableGpa), String(s.index), hex16(s.entry),
      s.flags.present ? flagWords(s.flags).join(' ') + (s.leaf ? '  -> page' : '') : 'not present',
    ]);
    out.push(formatTable(['level', 'table', 'index', 'entry', 'flags'], rows).trimEnd());
    out.push('');
  }
  for (const n of t.notes) out.push(`Note: ${n}`);
  if (t.notes.length) out.push('');
  if (w.kind !== 'mapped') {
    out.push(walkFailure(w));
    return out.join('\n') + '\n\n';
  }
  const label = (k: string): string => `  ${k.padEnd(4)}`;
  out.push(`${label('GVA')}${hex16(t.gva)}`);
  const page = w.pageSizeBytes === null
    ? 'paging off: guest-physical = guest-virtual'
    : `${formatBytes(w.pageSizeBytes)} page at ${hex(w.pageGpa)} + offset ${hex(w.gpa - w.pageGpa)}`;
  const access = [w.access.user ? 'user' : 'kernel-only', w.access.writable ? 'writable' : 'read-only', w.access.executable ? 'executable' : 'no-execute'];
  out.push(`${label('GPA')}${hex16(w.gpa)}  ${page}; ${access.join(', ')}`);
  const target = t.target!;
  out.push(`${label('in')}${regionText(target.region, target.ramBlockOffset)}`);
  if (target.notMemory) {
    out.push('');
    out.push(`The address is mapped, but ${target.notMemory}. It has no host address.`);
    return out.join('\n') + '\n\n';
  }
  out.push(target.hva === null ? `${label('HVA')}unknown (QEMU did not report the RAM block's host address)` : `${label('HVA')}${hex16(target.hva)}  in QEMU process ${t.qemuPid}`);
  if (target.hpa === null) out.push(`${label('HPA')}unknown`);
  else if ('hpa' in target.hpa) out.push(`${label('HPA')}${hex16(target.hpa.hpa)}  from /proc/${t.qemuPid}/pagemap`);
  else out.push(`${label('HPA')}unknown: ${target.hpa.reason}`);
  if (target.bytes) out.push('', `Bytes at ${hex(t.gva)}: ${bytesHex(target.bytes)}  ${printable(target.bytes)}`);
  else if (target.bytesUnread) out.push('', `Bytes at ${hex(t.gva)} not read: ${target.bytesUnread}.`);
  return out.join('\n') + '\n\n';
}

/** `virtmem memmap` text output. */
export function formatMemoryMap(m: MemoryMapReport): string {
  const out: string[] = [];
  out.push(`Guest-physical memory map of domain '${m.domain}' (QEMU pid ${m.qemuPid})`, '');
  const rows = m.regions.map((r) => {
    const what = r.kind === 'hole' ? '' : `${r.name}${r.offset ? ` @${hex(r.offset)}` : ''}${r.memoryDevice ? ` (${r.memoryDevice.model} ${r.memoryDevice.id ?? ''})`.replace(' )', ')') : ''}`;
    const resident = r.residentBytes === null ? '' : formatBytes(r.residentBytes);
    return [hex16(r.start), hex16(r.end), formatBytes(r.sizeBytes), r.kind === 'device' ? `device (${r.qemuType})` : r.kind, what, r.hva === null ? '' : hex16(r.hva), resident];
  });
  out.push(formatTable(['start', 'end', 'size', 'kind', 'region', 'host address (HVA)', 'resident'], rows).trimEnd());
  out.push('');
  for (const d of m.memoryDevices) {
    const region = m.regions.find((r) => r.memoryDevice?.memdev === d.memdev);
    const at = region ? ` at ${hex(region.start)}-${hex(region.end)}` : '';
    if (d.model === 'virtio-mem') {
      out.push(`virtio-mem ${d.id ?? d.memdev}${at}: ${formatBytes(d.pluggedBytes)} of ${formatBytes(d.regionBytes)} plugged ` +
        `(requested ${formatBytes(d.requestedBytes ?? 0)}, blocks of ${formatBytes(d.blockSizeBytes ?? 0)})` +
        (region?.residentBytes != null ? `; ${formatBytes(region.residentBytes)} resident on the host` : ''));
    } else {
      out.push(`${d.model} ${d.id ?? d.memdev}${at}: ${formatBytes(d.regionBytes)}`);
    }
  }
  if (m.memoryDevices.length) out.push('');
  out.push("RAM blocks (QEMU 'info ramblock'; a block is one mapping in the QEMU process):");
  const blockRows = m.ramBlocks.map((b) => [
    b.name, formatBytes(b.usedBytes), b.usedBytes === b.maxBytes ? '' : formatBytes(b.maxBytes),
    b.hva === null ? (b.mapped ? 'unknown' : 'not in guest-physical memory') : `${hex16(b.hva)}-${hex16(b.hva + BigInt(b.usedBytes) - 1n)}`,
    b.residentBytes === null ? '' : formatBytes(b.residentBytes),
  ]);
  out.push(formatTable(['name', 'size', 'max size', 'host addresses (HVA)', 'resident'], blockRows).trimEnd());
  const ram = m.regions.filter((r) => r.kind === 'ram');
  const ramBytes = ram.reduce((s, r) => s + r.sizeBytes, 0);
  const residentBytes = ram.reduce((s, r) => s + (r.residentBytes ?? 0), 0);
  out.push('');
  out.push(`Guest RAM regions: ${formatBytes(ramBytes)}` + (m.residencyUnavailable ? '' : `, of which ${formatBytes(residentBytes)} resident on the host`) + '.');
  if (m.residencyUnavailable) out.push(`Residency unknown: ${m.residencyUnavailable}.`);
  else out.push('Resident = pages present in the QEMU process (its /proc/PID/pagemap); untouched memory costs the host nothing.');
  return out.join('\n') + '\n\n';
}
