/**
 * The memory virtualization chain of a running domain, GVA -> GPA -> HVA -> HPA, and its
 * guest-physical memory map. This is the I/O shell around the pure modules of this folder: it
 * asks the monitor for the vCPU registers and QEMU's memory layout, reads guest memory through
 * the QEMU process (or the monitor), and reads the host's page map.
 *
 * Everything happens inside one short monitor session (`Driver.withMonitor`); files opened on
 * the QEMU process are closed when it ends. The guest is not paused: a walk reads tables the
 * guest may be changing, as a debugger attached to a live system does.
 */
import { VirtError } from '../domain/errors.js';
import { queryMemoryDevices, type QmpClient } from '../qmp/index.js';
import { parseHostAddress } from './hmp-answers.js';
import { parseFlatView } from './hmp-mtree.js';
import { parseRamBlocks, ramBlockOfRegion, type RamBlock } from './hmp-ramblock.js';
import { parseRegisters, type VcpuRegisters } from './hmp-registers.js';
import { GuestPhysMap, isMemory, summarizeMemoryDevice, whyNotMemory, type MapRegion, type MemoryDeviceSummary } from './guest-phys-map.js';
import { HostPagemap, hostPhysFromEntry, type HostPhysAnswer } from './host-pagemap.js';
import { cr3Pcid, nxEnabled, pagingMode, type PagingMode } from './paging.js';
import { MonitorReader, PageCache, ProcMemReader, type ReadVia } from './phys-reader.js';
import { walkAsync, walkSync, type PhysReadAnswer, type PhysReadRequest, type WalkOutcome } from './walk.js';

/** How to read guest memory: 'auto' tries /proc/PID/mem and falls back to the monitor. */
export type ReadPreference = 'auto' | ReadVia;

export interface TranslateOptions {
  /** Page tables to walk; default the CR3 of `cpu`. */
  cr3?: bigint;
  /** vCPU whose registers decide the paging mode (and CR3 by default). Default 0. */
  cpu?: number;
  via?: ReadPreference;
}

/** How a translator for many addresses works. */
export interface TranslatorOptions extends TranslateOptions {
  /**
   * Keep every page-table page read for the translator's life, so walks that share tables
   * read each table once. A snapshot: page-table changes the guest makes later are not seen.
   * Default false.
   */
  cacheTables?: boolean;
  /** Look up the host physical address (one read of QEMU's page map per address). Default true. */
  hostPhys?: boolean;
  /** Read the first bytes at the address (one more read per address). Default true. */
  bytes?: boolean;
}

/** Where a translated address lands beyond the guest. */
export interface TranslationTarget {
  gpa: bigint;
  region: MapRegion;
  /** Offset of the GPA in its RAM block (QEMU's `info ramblock` block); null when not RAM/ROM. */
  ramBlockOffset: bigint | null;
  /** Host virtual address in the QEMU process; null when the GPA is not RAM/ROM. */
  hva: bigint | null;
  /** Host physical address from the host's page map, or why it is not known. */
  hpa: HostPhysAnswer | null;
  /** Why the GPA is not guest memory (a hole or a device), when it is not. */
  notMemory: string | null;
  /** Up to 16 bytes at the GPA (within its page), when read. */
  bytes: Uint8Array | null;
  /** Why `bytes` is null for RAM/ROM, when it is. */
  bytesUnread: string | null;
}

export interface Translation {
  domain: string;
  qemuPid: number;
  gva: bigint;
  cpu: number;
  cr3Source: 'vcpu' | 'option';
  mode: PagingMode;
  /** PCID in CR3 when the vCPU has CR4.PCIDE set. */
  pcid: number | null;
  readVia: ReadVia;
  walk: WalkOutcome;
  target: TranslationTarget | null;
  /** How the answer was reached (reader fallback, KPTI, ...). */
  notes: string[];
}

/** A guest-physical region with its host residency. */
export interface MemoryMapRegion extends MapRegion {
  /** Bytes of it resident in host RAM (pagemap bit 63), for RAM/ROM with a known HVA. */
  residentBytes: number | null;
  swappedBytes: number | null;
}

export interface RamBlockReport extends RamBlock {
  /** Host address of the block's first byte, when the block is mapped into guest memory. */
  hva: bigint | null;
  /** Whether any guest-physical range shows this block (firmware tables are not mapped). */
  mapped: boolean;
  residentBytes: number | null;
}

export interface MemoryMapReport {
  domain: string;
  qemuPid: number;
  regions: MemoryMapRegion[];
  ramBlocks: RamBlockReport[];
  memoryDevices: MemoryDeviceSummary[];
  /** Why residency is missing, when it is. */
  residencyUnavailable: string | null;
}

/** What a session learns once about QEMU's memory layout. */
export interface PhysMapFacts {
  map: GuestPhysMap;
  ramBlocks: RamBlock[];
  memoryDevices: MemoryDeviceSummary[];
}

/** Bytes shown from the translated address. */
const PREVIEW_BYTES = 16;

/** A reader opened for a session. */
type OpenReader = ProcMemReader | MonitorReader;

/**
 * One inspection session on a running domain. Create it with {@link Inspector.run}.
 */
/** What an inspector needs of a driver: the running QEMU and a monitor session on it (native driver). */
export interface InspectTarget {
  runtime(ref: string): Promise<{ name: string; pid: number }>;
  withMonitor<T>(ref: string, fn: (client: QmpClient) => Promise<T>, signal?: AbortSignal): Promise<T>;
}

export class Inspector {
  readonly domain: string;
  readonly qemuPid: number;
  readonly #client: QmpClient;
  readonly #signal: AbortSignal | undefined;
  #map: Promise<PhysMapFacts> | null = null;
  #pagemap: Promise<HostPagemap | { reason: string }> | null = null;
  #procMem: Promise<ProcMemReader | { reason: string }> | null = null;

  private constructor(domain: string, qemuPid: number, client: QmpClient, signal: AbortSignal | undefined) {
    this.domain = domain;
    this.qemuPid = qemuPid;
    this.#client = client;
    this.#signal = signal;
  }

  /**
   * Runs `fn` with an inspector of domain `ref`, inside one monitor session; closes what it
   * opened afterwards.
   * @throws VirtError NO_DOMAIN, OPERATION_INVALID (not running), MONITOR_FAILED, TIMEOUT,
   *   and whatever `fn` throws
   */
  static async run<T>(driver: InspectTarget, ref: string, fn: (insp: Inspector) => Promise<T>, opts: { signal?: AbortSignal } = {}): Promise<T> {
    const rt = await driver.runtime(ref);
    return driver.withMonitor(ref, async (client) => {
      const insp = new Inspector(rt.name, rt.pid, client, opts.signal);
      try {
        return await fn(insp);
      } finally {
        await insp.#close();
      }
    }, opts.signal);
  }

  async #close(): Promise<void> {
    const pm = await this.#pagemap?.catch(() => null);
    if (pm instanceof HostPagemap) await pm.close();
    const mem = await this.#procMem?.catch(() => null);
    if (mem instanceof ProcMemReader) await mem.close();
  }

  #hmp(command: string): Promise<string> {
    return this.#client.hmp(command, this.#signal ? { signal: this.#signal } : {});
  }

  /** The vCPUs' registers, read now. @throws VirtError on monitor failure or unparsable output */
  async registers(): Promise<VcpuRegisters[]> {
    return parseRegisters(await this.#hmp('info registers -a'));
  }

  /**
   * The guest-physical map (read once per session): flat view, RAM blocks, memory devices and
   * each mapped RAM block's host address (one `gpa2hva` per block).
   */
  physMap(): Promise<PhysMapFacts> {
    this.#map ??= this.#loadMap();
    return this.#map;
  }

  async #loadMap(): Promise<PhysMapFacts> {
    const ranges = parseFlatView(await this.#hmp('info mtree -f'));
    const ramBlocks = parseRamBlocks(await this.#hmp('info ramblock'));
    const memoryDevices = await queryMemoryDevices(this.#client, this.#signal ? { signal: this.#signal } : {});
    const ramBlockHva = new Map<string, bigint>();
    for (const r of ranges) {
      if (r.type !== 'ram' && r.type !== 'rom') continue;
      const block = ramBlockOfRegion(ramBlocks, r.region);
      if (!block || ramBlockHva.has(block.name)) continue;
      const a = parseHostAddress(await this.#hmp(`gpa2hva 0x${r.start.toString(16)}`));
      // The range starts `offset` bytes into its block, so the block starts that much lower.
      if ('address' in a) ramBlockHva.set(block.name, a.address - r.offset);
    }
    return {
      map: GuestPhysMap.build({ ranges, ramBlocks, ramBlockHva, memoryDevices }),
      ramBlocks,
      memoryDevices: memoryDevices.map((d) => summarizeMemoryDevice(d)?.summary).filter((d) => d !== undefined),
    };
  }

  #hostPagemap(): Promise<HostPagemap | { reason: string }> {
    this.#pagemap ??= HostPagemap.open(this.qemuPid);
    return this.#pagemap;
  }

  /** A reader of guest memory as preferred, and a note when 'auto' fell back to the monitor. */
  async #reader(via: ReadPreference, map: GuestPhysMap): Promise<{ reader: OpenReader; note: string | null }> {
    if (via === 'monitor') return { reader: new MonitorReader(this.#client, map, this.#signal), note: null };
    this.#procMem ??= ProcMemReader.open(this.qemuPid, map);
    const mem = await this.#procMem;
    if (mem instanceof ProcMemReader) return { reader: mem, note: null };
    if (via === 'proc-mem') {
      throw new VirtError('OPERATION_FAILED', `operation failed: ${mem.reason}; reading QEMU's memory directly needs root or ptrace rights on the QEMU process (or use --via monitor)`);
    }
    return { reader: new MonitorReader(this.#client, map, this.#signal), note: `${mem.reason}: guest memory was read through the monitor (HMP xp) instead` };
  }

  /**
   * A translator bound to one vCPU register snapshot: registers, memory map and files are read
   * once, then each translation reads only page tables (and the host page map and a few bytes
   * at the address, unless turned off). For many addresses.
   * @throws VirtError INVALID_ARG (no such vCPU), OPERATION_FAILED (reader unavailable), monitor errors
   */
  async translator(opts: TranslatorOptions = {}): Promise<(gva: bigint) => Promise<Translation>> {
    const cpuIndex = opts.cpu ?? 0;
    const vcpus = await this.registers();
    const regs = vcpus.find((v) => v.cpu === cpuIndex);
    if (!regs) {
      throw new VirtError('INVALID_ARG', `invalid argument: vCPU ${cpuIndex} does not exist; domain '${this.domain}' has vCPUs ${vcpus.map((v) => v.cpu).join(', ')}`);
    }
    const { map } = await this.physMap();
    const { reader, note } = await this.#reader(opts.via ?? 'auto', map);
    const pagemap = opts.hostPhys === false ? { reason: 'not asked for' } : await this.#hostPagemap();
    const cr3 = opts.cr3 ?? regs.cr3;
    const mode = pagingMode(regs);
    const base = {
      domain: this.domain, qemuPid: this.qemuPid, cpu: cpuIndex, cr3Source: opts.cr3 === undefined ? 'vcpu' as const : 'option' as const,
      mode, pcid: cr3Pcid(cr3, regs.cr4), readVia: reader.via,
    };
    const nx = nxEnabled(regs.efer);
    const cache = opts.cacheTables ? new PageCache() : null;
    const readSync = reader instanceof ProcMemReader ? (r: PhysReadRequest): PhysReadAnswer => reader.read(r) : null;
    const walkRead = readSync && cache ? cache.sync(readSync) : readSync;
    const walkReadAsync = reader instanceof MonitorReader
      ? (cache ? cache.async((r) => reader.read(r)) : (r: PhysReadRequest) => reader.read(r))
      : null;
    const target = { map, reader, pagemap, bytes: opts.bytes ?? true };
    return async (gva: bigint): Promise<Translation> => {
      const req = { gva, cr3, mode, nx };
      const walk = walkRead ? walkSync(req, walkRead) : await walkAsync(req, walkReadAsync!);
      return {
        ...base, gva, walk,
        target: walk.kind === 'mapped' ? await this.#target(walk.gpa, target) : null,
        notes: [...(note ? [note] : []), ...walk.notes],
      };
    };
  }

  /** Translate one guest-virtual address. @throws as {@link translator} */
  async translate(gva: bigint, opts: TranslateOptions = {}): Promise<Translation> {
    return (await this.translator(opts))(gva);
  }

  async #target(
    gpa: bigint,
    t: { map: GuestPhysMap; reader: OpenReader; pagemap: HostPagemap | { reason: string }; bytes: boolean },
  ): Promise<TranslationTarget> {
    const region = t.map.locate(gpa);
    if (!isMemory(region)) {
      return { gpa, region, ramBlockOffset: null, hva: null, hpa: null, notMemory: whyNotMemory(gpa, region), bytes: null, bytesUnread: null };
    }
    const ramBlockOffset = region.offset === null ? null : region.offset + (gpa - region.start);
    const hva = t.map.hvaOf(gpa);
    const entry = hva !== null && t.pagemap instanceof HostPagemap ? t.pagemap.entrySync(hva) : null;
    const hpa = hva === null ? null : entry ? hostPhysFromEntry(hva, entry) : { reason: (t.pagemap as { reason: string }).reason };
    const out: TranslationTarget = { gpa, region, ramBlockOffset, hva, hpa, notMemory: null, bytes: null, bytesUnread: null };
    if (!t.bytes) return out;
    if (entry && !entry.present && !entry.swapped) {
      // Reading it would make the host map a zero page into QEMU just to show zeros.
      out.bytesUnread = 'the host has never backed this page (QEMU has not touched it): it reads as zeros and is left untouched';
      return out;
    }
    // Stay within the 4 KiB page: the next one may belong to something else.
    const req = { gpa, length: Math.min(PREVIEW_BYTES, 4096 - Number(gpa & 0xfffn)) };
    const answer: PhysReadAnswer = t.reader instanceof ProcMemReader ? t.reader.read(req) : await t.reader.read(req);
    if (answer instanceof Uint8Array) out.bytes = answer;
    else out.bytesUnread = answer.unreadable;
    return out;
  }

  /**
   * The guest-physical memory map with host addresses and residency.
   * @throws VirtError on monitor failure or unparsable output
   */
  async memoryMap(): Promise<MemoryMapReport> {
    const { map, ramBlocks, memoryDevices } = await this.physMap();
    const pagemap = await this.#hostPagemap();
    const residency = async (hva: bigint | null, bytes: number): Promise<{ residentBytes: number | null; swappedBytes: number | null }> =>
      hva === null || !(pagemap instanceof HostPagemap) ? { residentBytes: null, swappedBytes: null } : pagemap.residency(hva, bytes);
    const regions: MemoryMapRegion[] = [];
    for (const r of map.regions) {
      regions.push({ ...r, ...(isMemory(r) ? await residency(r.hva, r.sizeBytes) : { residentBytes: null, swappedBytes: null }) });
    }
    const blocks: RamBlockReport[] = [];
    for (const b of ramBlocks) {
      const shown = map.regions.find((r) => r.ramBlock === b.name && r.hva !== null && r.offset !== null);
      const hva = shown ? shown.hva! - shown.offset! : null;
      blocks.push({ ...b, hva, mapped: map.regions.some((r) => r.ramBlock === b.name), residentBytes: (await residency(hva, b.usedBytes)).residentBytes });
    }
    return {
      domain: this.domain, qemuPid: this.qemuPid, regions, ramBlocks: blocks, memoryDevices,
      residencyUnavailable: pagemap instanceof HostPagemap ? null : pagemap.reason,
    };
  }
}

/** Translate one address of a running domain. @throws as {@link Inspector.translator} */
export function translate(driver: InspectTarget, ref: string, gva: bigint, opts: TranslateOptions & { signal?: AbortSignal } = {}): Promise<Translation> {
  return Inspector.run(driver, ref, (i) => i.translate(gva, opts), opts.signal ? { signal: opts.signal } : {});
}

/** The memory map of a running domain. @throws as {@link Inspector.memoryMap} */
export function memoryMap(driver: InspectTarget, ref: string, opts: { signal?: AbortSignal } = {}): Promise<MemoryMapReport> {
  return Inspector.run(driver, ref, (i) => i.memoryMap(), opts);
}
