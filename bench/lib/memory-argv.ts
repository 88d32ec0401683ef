/**
 * The memory part of a QEMU command line, normalised so that libvirt's (`virsh domxml-to-native
 * qemu-argv`, or the .args files of libvirt's test suite) and virtmem's compare equal when they
 * give QEMU the same memory: the same RAM size, hot-plug slots and ceiling, the same backends
 * with the same properties, the same -numa options, the same memory devices, memory locking and
 * the machine's memory options. Pure: words in, a comparable object out.
 *
 * What is not memory, or names the same thing differently, is dropped or folded:
 *   - backend ids of memory devices (libvirt "memdimm0", virtmem "mem-dimm0") become their
 *     position; the RAM backends keep theirs ("pc.ram", "ram-nodeN"), which both use;
 *   - mem-path becomes what it is: a hugetlbfs mount of a page size (libvirt's test suite mounts
 *     /dev/hugepages2M and /dev/hugepages1G; a real host's mounts come from `pageSizeOfPath`), the
 *     directory for file-backed RAM, or a device's own file;
 *   - x-use-canonical-path-for-ramblock-id (a RAM block name), thread-context objects and
 *     prealloc-context (which host CPUs do the preallocation) are dropped;
 *   - device ids, memdev names and PCI bus addresses are dropped (a DIMM's addr, a number, is a
 *     guest-physical address and stays);
 *   - without guest NUMA, QEMU's own -m RAM equals an anonymous "pc.ram" backend of that size:
 *     a command line without the backend gets it, and the machine option naming it; a legacy
 *     -numa node,mem= (old machine types) equals an anonymous memdev of that size.
 */

export interface MemoryArgv {
  m: { sizeKiB: number; slots?: number; maxmemKiB?: number };
  machine: string[];
  memLock: boolean;
  smp: { current: number; max: number };
  backends: Array<Record<string, unknown>>;
  numa: string[];
  devices: Array<Record<string, unknown>>;
}

/** Splits a shell command line as libvirt prints it ('...' quoting, backslash-newline joins). */
export function shellWords(text: string): string[] {
  const words: string[] = [];
  let word: string | null = null;
  const src = text.replace(/\\\n/g, ' ');
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    if (c === "'") {
      const end = src.indexOf("'", i + 1);
      word = (word ?? '') + src.slice(i + 1, end < 0 ? src.length : end);
      i = end < 0 ? src.length : end;
    } else if (/\s/.test(c)) {
      if (word !== null) words.push(word);
      word = null;
    } else {
      word = (word ?? '') + c;
    }
  }
  if (word !== null) words.push(word);
  return words;
}

const MEMORY_DEVICES = new Set(['pc-dimm', 'nvdimm', 'virtio-mem-pci', 'virtio-pmem-pci']);
const MACHINE_MEMORY_OPTIONS = new Set(['nvdimm', 'mem-merge', 'memory-backend', 'hmat']);

/** Page size (KiB) of a hugetlbfs path by libvirt's test-suite mount names, or null. */
export function testSuitePageSize(path: string): number | null {
  if (/\/hugepages2M(\/|$)/.test(path)) return 2048;
  if (/\/hugepages1G(\/|$)/.test(path)) return 1048576;
  return null;
}

/**
 * The memory part of `words` (a QEMU argv, with or without the binary). `pageSizeOfPath` tells
 * which mem-paths are hugetlbfs mounts (and of what page size); `memoryDir` tests a path for the
 * directory of file-backed RAM.
 */
export function memoryArgv(words: readonly string[], opts: { pageSizeOfPath: (path: string) => number | null; isMemoryDir: (path: string) => boolean }): MemoryArgv {
  const out: MemoryArgv = { m: { sizeKiB: 0 }, machine: [], memLock: false, smp: { current: 1, max: 1 }, backends: [], numa: [], devices: [] };
  let devicePosition = 0;
  const values = (opt: string): string[] => words.flatMap((w, i) => (w === opt && i + 1 < words.length ? [words[i + 1]!] : []));

  for (const m of values('-m')) {
    if (/^\d+$/.test(m)) out.m = { sizeKiB: Number(m) * 1024 };
    else {
      const kv = new Map(m.split(',').map((p) => p.split('=') as [string, string]));
      const kib = (v: string | undefined): number | undefined => (v === undefined ? undefined : Number(v.replace(/k$/, '')));
      out.m = { sizeKiB: kib(kv.get('size'))! };
      if (kv.has('slots')) out.m.slots = Number(kv.get('slots'));
      if (kv.has('maxmem')) out.m.maxmemKiB = kib(kv.get('maxmem'))!;
    }
  }
  for (const machine of values('-machine')) {
    for (const opt of machine.split(',').slice(1)) {
      if (MACHINE_MEMORY_OPTIONS.has(opt.split('=')[0]!)) out.machine.push(opt);
    }
  }
  out.memLock = values('-overcommit').some((v) => v.split(',').includes('mem-lock=on'));
  for (const smp of values('-smp')) {
    const [first, ...rest] = smp.split(',');
    const current = Number(first);
    const max = rest.find((r) => r.startsWith('maxcpus='));
    out.smp = { current, max: max === undefined ? current : Number(max.slice('maxcpus='.length)) };
  }
  for (const o of values('-object')) {
    if (!o.startsWith('{')) continue;
    const obj = JSON.parse(o) as Record<string, unknown>;
    const type = String(obj['qom-type']);
    if (!type.startsWith('memory-backend-')) continue;
    delete obj['x-use-canonical-path-for-ramblock-id'];
    delete obj['prealloc-context'];
    const id = String(obj['id']);
    if (id !== 'pc.ram' && !id.startsWith('ram-node')) obj['id'] = `device${devicePosition++}`;
    const path = obj['mem-path'];
    if (typeof path === 'string') {
      const page = opts.pageSizeOfPath(path);
      obj['mem-path'] = page !== null ? `hugetlbfs:${page}` : opts.isMemoryDir(path) ? 'memory-dir' : path;
    }
    out.backends.push(obj);
  }
  // Old machine types take a cell's size as -numa node,mem=MiB (with -mem-prealloc for
  // immediate allocation): QEMU makes anonymous RAM for it, the same as a memdev of that size.
  const memPrealloc = words.includes('-mem-prealloc');
  out.numa = values('-numa').map((n) => {
    const m = /^(node,nodeid=(\d+).*),mem=(\d+)$/.exec(n);
    if (m === null) return n;
    out.backends.push({ 'qom-type': 'memory-backend-ram', id: `ram-node${m[2]}`, ...(memPrealloc ? { prealloc: true } : {}), size: Number(m[3]) * 1024 * 1024 });
    return `${m[1]},memdev=ram-node${m[2]}`;
  });
  for (const d of values('-device')) {
    if (!d.startsWith('{')) continue;
    const dev = JSON.parse(d) as Record<string, unknown>;
    if (!MEMORY_DEVICES.has(String(dev['driver']))) continue;
    delete dev['id'];
    delete dev['memdev'];
    delete dev['bus'];
    if (typeof dev['addr'] === 'string') delete dev['addr'];
    out.devices.push(dev);
  }
  // QEMU's own RAM for -m is an anonymous backend named pc.ram.
  if (out.numa.length === 0 && !out.backends.some((b) => b['id'] === 'pc.ram')) {
    out.backends.unshift({ 'qom-type': 'memory-backend-ram', id: 'pc.ram', size: out.m.sizeKiB * 1024 });
    out.machine.push('memory-backend=pc.ram');
  }
  out.machine.sort();
  return out;
}
