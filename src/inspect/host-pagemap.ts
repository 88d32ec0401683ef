/**
 * The host's view of QEMU's memory: /proc/PID/pagemap of the QEMU process tells, per 4 KiB
 * page of its address space, whether the page is resident and in which host page frame
 * (Documentation/admin-guide/mm/pagemap.rst): bits 0-54 PFN (when present), 55 soft-dirty,
 * 56 exclusively mapped, 61 file page or shared anonymous, 62 swapped, 63 present.
 *
 * Since Linux 4.2 the PFN reads as 0 for readers without CAP_SYS_ADMIN; the flags stay.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { readSync } from 'node:fs';

export const HOST_PAGE_BYTES = 4096;
const ENTRY_BYTES = 8;
/** Entries read per chunk when counting residency (512 KiB of pagemap = 256 MiB of memory). */
const CHUNK_ENTRIES = 64 * 1024;

export interface PagemapEntry {
  present: boolean;
  swapped: boolean;
  /** Page frame number; null when not present or hidden (reader lacks CAP_SYS_ADMIN). */
  pfn: bigint | null;
  exclusive: boolean;
  softDirty: boolean;
}

/** Decodes one 64-bit pagemap entry. */
export function decodePagemapEntry(raw: bigint): PagemapEntry {
  const present = (raw >> 63n) === 1n;
  const pfn = raw & ((1n << 55n) - 1n);
  return {
    present,
    swapped: ((raw >> 62n) & 1n) === 1n,
    pfn: present && pfn !== 0n ? pfn : null,
    exclusive: ((raw >> 56n) & 1n) === 1n,
    softDirty: ((raw >> 55n) & 1n) === 1n,
  };
}

/** A host physical address, or why there is none. */
export type HostPhysAnswer = { hpa: bigint } | { reason: string };

/** The host physical address of `hva` given its pagemap entry. */
export function hostPhysFromEntry(hva: bigint, e: PagemapEntry): HostPhysAnswer {
  if (e.swapped) return { reason: 'the host has swapped this page out' };
  if (!e.present) return { reason: 'the page is not resident on the host (QEMU has not touched it yet, or the host reclaimed it)' };
  if (e.pfn === null) {
    return { reason: 'the host hides page frame numbers in /proc/PID/pagemap from processes without CAP_SYS_ADMIN (run as root)' };
  }
  return { hpa: e.pfn * BigInt(HOST_PAGE_BYTES) + (hva & BigInt(HOST_PAGE_BYTES - 1)) };
}

/** /proc/PID/pagemap of one process, open for reading. */
export class HostPagemap {
  readonly pid: number;
  #fh: FileHandle;

  private constructor(pid: number, fh: FileHandle) {
    this.pid = pid;
    this.#fh = fh;
  }

  /**
   * Opens /proc/PID/pagemap; `{ reason }` when this process may not read it (another user's
   * process without ptrace rights) or the process is gone.
   */
  static async open(pid: number): Promise<HostPagemap | { reason: string }> {
    try {
      return new HostPagemap(pid, await open(`/proc/${pid}/pagemap`, 'r'));
    } catch (e) {
      return { reason: `cannot read /proc/${pid}/pagemap: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` };
    }
  }

  /** The entry of the page holding `hva` (a synchronous pread: microseconds). */
  entrySync(hva: bigint): PagemapEntry {
    const buf = Buffer.alloc(ENTRY_BYTES);
    const n = readSync(this.#fh.fd, buf, 0, ENTRY_BYTES, (hva / BigInt(HOST_PAGE_BYTES)) * BigInt(ENTRY_BYTES));
    return decodePagemapEntry(n === ENTRY_BYTES ? buf.readBigUInt64LE(0) : 0n);
  }

  /** The host physical address of `hva`, or why not. */
  hostPhys(hva: bigint): HostPhysAnswer {
    return hostPhysFromEntry(hva, this.entrySync(hva));
  }

  /** Bytes of [hva, hva + bytes) resident in host RAM and swapped out. */
  async residency(hva: bigint, bytes: number): Promise<{ residentBytes: number; swappedBytes: number }> {
    const first = hva / BigInt(HOST_PAGE_BYTES);
    const pages = Math.ceil(bytes / HOST_PAGE_BYTES);
    let resident = 0;
    let swapped = 0;
    const buf = Buffer.alloc(Math.min(pages, CHUNK_ENTRIES) * ENTRY_BYTES);
    for (let done = 0; done < pages;) {
      const n = Math.min(pages - done, CHUNK_ENTRIES);
      // Entry offsets stay below 2^53: user addresses are below 2^57, offsets are address / 512.
      const { bytesRead } = await this.#fh.read(buf, 0, n * ENTRY_BYTES, Number((first + BigInt(done)) * BigInt(ENTRY_BYTES)));
      const got = Math.floor(bytesRead / ENTRY_BYTES);
      for (let i = 0; i < got; i++) {
        // Only the two top bits matter here: read the high 32 bits of each entry.
        const hi = buf.readUInt32LE(i * ENTRY_BYTES + 4);
        if (hi & 0x8000_0000) resident++;
        else if (hi & 0x4000_0000) swapped++;
      }
      if (got < n) break; // past the end of the address space
      done += n;
    }
    return { residentBytes: resident * HOST_PAGE_BYTES, swappedBytes: swapped * HOST_PAGE_BYTES };
  }

  async close(): Promise<void> {
    await this.#fh.close();
  }
}
