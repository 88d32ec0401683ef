/**
 * The classic virsh memory workflow, end to end, on a real QEMU guest through the `virtmem`
 * command (issue: "virtmem core", done-when #1):
 *   start with 1 GiB -> setmaxmem refused while running -> shutdown -> setmaxmem 2G -> start
 *   -> setmem 2G -> dominfo shows 2097152/2097152 and the guest itself sees the larger memory.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { sandbox, parseDominfo } from '../helpers/cli.js';
import { GuestAgent, readGuestMeminfo } from '../../src/guest/agent.js';

const sb = await sandbox();
after(() => sb.cleanup());

async function guestMemTotalKiB(name: string): Promise<number> {
  const agent = await GuestAgent.connect(join(sb.stateDir, 'run', name, 'agent.sock'), { timeoutMs: 90_000 });
  try {
    return (await readGuestMeminfo(agent)).memTotalKiB;
  } finally {
    agent.close();
  }
}

test('grow a guest from 1 GiB to 2 GiB the virsh way', async () => {
  await sb.ok('new', 'wf', '--memory', '1G');
  const off = parseDominfo(await sb.ok('dominfo', 'wf'));
  assert.equal(off.get('State'), 'shut off');
  assert.equal(off.get('Max memory'), '1048576 KiB');

  assert.match(await sb.ok('start', 'wf'), /^Domain 'wf' started\n/);
  const before = await guestMemTotalKiB('wf');
  assert.ok(before > 800 * 1024 && before <= 1048576, `guest MemTotal ${before} KiB at 1 GiB`);
  let info = parseDominfo(await sb.ok('dominfo', 'wf'));
  assert.equal(info.get('State'), 'running');
  assert.equal(info.get('Max memory'), '1048576 KiB');
  assert.equal(info.get('Used memory'), '1048576 KiB');

  const hmp = await sb.ok('qemu-monitor-command', 'wf', '--hmp', '--cmd', 'info', 'balloon');
  assert.equal(hmp.trim(), 'balloon: actual=1024');

  const refused = await sb.run('setmaxmem', 'wf', '2G');
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /cannot resize the maximum memory on an active domain/);

  await sb.ok('shutdown', 'wf');
  assert.equal((await sb.ok('domstate', 'wf', '--reason')).trim(), 'shut off (shutdown)');
  await sb.ok('setmaxmem', 'wf', '2G');
  info = parseDominfo(await sb.ok('dominfo', 'wf'));
  assert.equal(info.get('Max memory'), '2097152 KiB');
  assert.equal(info.get('Used memory'), '1048576 KiB', 'setmaxmem leaves the current memory alone');

  await sb.ok('start', 'wf');
  info = parseDominfo(await sb.ok('dominfo', 'wf'));
  assert.equal(info.get('Max memory'), '2097152 KiB');
  // Let the guest boot: until its balloon driver runs, nobody can tell where the balloon ends up.
  await guestMemTotalKiB('wf');
  await sb.ok('setmem', 'wf', '2G', '--wait', '--timeout', '120');
  info = parseDominfo(await sb.ok('dominfo', 'wf'));
  assert.equal(info.get('Max memory'), '2097152 KiB');
  assert.equal(info.get('Used memory'), '2097152 KiB');
  const afterKiB = await guestMemTotalKiB('wf');
  assert.ok(afterKiB > 1.9 * 1024 * 1024, `guest MemTotal ${afterKiB} KiB after growing to 2 GiB`);

  const stats = await sb.ok('dommemstat', 'wf');
  assert.match(stats, /^actual 2097152$/m);
  assert.match(stats, /^rss \d+$/m);

  await sb.ok('destroy', 'wf');
  assert.equal((await sb.ok('domstate', 'wf', '--reason')).trim(), 'shut off (destroyed)');
});
