/**
 * Per-guest policy settings through the CLI: set and shown, kept in the definition and in
 * libvirt XML (<metadata>), and every bad setting refused by name with nothing written.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sandbox } from '../helpers/cli.js';

const sb = await sandbox();
after(() => sb.cleanup());
const defFile = join(sb.stateDir, 'domains', 'pol.json');
await sb.ok('new', 'pol', '--memory', '1G', '--max-memory', '2G');

test('off by default with defaults shown; set turns it on and keeps what was not named', async () => {
  assert.match(await sb.ok('policy', 'show', 'pol'), /^Policy: +off\nFloor: +524288 KiB \(default\)\nCeiling: +2097152 KiB \(default\)\nShares: +1000 \(default\)\n/);
  assert.equal(await sb.ok('policy', 'set', 'pol', '--enable', '--floor', '384M'),
    "Memory policy of domain 'pol' on: floor 393216 KiB, ceiling 2097152 KiB, shares 1000\n\n");
  await sb.ok('policy', 'set', 'pol', '--shares', '3000');
  const j = JSON.parse(await sb.ok('policy', 'show', 'pol', '--json'));
  assert.deepEqual([j.enabled, j.floorKiB, j.ceilingKiB, j.shares], [true, 393216, 2097152, 3000]);
  assert.deepEqual(JSON.parse(await readFile(defFile, 'utf8')).policy, { enabled: true, floorKiB: 393216, shares: 3000 });
});

test('the settings survive dumpxml -> define, in <metadata> under virtmem\'s namespace', async () => {
  const xml = await sb.ok('dumpxml', 'pol');
  assert.match(xml, /<virtmem:policy xmlns:virtmem='https:\/\/virtmem\.dev\/xmlns\/policy\/1' enabled='yes' floor='393216' shares='3000' unit='KiB'\/>/);
  const f = join(sb.stateDir, 'pol.xml');
  await writeFile(f, xml);
  await sb.ok('undefine', 'pol');
  await sb.ok('define', f);
  assert.match(await sb.ok('policy', 'show', 'pol'), /^Policy: +on\nFloor: +393216 KiB\n/);
});

test('bad settings are refused by name and change nothing', async () => {
  const before = await readFile(defFile, 'utf8');
  const cases: Array<[string[], RegExp]> = [
    [['--floor', '1900M', '--ceiling', '1G'], /policy\.floorKiB: the floor 1900 MiB is above the ceiling 1 GiB/],
    [['--ceiling', '8G'], /policy\.ceilingKiB: 8 GiB is above the most this guest can have \(2 GiB\)/],
    [['--floor', '10M'], /policy\.floorKiB: 10240 is below the minimum of 64 MiB/],
    [['--floor', 'lots'], /floor/],
    [['--shares', '0'], /policy\.shares: 0 is below the minimum of 1/],
    [['--shares', '-5'], /invalid shares '-5'/],
    [['--shares', '99999'], /policy\.shares: 99999 is above the maximum of 50000/],
    [['--enable', '--disable'], /mutually exclusive/],
    [[], /needs at least one of/],
  ];
  for (const [args, msg] of cases) {
    const r = await sb.run('policy', 'set', 'pol', ...args);
    assert.equal(r.code, 1, args.join(' '));
    assert.match(r.stderr, msg, args.join(' '));
  }
  const r = await sb.run('policy', 'frob', 'pol');
  assert.match(r.stderr, /unknown policy action 'frob'/);
  const x = await sb.run('policy', 'set', '../etc', '--enable');
  assert.equal(x.code, 1);
  assert.match(x.stderr, /failed to get domain '\.\.\/etc'/);
  assert.equal(await readFile(defFile, 'utf8'), before, 'definition unchanged');
});
