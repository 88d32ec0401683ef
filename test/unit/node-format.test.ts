/**
 * The host memory layouts against virsh 9.0's own output recorded on this machine
 * (test/fixtures/node/virsh-*.stdout; test:///default has two cells and fixed numbers), and
 * virsh's rules for numeric option values and missing arguments.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../helpers/cli.js';
import { formatFreeCell, formatFreeCells, formatFreePages, formatFreeTotal, formatNodeMemStats, formatNodeMemoryParameters } from '../../src/cli/format.js';
import { virshInt, virshScaled, virshUInt, virshULongLong } from '../../src/cli/virsh-values.js';
import { parseArgs, UsageError } from '../../src/cli/args.js';
import { NODE_COMMANDS } from '../../src/cli/node-commands.js';

const fixture = (name: string): string => readFileSync(join(ROOT, 'test', 'fixtures', 'node', name), 'utf8');
/** The numbers in a recorded output, in order. */
const numbers = (text: string, re: RegExp): number[] => [...text.matchAll(re)].map((m) => Number(m[1]));

test('freecell: total, one cell, all cells with the rule and total', () => {
  assert.equal(formatFreeTotal(3072 * 1024), fixture('virsh-test-freecell.stdout'));
  assert.equal(formatFreeCell(1, 4096 * 1024 + 1023), fixture('virsh-test-freecell_cellno_1.stdout'), 'bytes are floored to KiB');
  assert.equal(formatFreeCells([{ cell: 0, freeBytes: 2048 * 1024 }, { cell: 1, freeBytes: 4096 * 1024 }]), fixture('virsh-test-freecell_all.stdout'));
});

test('freepages --all: a block per node, an empty line after each and at the end', () => {
  const pages = [{ sizeKiB: 4, free: 19 }, { sizeKiB: 8, free: 45 }, { sizeKiB: 2048, free: 97 }, { sizeKiB: 1048576, free: 201 }];
  assert.equal(formatFreePages([{ cell: 0, pages }, { cell: 1, pages }], { all: true }), fixture('virsh-test-freepages_all.stdout'));
  const qemu = fixture('virsh-qemu-freepages_all.stdout');
  const free = numbers(qemu, /^\d+KiB: (\d+)$/gm);
  assert.equal(formatFreePages([{ cell: 0, pages: [4, 2048, 1048576].map((sizeKiB, i) => ({ sizeKiB, free: free[i]! })) }], { all: true }), qemu);
  assert.equal(formatFreePages([{ cell: 0, pages: [{ sizeKiB: 2048, free: 0 }] }], { all: false }), '2048KiB: 0\n\n');
});

test('node-memory-tune: "Shared memory:" and tab-indented %-15s lines', () => {
  const text = fixture('virsh-qemu-node-memory-tune.stdout');
  const params = [...text.matchAll(/^\t(\S+) +(\d+)$/gm)].map((m) => ({ field: m[1]!, value: Number(m[2]) }));
  assert.equal(params.length, 8);
  assert.equal(formatNodeMemoryParameters(params), text);
  assert.equal(formatNodeMemoryParameters([]), '\n');
});

test('nodememstats: host and cell', () => {
  for (const f of ['virsh-qemu-nodememstats.stdout', 'virsh-qemu-nodememstats-cell0.stdout']) {
    const text = fixture(f);
    const stats = [...text.matchAll(/^(\w+) *: +(\d+) KiB$/gm)].map((m) => ({ field: m[1]!, valueKiB: Number(m[2]) }));
    assert.equal(formatNodeMemStats(stats), text, f);
  }
});

test('virsh int options: strtol\'s grammar, int range, virsh\'s words', () => {
  assert.equal(virshInt('0', 'cellno'), 0);
  assert.equal(virshInt('00', 'cellno'), 0);
  assert.equal(virshInt('+3', 'cellno'), 3);
  assert.equal(virshInt(' \t-1', 'cellno'), -1);
  assert.equal(virshInt('2147483647', 'cellno'), 2147483647);
  for (const bad of ['', 'x', '0x0', '1 ', '1.0', '2147483648', '-2147483649', '--1', '+-1']) {
    assert.throws(() => virshInt(bad, 'cellno'), (e: unknown) => e instanceof UsageError && e.message === `Numeric value '${bad}' for <cellno> option is malformed or out of range`, JSON.stringify(bad));
  }
});

test('virsh unsigned options: no minus sign anywhere, their ranges', () => {
  assert.equal(virshUInt('4294967295', 'shm-pages-to-scan'), 4294967295);
  assert.equal(virshUInt(' +20', 'shm-sleep-millisecs'), 20);
  for (const bad of ['-1', '-0', '4294967296', 'x']) assert.throws(() => virshUInt(bad, 'shm-pages-to-scan'), /^UsageError: Numeric value '.*' for <shm-pages-to-scan> option is malformed or out of range$/);
  assert.equal(virshULongLong('18446744073709551615', 'pagecount'), 18446744073709551615n);
  for (const bad of ['18446744073709551616', '-1', '1k']) assert.throws(() => virshULongLong(bad, 'pagecount'), /Numeric value '.*' for <pagecount> option/);
});

test('virsh scaled options: a bare number in the default unit, libvirt\'s units, its second line for a bad unit or overflow', () => {
  const kib = (t: string): bigint => virshScaled(t, 'pagesize', 1024n, 0xffff_ffffn);
  assert.equal(kib('2048'), 2048n * 1024n);
  assert.equal(kib('2M'), 2n * 1024n * 1024n);
  assert.equal(kib('2MB'), 2_000_000n);
  assert.equal(kib('2047b'), 2047n);
  assert.equal(kib('1GiB'), 1024n ** 3n);
  assert.equal(kib('0'), 0n);
  const first = (t: string): string => `Scaled numeric value '${t}' for <pagesize> option is malformed or out of range`;
  for (const [t, msg] of [
    ['x', first('x')], ['-1', first('-1')], ['', first('')],
    ['1.5M', `${first('1.5M')}\nerror: invalid argument: unknown suffix '.5M'`],
    ['2Q', `${first('2Q')}\nerror: invalid argument: unknown suffix 'Q'`],
    ['5000000000', `${first('5000000000')}\nerror: numerical overflow: value too large: 5000000000`],
    ['5G', `${first('5G')}\nerror: numerical overflow: value too large: 5G`],
  ] as const) {
    assert.throws(() => kib(t), (e: unknown) => e instanceof UsageError && e.message === msg, t);
  }
});

test('missing numeric arguments are named --NAME, all of them; a repeated flag is refused', () => {
  const alloc = NODE_COMMANDS.find((c) => c.name === 'allocpages')!;
  assert.throws(() => parseArgs([], alloc, 'allocpages'), (e: unknown) => e instanceof UsageError
    && e.message === "command 'allocpages' requires --pagesize option\nerror: command 'allocpages' requires --pagecount option");
  assert.throws(() => parseArgs(['2M'], alloc, 'allocpages'), /^UsageError: command 'allocpages' requires --pagecount option$/);
  assert.deepEqual(parseArgs(['2M', '4', '0', '--add'], alloc, 'allocpages').positional, { pagesize: '2M', pagecount: '4', cellno: '0' });
  const freecell = NODE_COMMANDS.find((c) => c.name === 'freecell')!;
  assert.throws(() => parseArgs(['--cellno'], freecell, 'freecell'), /^UsageError: expected syntax: --cellno <number>$/);
  assert.throws(() => parseArgs(['--all', '--all'], freecell, 'freecell'), /^UsageError: option --all already seen$/);
  assert.throws(() => parseArgs(['--percent'], NODE_COMMANDS.find((c) => c.name === 'nodememstats')!, 'nodememstats'), /^UsageError: command 'nodememstats' doesn't support option --percent$/);
});
