/**
 * Nothing lost under concurrency (the tester's finding 1: two `--config` changes at once lost
 * one; undefine racing setmem --config resurrected the domain). Every pair of mutating commands
 * is raced, round after round, by two CLI processes at once on a real definition, and what is
 * left is checked against the two orders the pair could have run in: the definition must be
 * what one of them gives, and each command's outcome (done, or refused in virsh's words) what
 * that order says. A change lost, a domain back after undefine, or an outcome no order explains
 * fails the round. Start and destroy race the config changes on a real QEMU guest too.
 *
 * The commands run in long-lived CLI processes (helpers/cli-worker.ts runs the CLI's main(), as
 * the warm process does), so the two of a pair start within a millisecond of each other; each
 * round reports whether they overlapped in time, and the test fails if they never did.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import { sandbox, type Sandbox } from '../helpers/cli.js';
import { CliWorker, type WorkerResult } from '../helpers/cli-workers.js';
import { skipUnlessCi } from '../helpers/skip.js';
import { findDefaultGuest } from '../../src/guest/build.js';

const MIB = 1024; // KiB
const DOM = 'race-cfg';
const QDOM = 'race-q';
/** Rounds per pair of config commands (21 pairs). */
const ROUNDS = 24;
/** Rounds per pair that starts or destroys a real QEMU (6 pairs). */
const QEMU_ROUNDS = 8;
/** How much later the first (positive) or second (negative) command of a round starts, in turn. */
const OFFSETS_MS = [0, 3, 0, -3, 1, -1, 8, -8];

const skip = skipUnlessCi(!(await findDefaultGuest()) && 'the built-in guest is not built (virtmem guest-build)');

let sb: Sandbox | null = null;
const workers: CliWorker[] = [];
after(async () => {
  await Promise.all(workers.map((w) => w.stop()));
  await sb?.cleanup();
});

/** The facts of a definition the commands change; null when it is not defined. */
interface Facts { currentKiB: number; maxKiB: number; periodS: number; floorKiB: number; vcpus: number }
/** With the QEMU guest: whether it runs, and the memory it was started with. */
interface State { def: Facts | null; running: boolean; liveKiB: number | null }

interface Op {
  label: string;
  argv: string[];
  /** What the command does to `s`: done (and the state after) or refused. */
  apply(s: State): { ok: boolean; next: State };
  /** When refused in the order that explains the round, stderr says this. */
  refusal?(s: State): RegExp;
}

const noDomain = (name: string): RegExp => new RegExp(`failed to get domain '${name}'`);

function configOp(label: string, argv: string[], change: (d: Facts) => Facts, name: string): Op {
  return {
    label, argv,
    apply: (s) => (s.def ? { ok: true, next: { ...s, def: change(s.def) } } : { ok: false, next: s }),
    refusal: () => noDomain(name),
  };
}

const setmem = (name: string, kib: number): Op => configOp(`setmem ${kib}`, ['setmem', name, String(kib), '--config'], (d) => ({ ...d, currentKiB: kib }), name);
const setmaxmem = (name: string, kib: number): Op => configOp(`setmaxmem ${kib}`, ['setmaxmem', name, String(kib), '--config'], (d) => ({ ...d, maxKiB: kib }), name);
const period = (name: string, s: number): Op => configOp(`period ${s}`, ['dommemstat', name, '--period', String(s), '--config'], (d) => ({ ...d, periodS: s }), name);
const policy = (name: string, kib: number): Op => configOp(`policy floor ${kib}`, ['policy', 'set', name, '--floor', String(kib)], (d) => ({ ...d, floorKiB: kib }), name);

function undefine(name: string): Op {
  return {
    label: 'undefine', argv: ['undefine', name],
    apply: (s) => (!s.def ? { ok: false, next: s } : s.running ? { ok: false, next: s } : { ok: true, next: { def: null, running: false, liveKiB: null } }),
    refusal: (s) => (!s.def ? noDomain(name) : /cannot undefine running domain/),
  };
}

function define(file: string, facts: Facts): Op {
  return {
    label: `define vcpus=${facts.vcpus} current=${facts.currentKiB}`, argv: ['define', file],
    // A redefinition of a running domain changes what its next boot gets.
    apply: (s) => ({ ok: true, next: { ...s, def: facts } }),
  };
}

function start(name: string): Op {
  return {
    label: 'start', argv: ['start', name],
    apply: (s) => (!s.def || s.running ? { ok: false, next: s } : { ok: true, next: { ...s, running: true, liveKiB: s.def.currentKiB } }),
    refusal: (s) => (!s.def ? noDomain(name) : /Domain is already active/),
  };
}

function destroy(name: string): Op {
  return {
    label: 'destroy', argv: ['destroy', name],
    apply: (s) => (!s.def || !s.running ? { ok: false, next: s } : { ok: true, next: { ...s, running: false, liveKiB: null } }),
    refusal: (s) => (!s.def ? noDomain(name) : /domain is not running/),
  };
}

/** The definition's XML with the given facts (the uuid stays: a redefinition). */
function xmlWith(template: string, f: Facts): string {
  return template
    .replace(/<memory unit='KiB'>\d+<\/memory>/, `<memory unit='KiB'>${f.maxKiB}</memory>`)
    .replace(/<currentMemory unit='KiB'>\d+<\/currentMemory>/, `<currentMemory unit='KiB'>${f.currentKiB}</currentMemory>`)
    .replace(/<vcpu placement='static'>\d+<\/vcpu>/, `<vcpu placement='static'>${f.vcpus}</vcpu>`)
    .replace(/<stats period='\d+'\/>/, `<stats period='${f.periodS}'/>`)
    .replace(/ floor='\d+' unit='KiB'/, ` floor='${f.floorKiB}' unit='KiB'`);
}

/** What the state directory says now. */
async function observe(stateDir: string, name: string): Promise<State> {
  let def: Facts | null = null;
  try {
    const d = JSON.parse(await readFile(join(stateDir, 'domains', `${name}.json`), 'utf8'));
    def = { currentKiB: d.memory.currentKiB, maxKiB: d.memory.maxKiB, periodS: d.balloon.statsPeriodS, floorKiB: d.policy?.floorKiB ?? -1, vcpus: d.vcpus };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  let running = false;
  let liveKiB: number | null = null;
  try {
    const rec = JSON.parse(await readFile(join(stateDir, 'run', name, 'status.json'), 'utf8'));
    if (rec.phase === 'running') {
      await access(`/proc/${rec.pid}`);
      running = true;
      liveKiB = rec.live.memory.currentKiB;
    }
  } catch { /* no record, or its QEMU is gone: not running */ }
  return { def, running, liveKiB };
}

/** Random values, each different from `not`: sizes in steps (KiB), seconds. */
const pick = (lo: number, hi: number, step: number, not: number[]): number => {
  for (;;) {
    const v = lo + step * Math.floor(Math.random() * ((hi - lo) / step + 1));
    if (!not.includes(v)) return v;
  }
};
// Chosen so every change is valid on every state the other command of the pair can leave:
// a current size is always below any maximum, a maximum above any current size.
const pickCurrent = (not: number[]): number => pick(256 * MIB, 480 * MIB, 4 * MIB, not);
const pickMax = (not: number[]): number => pick(512 * MIB, 1024 * MIB, 4 * MIB, not);
const pickPeriod = (not: number[]): number => pick(1, 100, 1, not);
const pickFloor = (not: number[]): number => pick(64 * MIB, 250 * MIB, 2 * MIB, not);

interface Tally { rounds: number; overlapped: number; orders: Record<string, number> }

/**
 * Races `a` (first worker) against `b` (second worker) from `before`, and checks what is left
 * against both orders. @returns the state after the round
 */
async function race(name: string, a: Op, b: Op, before: State, tally: Tally): Promise<State> {
  const [wa, wb] = workers as [CliWorker, CliWorker];
  // One of the two starts a few milliseconds late, so that each command of a pair gets to the
  // lock first in some rounds (unshifted, the quicker one nearly always does).
  const shift = OFFSETS_MS[tally.rounds % OFFSETS_MS.length]!;
  const [ra, rb] = await Promise.all([
    wa.run(['--state-dir', sb!.stateDir, ...a.argv], { offsetMs: Math.max(0, shift) }),
    wb.run(['--state-dir', sb!.stateDir, ...b.argv], { offsetMs: Math.max(0, -shift) }),
  ]);
  const now = await observe(sb!.stateDir, name);
  const explains = (first: Op, rFirst: WorkerResult, second: Op, rSecond: WorkerResult): boolean => {
    const one = first.apply(before);
    const two = second.apply(one.next);
    const fits = (op: Op, r: WorkerResult, outcome: { ok: boolean }, s: State): boolean =>
      outcome.ok ? r.code === 0 : r.code !== 0 && (!op.refusal || op.refusal(s).test(r.stderr));
    return fits(first, rFirst, one, before) && fits(second, rSecond, two, one.next)
      && JSON.stringify(two.next.def) === JSON.stringify(now.def) && two.next.running === now.running
      && (!now.running || two.next.liveKiB === now.liveKiB);
  };
  const ab = explains(a, ra, b, rb);
  const ba = explains(b, rb, a, ra);
  tally.rounds++;
  if (ra.startNs < rb.endNs && rb.startNs < ra.endNs) tally.overlapped++;
  const kind = (op: Op): string => op.label.split(' ')[0]!;
  const order = ab && ba ? 'either' : kind(a) === kind(b) ? 'one first' : `${kind(ab ? a : b)} first`;
  tally.orders[order] = (tally.orders[order] ?? 0) + 1;
  assert.ok(ab || ba, [
    `no order of '${a.label}' and '${b.label}' explains the round`,
    `before: ${JSON.stringify(before)}`, `after:  ${JSON.stringify(now)}`,
    `${a.label}: exit ${ra.code} ${ra.stderr.trim()}`, `${b.label}: exit ${rb.code} ${rb.stderr.trim()}`,
  ].join('\n'));
  return now;
}

test('config changes raced in pairs by two processes: nothing lost, undefine wins or loses cleanly', { skip, timeout: 600_000 }, async () => {
  sb = await sandbox();
  workers.push(new CliWorker({ VIRTMEM_DAEMON: '0' }), new CliWorker({ VIRTMEM_DAEMON: '0' }));
  const [wa] = workers as [CliWorker, CliWorker];
  const ok = async (...argv: string[]): Promise<string> => {
    const r = await wa.run(['--state-dir', sb!.stateDir, ...argv]);
    assert.equal(r.code, 0, `virtmem ${argv.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  await ok('new', DOM, '--memory', '512M', '--current-memory', '300M', '--accel', 'tcg');
  await ok('policy', 'set', DOM, '--floor', '128M');
  await ok('dommemstat', DOM, '--period', '5', '--config');
  const template = await ok('dumpxml', DOM, '--inactive');
  const base = (await observe(sb.stateDir, DOM)).def!;
  let state = await observe(sb.stateDir, DOM);

  const kinds = ['setmem', 'setmaxmem', 'period', 'policy', 'undefine', 'define'] as const;
  type Kind = typeof kinds[number];
  let files = 0;
  const make = (k: Kind, s: State, taken: Facts[]): Op => {
    const d = s.def ?? base;
    const not = (f: keyof Facts): number[] => [d[f], ...taken.map((t) => t[f])];
    switch (k) {
      case 'setmem': { const v = pickCurrent(not('currentKiB')); taken.push({ ...d, currentKiB: v }); return setmem(DOM, v); }
      case 'setmaxmem': { const v = pickMax(not('maxKiB')); taken.push({ ...d, maxKiB: v }); return setmaxmem(DOM, v); }
      case 'period': { const v = pickPeriod(not('periodS')); taken.push({ ...d, periodS: v }); return period(DOM, v); }
      case 'policy': { const v = pickFloor(not('floorKiB')); taken.push({ ...d, floorKiB: v }); return policy(DOM, v); }
      case 'undefine': return undefine(DOM);
      case 'define': {
        const f: Facts = { currentKiB: pickCurrent(not('currentKiB')), maxKiB: pickMax(not('maxKiB')), periodS: pickPeriod(not('periodS')), floorKiB: pickFloor(not('floorKiB')), vcpus: pick(1, 4, 1, [d.vcpus, ...taken.map((t) => t.vcpus)]) };
        taken.push(f);
        const file = join(sb!.stateDir, `define-${++files}.xml`);
        pendingFiles.push(writeFile(file, xmlWith(template, f)));
        return define(file, f);
      }
    }
  };
  const pendingFiles: Array<Promise<void>> = [];
  const tallies = new Map<string, Tally>();
  for (let i = 0; i < kinds.length; i++) {
    for (let j = i; j < kinds.length; j++) {
      const tally: Tally = { rounds: 0, overlapped: 0, orders: {} };
      tallies.set(`${kinds[i]} | ${kinds[j]}`, tally);
      for (let round = 0; round < ROUNDS; round++) {
        if (!state.def) {
          // The last round undefined it: defined again (not raced) for this one.
          const file = join(sb.stateDir, `define-${++files}.xml`);
          await writeFile(file, xmlWith(template, base));
          await ok('define', file);
          state = await observe(sb.stateDir, DOM);
        }
        const taken: Facts[] = [];
        // Each command of the pair goes first to the first worker half of the time.
        const [ka, kb] = round % 2 === 0 ? [kinds[i]!, kinds[j]!] : [kinds[j]!, kinds[i]!];
        const a = make(ka, state, taken);
        const b = make(kb, state, taken);
        await Promise.all(pendingFiles.splice(0));
        state = await race(DOM, a, b, state, tally);
      }
    }
  }
  report('config pairs', tallies);
});

test('start and destroy raced against config changes and undefine on a real guest', { skip, timeout: 600_000 }, async () => {
  assert.ok(sb, 'runs after the config test set up the sandbox');
  const [wa] = workers as [CliWorker, CliWorker];
  const ok = async (...argv: string[]): Promise<void> => {
    const r = await wa.run(['--state-dir', sb!.stateDir, ...argv]);
    assert.equal(r.code, 0, `virtmem ${argv.join(' ')}: ${r.stderr}`);
  };
  await ok('new', QDOM, '--memory', '256M', '--accel', 'tcg');
  await ok('policy', 'set', QDOM, '--floor', '128M');
  let state = await observe(sb.stateDir, QDOM);
  const base = state.def!;
  let template = '';
  {
    const r = await wa.run(['--state-dir', sb.stateDir, 'dumpxml', QDOM, '--inactive']);
    template = r.stdout;
  }
  const pairs: Array<{ label: string; running: boolean; ops: (s: State) => [Op, Op] }> = [
    { label: 'start | setmem --config', running: false, ops: (s) => [start(QDOM), setmem(QDOM, pick(128 * MIB, 252 * MIB, 4 * MIB, [s.def!.currentKiB]))] },
    { label: 'start | destroy', running: false, ops: () => [start(QDOM), destroy(QDOM)] },
    { label: 'start | undefine', running: false, ops: () => [start(QDOM), undefine(QDOM)] },
    { label: 'destroy | setmaxmem --config', running: true, ops: (s) => [destroy(QDOM), setmaxmem(QDOM, pick(260 * MIB, 512 * MIB, 4 * MIB, [s.def!.maxKiB]))] },
    { label: 'destroy | dommemstat --period --config', running: true, ops: (s) => [destroy(QDOM), period(QDOM, pickPeriod([s.def!.periodS]))] },
    { label: 'destroy | undefine', running: true, ops: () => [destroy(QDOM), undefine(QDOM)] },
  ];
  const tallies = new Map<string, Tally>();
  let files = 0;
  try {
    for (const p of pairs) {
      const tally: Tally = { rounds: 0, overlapped: 0, orders: {} };
      tallies.set(p.label, tally);
      for (let round = 0; round < QEMU_ROUNDS; round++) {
        if (!state.def) {
          const file = join(sb.stateDir, `q-define-${++files}.xml`);
          await writeFile(file, xmlWith(template, base));
          await ok('define', file);
        }
        state = await observe(sb.stateDir, QDOM);
        if (state.running !== p.running) {
          await ok(p.running ? 'start' : 'destroy', QDOM);
          state = await observe(sb.stateDir, QDOM);
        }
        const [x, y] = p.ops(state);
        const [a, b] = round % 2 === 0 ? [x, y] : [y, x];
        state = await race(QDOM, a, b, state, tally);
      }
    }
  } finally {
    if ((await observe(sb.stateDir, QDOM)).running) await wa.run(['--state-dir', sb.stateDir, 'destroy', QDOM]);
  }
  report('start/destroy pairs', tallies);
});

function report(what: string, tallies: Map<string, Tally>): void {
  let rounds = 0;
  let overlapped = 0;
  for (const [pair, t] of tallies) {
    rounds += t.rounds;
    overlapped += t.overlapped;
    console.log(`# ${what}: ${pair}: ${t.rounds} rounds, ${t.overlapped} overlapping in time, orders ${JSON.stringify(t.orders)}`);
  }
  console.log(`# ${what}: ${rounds} rounds in all, ${overlapped} with both commands running at once`);
  assert.ok(overlapped > 0, 'the two commands of a pair never ran at the same time: the test raced nothing');
}
