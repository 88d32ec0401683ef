/**
 * virsh-compatible text output, as pure functions. Layouts were recorded from real virsh 9.0
 * (test/fixtures/virsh/) and are asserted against those recordings.
 */
import type { DomainInfo, DomainState, DomainStatsRecord, DomainSummary, GuestHostMemory, HostCapabilities, MemoryParameter, MemoryStats, NumaParameters, StateReason, StatValue } from '../driver/api.js';
import { NUMA_MODES, isPlainBacking } from '../driver/api.js';

/** virsh's words for states. */
export function stateText(state: DomainState): string {
  return state === 'shutoff' ? 'shut off' : state;
}

/** `domstate --reason` text, e.g. "shut off (destroyed)". */
export function stateWithReason(state: DomainState, reason: StateReason): string {
  return `${stateText(state)} (${reason})`;
}

/**
 * virsh's vshTable: a leading space, cells left-aligned and padded to the column width (the
 * last column is not padded), columns separated by three spaces, and a dash rule under the
 * header two characters wider than the widest line.
 */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    ' ' + cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('   ');
  const lines = [header, ...rows].map(line);
  const rule = '-'.repeat(Math.max(...lines.map((l) => l.length)) + 2);
  return [lines[0], rule, ...lines.slice(1)].join('\n') + '\n';
}

/** `virsh list` output. */
export function formatList(rows: DomainSummary[], opts: { name?: boolean } = {}): string {
  if (opts.name) return rows.map((r) => r.name).join('\n') + (rows.length ? '\n' : '') + '\n';
  return formatTable(['Id', 'Name', 'State'], rows.map((r) => [r.id === null ? '-' : String(r.id), r.name, stateText(r.state)])) + '\n';
}

/** `virsh dominfo` output: `%-15s %s` lines. */
export function formatDominfo(info: DomainInfo): string {
  const row = (k: string, v: string): string => `${(k + ':').padEnd(15)} ${v}`;
  const lines = [
    row('Id', info.id === null ? '-' : String(info.id)),
    row('Name', info.name),
    row('UUID', info.uuid),
    row('OS Type', info.osType),
    row('State', stateText(info.state)),
    row('CPU(s)', String(info.vcpus)),
  ];
  if (info.cpuTimeS !== null) lines.push(row('CPU time', `${info.cpuTimeS.toFixed(1)}s`));
  lines.push(
    row('Max memory', `${info.maxMemoryKiB} KiB`),
    row('Used memory', `${info.usedMemoryKiB} KiB`),
    row('Persistent', info.persistent ? 'yes' : 'no'),
    row('Autostart', info.autostart ? 'enable' : 'disable'),
    row('Managed save', info.managedSave ? 'yes' : 'no'),
  );
  if (info.security === undefined) lines.push(row('Security model', 'none'), row('Security DOI', '0'));
  else if (info.security) {
    // virsh: model and DOI when the host has a security driver; the label when the domain has one.
    lines.push(row('Security model', info.security.model), row('Security DOI', info.security.doi));
    if (info.security.label) lines.push(row('Security label', `${info.security.label} (${info.security.enforcing ? 'enforcing' : 'permissive'})`));
  }
  // virsh (>= 7.1): the first message on a "Messages:" line, the rest under it.
  (info.messages ?? []).forEach((msg, i) => lines.push(i === 0 ? row('Messages', msg) : `${''.padEnd(15)} ${msg}`));
  // virsh's lines stay as they are; a guest with memory devices also says where its memory is
  // (libvirt's "Used memory" ignores virtio-mem, ours counts it and shows the parts).
  const m = info.memory;
  if (m.hotplugSizeKiB > 0 || m.dimmKiB > 0) {
    lines.push(row('Boot memory', `${m.bootKiB} KiB (balloon ${m.balloonKiB} KiB)`));
    if (m.dimmKiB > 0) lines.push(row('DIMMs', `${m.dimmKiB} KiB`));
    if (m.hotplugSizeKiB > 0) lines.push(row('Hot-plugged', `${m.pluggedKiB} KiB of ${m.hotplugSizeKiB} KiB (virtio-mem)`));
  }
  if (info.hostMemory) lines.push(...hostMemoryLines(info.hostMemory).map(([k, v]) => row(k, v)));
  return lines.join('\n') + '\n\n';
}

/**
 * dominfo's lines about the memory on the host, each only where it says more than libvirt's
 * defaults (so a plain guest's dominfo stays virsh's): the backing, NUMA placement, the memory
 * cgroup's usage with its limits, and what KSM merges. Pure.
 */
export function hostMemoryLines(h: GuestHostMemory): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const b = h.backing;
  if (!isPlainBacking(b)) {
    const parts = [
      ...(b.hugepages.length ? [b.hugepages.map((p) => `${p.pages} x ${p.sizeKiB} KiB huge pages`).join(' + ')] : []),
      ...(b.source !== 'anonymous' ? [b.source] : []), ...(b.shared ? ['shared'] : []), ...(b.locked ? ['locked'] : []), ...(b.mergeable ? [] : ['no KSM']),
    ];
    out.push(['Memory backing', parts.join(', ')]);
  }
  const p = h.placement;
  if (p) {
    const parts = [...(p.nodeset ? [`${p.mode} on host nodes ${p.nodeset}`] : []), ...p.memnodes.map((n) => `cell ${n.cell} ${n.mode} on host nodes ${n.nodeset}`)];
    if (parts.length) out.push(['NUMA placement', parts.join('; ')]);
  }
  const c = h.cgroup;
  if (c && (c.hardLimitKiB !== null || c.softLimitKiB !== null)) {
    out.push(['Memory cgroup', [
      ...(c.usageKiB !== null ? [`usage ${c.usageKiB} KiB`] : []), ...(c.hardLimitKiB !== null ? [`hard limit ${c.hardLimitKiB} KiB`] : []),
      ...(c.softLimitKiB !== null ? [`soft limit ${c.softLimitKiB} KiB`] : []),
    ].join(', ')]);
  }
  if (h.ksm && h.ksm.mergingPages > 0) out.push(['KSM sharing', `${h.ksm.mergingPages} pages (${h.ksm.mergingKiB} KiB) merged`]);
  return out;
}

/** `virsh dommemstat` output: `name value` lines. */
export function formatMemStats(ms: MemoryStats): string {
  return ms.stats.map((s) => `${s.name} ${s.value}`).join('\n') + '\n\n';
}

/** `virtmem capabilities`: `%-15s %s` lines like dominfo's. */
export function formatCapabilities(c: HostCapabilities): string {
  const row = (k: string, v: string): string => `${(k + ':').padEnd(15)} ${v}`;
  const kib = (v: number | null): string => (v === null ? 'unknown' : `${v} KiB`);
  const lines = [
    row('QEMU', c.emulator.path === null ? `not usable: ${c.emulator.error}` : `${c.emulator.path} (${c.emulator.version ?? 'version unknown'})`),
    row('KVM device', c.kvm === null ? 'not checked (no QEMU)' : c.kvm.devicePresent ? `${c.kvm.device} opens` : `none (${c.kvm.reason})`),
  ];
  if (c.kvm?.devicePresent) {
    lines.push(row('KVM works', `${c.kvm.usable ? 'yes' : 'no'}: ${c.kvm.reason}${c.kvm.probedAt ? ` (probed ${c.kvm.probedAt}${c.kvm.cached ? ', cached' : ''})` : ''}`));
  }
  lines.push(
    row('Auto picks', `${c.accel.autoPicks}${c.accel.envOverride ? ` ($VIRTMEM_ACCEL=${c.accel.envOverride})` : ''}`),
    row('CPU default', `${c.cpu.defaultUnderKvm} under KVM, ${c.cpu.defaultUnderTcg} under TCG`),
    row('CPU modes', c.cpu.modes.join(', ')),
    row('Host memory', `${kib(c.hostMemory.totalKiB)} (available ${kib(c.hostMemory.availableKiB)})`),
  );
  if (c.hostMemory.pressure) lines.push(row('Mem pressure', c.hostMemory.pressure));
  lines.push(row('Built-in guest', c.defaultGuest ? `kernel ${c.defaultGuest.kernelVersion} (${c.defaultGuest.kernel})` : 'not built (virtmem guest-build)'));
  return lines.join('\n') + '\n\n';
}

/** `virsh freecell` (no cell): the host's free memory, `Total: N KiB`. */
export function formatFreeTotal(freeBytes: number): string {
  return `Total: ${Math.floor(freeBytes / 1024)} KiB\n\n`;
}

/** `virsh freecell --cellno N`. */
export function formatFreeCell(cell: number, freeBytes: number): string {
  return `${cell}: ${Math.floor(freeBytes / 1024)} KiB\n\n`;
}

/** `virsh freecell --all`: `%5lu: %10llu KiB` per cell, a rule, the total of the bytes. */
export function formatFreeCells(cells: ReadonlyArray<{ cell: number; freeBytes: number }>): string {
  const line = (label: string, bytes: number): string => `${label.padStart(5)}: ${String(Math.floor(bytes / 1024)).padStart(10)} KiB\n`;
  const total = cells.reduce((s, c) => s + c.freeBytes, 0);
  return cells.map((c) => line(String(c.cell), c.freeBytes)).join('') + '-'.repeat(20) + '\n' + line('Total', total) + '\n';
}

/** `virsh freepages`: `%uKiB: %lld` per page size; with --all under `Node N:`, each cell ending in an empty line. */
export function formatFreePages(cells: ReadonlyArray<{ cell: number; pages: ReadonlyArray<{ sizeKiB: number; free: number }> }>, opts: { all: boolean }): string {
  const sizes = (pages: ReadonlyArray<{ sizeKiB: number; free: number }>): string => pages.map((p) => `${p.sizeKiB}KiB: ${p.free}\n`).join('');
  if (!opts.all) return cells.map((c) => sizes(c.pages)).join('') + '\n';
  return cells.map((c) => `Node ${c.cell}:\n${sizes(c.pages)}\n`).join('') + '\n';
}

/** `virsh node-memory-tune`: `Shared memory:` and `\t%-15s %s` per parameter. */
export function formatNodeMemoryParameters(params: ReadonlyArray<{ field: string; value: number }>): string {
  if (params.length === 0) return '\n';
  return 'Shared memory:\n' + params.map((p) => `\t${p.field.padEnd(15)} ${p.value}\n`).join('') + '\n';
}

/** `virsh nodememstats`: `%-7s: %20llu KiB` per statistic. */
export function formatNodeMemStats(stats: ReadonlyArray<{ field: string; valueKiB: number }>): string {
  return stats.map((s) => `${s.field.padEnd(7)}: ${String(s.valueKiB).padStart(20)} KiB\n`).join('') + '\n';
}

/** `virsh memtune`: `%-15s: %s` per limit, libvirt's "unlimited" spelled out. */
export function formatMemoryParameters(params: ReadonlyArray<MemoryParameter>): string {
  return params.map((p) => `${p.field.padEnd(15)}: ${p.valueKiB === null ? 'unlimited' : p.valueKiB}\n`).join('') + '\n';
}

/** `virsh numatune`: the mode by name (virDomainNumatuneMemModeTypeToString; printf's "(null)" for a number it lacks) and the nodeset. */
export function formatNumaParameters(p: NumaParameters): string {
  return `${'numa_mode'.padEnd(15)}: ${NUMA_MODES[p.mode] ?? '(null)'}\n${'numa_nodeset'.padEnd(15)}: ${p.nodeset}\n\n`;
}

/** A typed parameter's value as virsh prints it (vshGetTypedParamValue: %d, %u, %lld, %llu, %f, yes/no, the string). */
export function typedParamText(v: StatValue): string {
  switch (v.type) {
    case 'double': return v.value.toFixed(6);
    case 'boolean': return v.value ? 'yes' : 'no';
    default: return String(v.value);
  }
}

/** `virsh domstats`: per record `Domain: 'NAME'` and `  field=value` lines, records apart by an empty line. */
export function formatDomainStats(records: ReadonlyArray<DomainStatsRecord>): string {
  return records.map((r) => `Domain: '${r.name}'\n` + r.params.map((p) => `  ${p.field}=${typedParamText(p.value)}\n`).join('')).join('\n') + '\n';
}
