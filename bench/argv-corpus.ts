/**
 * Does virtmem give QEMU the same memory as libvirt does, for the same domain XML? Measured on
 * the corpus of bench/xml-corpus.ts: for every input virtmem defines, the memory part of the
 * command line virtmem's native driver builds (src/driver/native/qemu-argv.ts) is compared with
 * libvirt's own (bench/lib/memory-argv.ts normalises both):
 *   <input>/argv.txt           `virsh domxml-to-native qemu-argv` on this machine (QEMU 7.2)
 *   <input>/libvirt-test.args  libvirt 9.0's test-suite expectation for its latest capabilities
 *                              (QEMU 8.0, fake hugetlbfs mounts /dev/hugepages2M and 1G), used
 *                              when this machine could not make an argv (huge pages, host nodes)
 *
 *   node dist/bench/argv-corpus.js --dir /work/corpus/out [--verbose]
 *
 * Exit status 1 when any input differs.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { VirtError } from '../src/domain/errors.js';
import { parseDomainXml } from '../src/domain/xml.js';
import { StatePaths } from '../src/driver/native/paths.js';
import { buildQemuArgv } from '../src/driver/native/qemu-argv.js';
import { planMemoryLayout } from '../src/driver/native/qemu-memory.js';
import { memoryArgv, shellWords, testSuitePageSize, type MemoryArgv } from './lib/memory-argv.js';

/** virtmem's hugetlbfs mounts in this comparison: named as libvirt's test suite names them. */
const MOUNTS = new Map([[2048, '/dev/hugepages2M'], [1048576, '/dev/hugepages1G']]);
const RUN = new StatePaths('/var/lib/virtmem').run('corpus');

export type ArgvOutcome =
  | { kind: 'equal'; source: string }
  | { kind: 'different'; source: string; libvirt: MemoryArgv; virtmem: MemoryArgv }
  | { kind: 'refused'; reason: string }
  | { kind: 'no-argv' };

/** The memory argv virtmem builds for a libvirt XML document. @throws VirtError when refused */
export function virtmemMemoryArgv(xml: string): MemoryArgv {
  const { def } = parseDomainXml(xml);
  const plan = planMemoryLayout(def, { defaultHugepageKiB: 2048 });
  const words = buildQemuArgv({ def, paths: RUN, accel: 'tcg', kernel: '/k', memory: { plan, backing: { hugetlbfs: MOUNTS, memoryDir: RUN.memoryDir } } });
  return memoryArgv(words, { pageSizeOfPath: testSuitePageSize, isMemoryDir: (p) => p === RUN.memoryDir });
}

/** libvirt's memory argv from its command line text. */
export function libvirtMemoryArgv(text: string): MemoryArgv {
  return memoryArgv(shellWords(text), { pageSizeOfPath: testSuitePageSize, isMemoryDir: (p) => p.includes('/qemu/ram/') });
}

/**
 * Whether a libvirt test-suite .args file is for current QEMU capabilities (x86_64-latest: QEMU
 * 8.0 here, close to this machine's 7.2): those always carry -sandbox; the older .args were made
 * with QEMU versions from before memory backends were used for everything, and say nothing about
 * what libvirt gives QEMU 7.2.
 */
const isLatestArgs = (text: string): boolean => /^-sandbox /m.test(text);

function compareInput(dir: string): ArgvOutcome {
  const sourceFile = ['argv.txt', 'libvirt-test.args'].find((f) => existsSync(join(dir, f)) && (f === 'argv.txt' || isLatestArgs(readFileSync(join(dir, f), 'utf8'))));
  if (sourceFile === undefined || !existsSync(join(dir, 'dumpxml.xml'))) return { kind: 'no-argv' };
  let virtmem: MemoryArgv;
  try {
    virtmem = virtmemMemoryArgv(readFileSync(join(dir, 'dumpxml.xml'), 'utf8'));
  } catch (err) {
    if (err instanceof VirtError) return { kind: 'refused', reason: err.message };
    throw err;
  }
  const libvirt = libvirtMemoryArgv(readFileSync(join(dir, sourceFile), 'utf8'));
  return isDeepStrictEqual(libvirt, virtmem) ? { kind: 'equal', source: sourceFile } : { kind: 'different', source: sourceFile, libvirt, virtmem };
}

function main(): void {
  const argv = process.argv.slice(2);
  const at = argv.indexOf('--dir');
  const dir = at >= 0 ? argv[at + 1] : undefined;
  if (dir === undefined) throw new Error('usage: node dist/bench/argv-corpus.js --dir DIR [--verbose]');
  const verbose = argv.includes('--verbose');
  const counts = new Map<string, number>();
  for (const input of readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort()) {
    const r = compareInput(join(dir, input));
    const key = r.kind === 'equal' || r.kind === 'different' ? `${r.kind} (${r.source})` : r.kind;
    counts.set(key, (counts.get(key) ?? 0) + 1);
    if (r.kind === 'different') {
      console.log(`different: ${input} (${r.source})`);
      for (const k of Object.keys(r.libvirt) as Array<keyof MemoryArgv>) {
        if (!isDeepStrictEqual(r.libvirt[k], r.virtmem[k])) console.log(`  ${k}:\n    libvirt: ${JSON.stringify(r.libvirt[k])}\n    virtmem: ${JSON.stringify(r.virtmem[k])}`);
      }
    } else if (verbose) {
      console.log(`${r.kind}: ${input}${r.kind === 'refused' ? ` (${r.reason})` : ''}`);
    }
  }
  for (const [k, n] of [...counts].sort()) console.log(`${String(n).padStart(4)}  ${k}`);
  if ([...counts.keys()].some((k) => k.startsWith('different'))) process.exitCode = 1;
}

if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href) main();
