/**
 * Minimal, pure ELF64 little-endian reading: just enough to tell whether a binary is static (can
 * run alone in an initramfs) and to read a kernel module's `.modinfo` (its dependencies).
 *
 * Layout per the System V gABI ("ELF-64 Object File Format"): header fields e_phoff 0x20,
 * e_shoff 0x28, e_phentsize 0x36, e_phnum 0x38, e_shentsize 0x3a, e_shnum 0x3c, e_shstrndx 0x3e.
 * Every function returns null (never throws) on input that is not such an ELF file.
 */

const PT_INTERP = 3;

interface ElfHeader {
  phoff: number;
  phentsize: number;
  phnum: number;
  shoff: number;
  shentsize: number;
  shnum: number;
  shstrndx: number;
}

function readHeader(buf: Buffer): ElfHeader | null {
  if (buf.length < 64) return null;
  if (buf[0] !== 0x7f || buf[1] !== 0x45 || buf[2] !== 0x4c || buf[3] !== 0x46) return null;
  // EI_CLASS 2 = 64-bit, EI_DATA 1 = little-endian: all the guest deals with is x86_64.
  if (buf[4] !== 2 || buf[5] !== 1) return null;
  return {
    phoff: Number(buf.readBigUInt64LE(0x20)),
    shoff: Number(buf.readBigUInt64LE(0x28)),
    phentsize: buf.readUInt16LE(0x36),
    phnum: buf.readUInt16LE(0x38),
    shentsize: buf.readUInt16LE(0x3a),
    shnum: buf.readUInt16LE(0x3c),
    shstrndx: buf.readUInt16LE(0x3e),
  };
}

/**
 * Whether `buf` is an ELF64 executable without a program interpreter (statically linked).
 * Returns null when `buf` is not an ELF64 little-endian file.
 */
export function elfIsStatic(buf: Buffer): boolean | null {
  const h = readHeader(buf);
  if (!h) return null;
  for (let i = 0; i < h.phnum; i++) {
    const at = h.phoff + i * h.phentsize;
    if (at + 4 > buf.length) return null;
    if (buf.readUInt32LE(at) === PT_INTERP) return false;
  }
  return true;
}

/** The bytes of the section called `name`, or null if absent or `buf` is not ELF64 LE. */
export function elfSection(buf: Buffer, name: string): Buffer | null {
  const h = readHeader(buf);
  if (!h || h.shentsize < 64 || h.shstrndx >= h.shnum) return null;
  const section = (i: number): { nameOff: number; offset: number; size: number } | null => {
    const at = h.shoff + i * h.shentsize;
    if (at + 64 > buf.length) return null;
    return {
      nameOff: buf.readUInt32LE(at),
      offset: Number(buf.readBigUInt64LE(at + 0x18)),
      size: Number(buf.readBigUInt64LE(at + 0x20)),
    };
  };
  const strtab = section(h.shstrndx);
  if (!strtab || strtab.offset + strtab.size > buf.length) return null;
  for (let i = 0; i < h.shnum; i++) {
    const s = section(i);
    if (!s) return null;
    const nameStart = strtab.offset + s.nameOff;
    const nameEnd = buf.indexOf(0, nameStart);
    if (nameEnd < 0 || nameEnd > strtab.offset + strtab.size) continue;
    if (buf.toString('latin1', nameStart, nameEnd) !== name) continue;
    if (s.offset + s.size > buf.length) return null;
    return buf.subarray(s.offset, s.offset + s.size);
  }
  return null;
}

/**
 * A kernel module's `.modinfo` as key -> values (keys such as `alias` repeat). The section is a
 * run of NUL-terminated `key=value` strings (include/linux/moduleparam.h, __MODULE_INFO).
 * Returns null when the file has no `.modinfo`.
 */
export function parseModinfo(ko: Buffer): Map<string, string[]> | null {
  const sec = elfSection(ko, '.modinfo');
  if (!sec) return null;
  const info = new Map<string, string[]>();
  for (const entry of sec.toString('latin1').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq <= 0) continue;
    const key = entry.slice(0, eq);
    const list = info.get(key) ?? [];
    list.push(entry.slice(eq + 1));
    info.set(key, list);
  }
  return info;
}
