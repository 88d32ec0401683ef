/**
 * Reading guest-physical memory, two ways:
 *
 * - ProcMemReader: guest RAM *is* an mmap in the QEMU process, so a read of /proc/PID/mem at
 *   the host address is a read of guest memory: one pread, microseconds, no monitor round trip.
 *   It needs ptrace-read rights on QEMU (root, or the same user under ptrace_scope 0/1 rules).
 * - MonitorReader: HMP `xp` through the QEMU monitor, one round trip per read (milliseconds).
 *
 * Both read only RAM and ROM: a read that would touch a device region or a hole is answered
 * with the reason instead, because MMIO reads have side effects.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { readSync } from 'node:fs';
import type { QmpClient } from '../qmp/index.js';
import { parseXp } from './hmp-answers.js';
import { isMemory, whyNotMemory, type GuestPhysMap } from './guest-phys-map.js';
import type { PhysReadAnswer, PhysReadRequest } from './walk.js';

/** How guest memory was read. */
export type ReadVia = 'proc-mem' | 'monitor';

/** The part of [gpa, gpa + length) that lies in one readable region, or why none does. */
function clip(map: GuestPhysMap, req: PhysReadRequest): { length: number; hva: bigint | null } | { unreadable: string } {
  const r = map.locate(req.gpa);
  if (!isMemory(r)) return { unreadable: whyNotMemory(req.gpa, r) };
  const left = r.end - req.gpa + 1n;
  const length = left < BigInt(req.length) ? Number(left) : req.length;
  return { length, hva: r.hva === null ? null : r.hva + (req.gpa - r.start) };
}

/** Reads guest memory through /proc/PID/mem of the QEMU process (synchronous preads). */
export class ProcMemReader {
  readonly via = 'proc-mem' as const;
  readonly #fh: FileHandle;
  readonly #map: GuestPhysMap;

  private constructor(fh: FileHandle, map: GuestPhysMap) {
    this.#fh = fh;
    this.#map = map;
  }

  /** Opens /proc/PID/mem; `{ reason }` when not permitted (then read through the monitor). */
  static async open(pid: number, map: GuestPhysMap): Promise<ProcMemReader | { reason: string }> {
    try {
      return new ProcMemReader(await open(`/proc/${pid}/mem`, 'r'), map);
    } catch (e) {
      return { reason: `cannot open /proc/${pid}/mem (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
    }
  }

  /** One read; never throws (failures are answers). */
  read(req: PhysReadRequest): PhysReadAnswer {
    const c = clip(this.#map, req);
    if ('unreadable' in c) return c;
    if (c.hva === null) return { unreadable: `the host address of guest-physical 0x${req.gpa.toString(16)} is not known` };
    const buf = Buffer.alloc(c.length);
    try {
      const n = readSync(this.#fh.fd, buf, 0, c.length, c.hva);
      return buf.subarray(0, n);
    } catch (e) {
      return { unreadable: `reading QEMU's memory at host address 0x${c.hva.toString(16)} failed (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
    }
  }

  async close(): Promise<void> {
    await this.#fh.close();
  }
}

/** Reads guest memory with HMP `xp` (a monitor round trip per read). */
export class MonitorReader {
  readonly via = 'monitor' as const;
  readonly #client: QmpClient;
  readonly #map: GuestPhysMap;
  readonly #signal: AbortSignal | undefined;

  constructor(client: QmpClient, map: GuestPhysMap, signal?: AbortSignal) {
    this.#client = client;
    this.#map = map;
    this.#signal = signal;
  }

  /**
   * One read: 64-bit words when aligned (a page-table entry is one `xp /1gx`), else bytes.
   * @throws what QmpClient.hmp throws (monitor gone, timeout, abort), VirtError on a bad dump.
   */
  async read(req: PhysReadRequest): Promise<PhysReadAnswer> {
    const c = clip(this.#map, req);
    if ('unreadable' in c) return c;
    const words = req.gpa % 8n === 0n && c.length % 8 === 0;
    const unit = words ? 'g' : 'b';
    const count = words ? c.length / 8 : c.length;
    const text = await this.#client.hmp(`xp /${count}${unit}x 0x${req.gpa.toString(16)}`, this.#signal ? { signal: this.#signal } : {});
    return parseXp(text, unit, c.length);
  }
}

const PAGE = 4096n;

/**
 * A page cache in front of a reader: the first read in a 4 KiB page reads the whole page, later
 * reads in it are answered from memory. For translating many addresses, whose walks share
 * most tables. It is a snapshot: changes the guest makes to a cached page later are not seen.
 * Reads that cross a page boundary bypass it.
 */
export class PageCache {
  readonly #pages = new Map<bigint, PhysReadAnswer>();
  /** Pages read so far (cache misses). */
  misses = 0;

  #lookup(req: PhysReadRequest): { page: bigint; hit: PhysReadAnswer | undefined } | null {
    const page = req.gpa & ~(PAGE - 1n);
    if (req.gpa + BigInt(req.length) > page + PAGE) return null;
    return { page, hit: this.#pages.get(page) };
  }

  #answer(req: PhysReadRequest, page: bigint, whole: PhysReadAnswer): PhysReadAnswer {
    if (!(whole instanceof Uint8Array)) return whole;
    const at = Number(req.gpa - page);
    return whole.subarray(at, at + req.length);
  }

  /** Wraps a synchronous reader. */
  sync(read: (req: PhysReadRequest) => PhysReadAnswer): (req: PhysReadRequest) => PhysReadAnswer {
    return (req) => {
      const l = this.#lookup(req);
      if (!l) return read(req);
      let whole = l.hit;
      if (whole === undefined) {
        this.misses++;
        whole = read({ gpa: l.page, length: Number(PAGE) });
        this.#pages.set(l.page, whole);
      }
      return this.#answer(req, l.page, whole);
    };
  }

  /** Wraps an asynchronous reader. */
  async(read: (req: PhysReadRequest) => Promise<PhysReadAnswer>): (req: PhysReadRequest) => Promise<PhysReadAnswer> {
    return async (req) => {
      const l = this.#lookup(req);
      if (!l) return read(req);
      let whole = l.hit;
      if (whole === undefined) {
        this.misses++;
        whole = await read({ gpa: l.page, length: Number(PAGE) });
        this.#pages.set(l.page, whole);
      }
      return this.#answer(req, l.page, whole);
    };
  }
}
