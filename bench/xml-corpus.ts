/**
 * How much of libvirt's own memory configuration virtmem's XML mapping understands, measured on
 * a corpus of libvirt's test inputs that this machine's libvirt accepted.
 *
 *   npx tsc -p . && node dist/bench/xml-corpus.js --dir /work/corpus/out [--libvirt] [--json FILE] [--verbose]
 *
 * The corpus directory holds one subdirectory per input (gathered outside this repository: the
 * inputs are libvirt's files and are not ours to commit):
 *   <input>/result.json   { "accepted": true|false, "defineError"?: "..." }  (optional)
 *   <input>/dumpxml.xml   `virsh dumpxml --inactive` after `virsh define` (present when accepted)
 * An input counts as accepted by libvirt when dumpxml.xml exists. The corpus used first (122
 * memory-related inputs of libvirt 9.0.0's tests/qemuxml2argvdata, how they were selected and
 * defined, and libvirt's QEMU command lines for each memory feature) is described in the
 * research note that came with this script (/work/corpus/NOTES.md on the machine that made it).
 *
 * For each accepted input, virtmem's `parseDomainXml` reads libvirt's dumpxml:
 *   - refused: it throws; the error names the element (grouped by that element below);
 *   - defined: the memory facts (bench/lib/memory-facts.ts) of libvirt's XML are compared with
 *     those of virtmem's `formatDomainXml(def)`. Any difference (a fact missing, different or
 *     extra on virtmem's side) makes the input 'wrong': virtmem would run a guest whose memory is
 *     not the one libvirt would run. Equal is the goal; wrong must be 0.
 * For a refused input the parser names only the first obstacle, so each named element is removed
 * in turn and the document parsed again: the report lists every blocker, with how many inputs
 * each blocks at all and how many it alone blocks (what supporting it would unlock).
 * With --libvirt, virtmem's XML is also defined in libvirt (as corpus-bench-<n>, undefined right
 * after) and the facts of libvirt's dumpxml of it are compared too, so libvirt's own defaults and
 * normalisation are applied to both sides. Needs qemu:///system.
 *
 * Exit status: 0, or 1 when any input is 'wrong'.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VirtError } from '../src/domain/errors.js';
import { formatDomainXml, parseDomainXml } from '../src/domain/xml.js';
import { formatXmlTree, parseXmlTree, type Element } from '../src/domain/xml-tree.js';
import { describeDifference, diffMemoryFacts, extractMemoryFacts, type FactDifference } from './lib/memory-facts.js';
import { virsh } from './libvirt.js';

export type Outcome =
  | { kind: 'libvirt-refused'; error: string }
  | { kind: 'refused'; code: string; element: string; error: string; blockers: string[] }
  | { kind: 'equal'; warnings: number }
  | { kind: 'wrong'; differences: FactDifference[]; against: 'virtmem-xml' | 'libvirt-redefined' };

export interface InputResult {
  input: string;
  outcome: Outcome;
}

/**
 * The element an error message names: the first "<...>" in it, without attribute values that
 * vary from input to input (sizes, counts); names and model values are kept.
 */
export function namedElement(message: string): string {
  const m = /<([^<>]+)>/.exec(message);
  if (m === null) return message.split(':')[0] ?? message;
  return m[1]!.replace(/(\w+)='(\d[^']*)'/g, "$1='N'").replace(/>\d+<\/\w+$/, '');
}

/**
 * Removes what a refusal names, so the next refusal shows: "<devices/disk type='block'>" removes
 * those disks, "<os/type arch='i686'>" removes the attribute, "<numatune>" the element.
 * Devices named with attributes are removed whole; elsewhere the attributes are removed.
 * Returns false when nothing matched (no progress possible).
 */
function strip(root: Element, named: string): boolean {
  const [path = '', ...rest] = named.trim().split(/\s+/);
  const attrs = [...rest.join(' ').matchAll(/([\w:]+)='([^']*)'/g)].map((m) => [m[1]!, m[2]!] as const);
  const segments = path.split('/').filter(Boolean);
  if (segments[0] === 'domain' || segments.length === 0) return false;
  let parents: Element[] = [root];
  for (const seg of segments.slice(0, -1)) parents = parents.flatMap((p) => p.children.filter((c) => c.name === seg));
  const last = segments[segments.length - 1]!;
  const matches = (c: Element): boolean => c.name === last && attrs.every(([k, v]) => c.attrs[k] === v);
  let changed = false;
  for (const p of parents) {
    if (attrs.length > 0 && segments[0] !== 'devices') {
      for (const c of p.children.filter(matches)) {
        for (const [k] of attrs) delete c.attrs[k];
        changed = true;
      }
    } else {
      const before = p.children.length;
      p.children = p.children.filter((c) => !matches(c));
      changed ||= p.children.length !== before;
    }
  }
  return changed;
}

/**
 * Every element that stops virtmem from defining this document, in the order met: the parser
 * names the first, which is removed (strip) and the document parsed again, up to 20 times.
 * The last entry is '(parsed)' when nothing else blocks, or the refusal that could not be removed.
 */
export function blockers(xml: string): string[] {
  const out: string[] = [];
  let root = parseXmlTree(xml);
  for (let i = 0; i < 20; i++) {
    try {
      parseDomainXml(formatXmlTree(root));
      out.push('(parsed)');
      return out;
    } catch (err) {
      if (!(err instanceof VirtError)) throw err;
      const m = /<([^<>]+)>/.exec(err.message);
      const element = namedElement(err.message);
      out.push(err.code === 'CONFIG_UNSUPPORTED' ? element : `${element} [${err.code}]`);
      if (m === null || !strip(root, m[1]!)) return out;
      root = parseXmlTree(formatXmlTree(root));
    }
  }
  return out;
}

/** Classifies one accepted input (libvirt's dumpxml) by virtmem's parser and the fact comparison. */
export function classify(dumpxml: string, redefine?: (virtmemXml: string) => string): Outcome {
  let parsed: ReturnType<typeof parseDomainXml>;
  try {
    parsed = parseDomainXml(dumpxml);
  } catch (err) {
    if (!(err instanceof VirtError)) throw err;
    return { kind: 'refused', code: err.code, element: namedElement(err.message), error: err.message, blockers: blockers(dumpxml) };
  }
  const expected = extractMemoryFacts(dumpxml);
  const ours = formatDomainXml(parsed.def);
  const differences = diffMemoryFacts(expected, extractMemoryFacts(ours));
  if (differences.length > 0) return { kind: 'wrong', differences, against: 'virtmem-xml' };
  if (redefine !== undefined) {
    const again = diffMemoryFacts(expected, extractMemoryFacts(redefine(ours)));
    if (again.length > 0) return { kind: 'wrong', differences: again, against: 'libvirt-redefined' };
  }
  return { kind: 'equal', warnings: parsed.warnings.length };
}

/** Defines `xml` in libvirt under a scratch name, returns its inactive dumpxml, undefines it. */
function libvirtRoundTrip(n: number): (xml: string) => string {
  return (xml) => {
    const name = `corpus-bench-${n}`;
    const renamed = xml
      .replace(/<name>[^<]*<\/name>/, `<name>${name}</name>`)
      .replace(/<uuid>[^<]*<\/uuid>/, `<uuid>${randomUUID()}</uuid>`);
    const dir = mkdtempSync(join(tmpdir(), 'xml-corpus-'));
    const file = join(dir, 'domain.xml');
    writeFileSync(file, renamed);
    try {
      virsh('define', file);
      try {
        return virsh('dumpxml', '--inactive', name);
      } finally {
        virsh('undefine', name);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

function readCorpus(dir: string, useLibvirt: boolean): InputResult[] {
  const results: InputResult[] = [];
  const inputs = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort();
  let n = 0;
  for (const input of inputs) {
    const dumpPath = join(dir, input, 'dumpxml.xml');
    const resultPath = join(dir, input, 'result.json');
    if (!existsSync(dumpPath)) {
      if (!existsSync(resultPath)) continue; // not a corpus entry
      const r = JSON.parse(readFileSync(resultPath, 'utf8')) as { defineError?: string; dumpxmlError?: string };
      results.push({ input, outcome: { kind: 'libvirt-refused', error: r.defineError ?? r.dumpxmlError ?? 'no dumpxml.xml' } });
      continue;
    }
    n++;
    results.push({ input, outcome: classify(readFileSync(dumpPath, 'utf8'), useLibvirt ? libvirtRoundTrip(n) : undefined) });
  }
  return results;
}

const pct = (part: number, whole: number): string => (whole === 0 ? '-' : `${((100 * part) / whole).toFixed(1)} %`);

/** The report: counts, the wrong inputs with their differences, refusals grouped by element. */
export function report(results: InputResult[], verbose: boolean): string {
  const lines: string[] = [];
  const accepted = results.filter((r) => r.outcome.kind !== 'libvirt-refused');
  const equal = results.filter((r) => r.outcome.kind === 'equal');
  const wrong = results.filter((r) => r.outcome.kind === 'wrong');
  const refused = results.filter((r) => r.outcome.kind === 'refused');
  const row = (what: string, count: number, share: string): string =>
    `| ${what.padEnd(44)} | ${String(count).padStart(5)} | ${share.padStart(18)} |`;
  lines.push(`| ${'inputs'.padEnd(44)} | count | ${'share'.padStart(18)} |`);
  lines.push(`|${'-'.repeat(46)}|${'-'.repeat(6)}:|${'-'.repeat(19)}:|`);
  lines.push(row('total inputs', results.length, ''));
  lines.push(row('accepted by libvirt', accepted.length, `${pct(accepted.length, results.length)} of total`));
  lines.push(row('defined by virtmem, all memory facts equal', equal.length, `${pct(equal.length, accepted.length)} of acc.`));
  lines.push(row('defined by virtmem, WRONG (must be 0)', wrong.length, `${pct(wrong.length, accepted.length)} of acc.`));
  lines.push(row('refused by virtmem', refused.length, `${pct(refused.length, accepted.length)} of acc.`));

  if (wrong.length > 0) {
    lines.push('', 'Wrong (defined, but memory facts differ from libvirt\'s):');
    for (const r of wrong) {
      if (r.outcome.kind !== 'wrong') continue;
      lines.push(`  ${r.input} (against ${r.outcome.against}):`);
      for (const d of r.outcome.differences) lines.push(`    ${describeDifference(d)}`);
    }
  }

  const groups = new Map<string, InputResult[]>();
  for (const r of refused) {
    if (r.outcome.kind !== 'refused') continue;
    const key = `${r.outcome.element}${r.outcome.code === 'CONFIG_UNSUPPORTED' ? '' : ` [${r.outcome.code}]`}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  if (groups.size > 0) {
    lines.push('', 'Refused by virtmem, by the element named (count):');
    for (const [key, rs] of [...groups].sort((a, b) => b[1].length - a[1].length || a[0].localeCompare(b[0]))) {
      lines.push(`  ${String(rs.length).padStart(3)}  <${key}>`);
      if (verbose) {
        for (const r of rs) if (r.outcome.kind === 'refused') lines.push(`         ${r.input}: ${r.outcome.error}`);
      }
    }
  }
  // Everything that blocks each refused input, so work can be ordered by what it unlocks.
  const anywhere = new Map<string, number>();
  const alone = new Map<string, number>();
  let unblockable = 0;
  for (const r of refused) {
    if (r.outcome.kind !== 'refused') continue;
    const bs = r.outcome.blockers.filter((b) => b !== '(parsed)');
    if (r.outcome.blockers[r.outcome.blockers.length - 1] !== '(parsed)') unblockable++;
    for (const b of new Set(bs)) anywhere.set(b, (anywhere.get(b) ?? 0) + 1);
    if (new Set(bs).size === 1) alone.set(bs[0]!, (alone.get(bs[0]!) ?? 0) + 1);
  }
  if (anywhere.size > 0) {
    lines.push('', 'All blockers of refused inputs (each named element removed in turn, then parsed again):');
    lines.push('  inputs blocked by it | by it alone | element');
    for (const [b, count] of [...anywhere].sort((a, c) => c[1] - a[1] || a[0].localeCompare(c[0]))) {
      lines.push(`  ${String(count).padStart(20)} | ${String(alone.get(b) ?? 0).padStart(11)} | <${b}>`);
    }
    if (unblockable > 0) lines.push(`  (${unblockable} input(s) still refused after removing everything removable)`);
    if (verbose) {
      for (const r of refused) if (r.outcome.kind === 'refused') lines.push(`  ${r.input}: ${r.outcome.blockers.join(' -> ')}`);
    }
  }

  const libvirtRefused = results.filter((r) => r.outcome.kind === 'libvirt-refused');
  if (verbose && libvirtRefused.length > 0) {
    lines.push('', 'Refused by libvirt itself (not counted above):');
    for (const r of libvirtRefused) {
      if (r.outcome.kind === 'libvirt-refused') lines.push(`  ${r.input}: ${r.outcome.error.split('\n').slice(-1)[0]}`);
    }
  }
  return lines.join('\n');
}

function main(): void {
  const argv = process.argv.slice(2);
  const at = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const dir = at('--dir');
  if (dir === undefined) throw new Error('usage: node dist/bench/xml-corpus.js --dir DIR [--libvirt] [--json FILE] [--verbose]');
  const results = readCorpus(dir, argv.includes('--libvirt'));
  console.log(report(results, argv.includes('--verbose')));
  const json = at('--json');
  if (json !== undefined) writeFileSync(json, JSON.stringify(results, null, 2) + '\n');
  if (results.some((r) => r.outcome.kind === 'wrong')) process.exitCode = 1;
}

// Run only as a program, so the classification can be imported by tests.
if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href) main();
