/**
 * The README's demo command, as a user runs it: the whole walkthrough on the built-in guest,
 * ending with the guest at 2 GiB and cleaned up.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { sandbox } from '../helpers/cli.js';

const sb = await sandbox();
after(() => sb.cleanup());

test('virtmem demo walks through the virsh workflow and cleans up', async () => {
  const r = await sb.run('demo');
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const out = r.stdout;
  assert.match(out, /\$ virtmem setmaxmem virtmem-demo 2G\nerror: Unable to change MaxMemorySize\nerror: Requested operation is not valid: cannot resize the maximum memory on an active domain/);
  assert.match(out, /\$ virtmem domstate virtmem-demo --reason\nshut off \(shutdown\)/);
  assert.match(out, /Domain 'virtmem-demo' reached 2097152 KiB/);
  assert.match(out, /Max memory:     2097152 KiB\nUsed memory:    2097152 KiB/);
  assert.match(out, /balloon: actual=2048/);
  const views = [...out.matchAll(/guest \/proc\/meminfo: MemTotal (\d+) KiB/g)].map((m) => Number(m[1]));
  assert.equal(views.length, 6);
  assert.ok(views[0]! < 1048576 && views[1]! > 1.9 * 1048576, `guest MemTotal before/after: ${views.join(', ')}`);
  // The hot-plug part: 512 MiB -> 2 GiB -> 512 MiB on the same running guest.
  assert.ok(views[4]! - views[3]! >= 1536 * 1024 - 1024 && views[5] === views[3], `hot-plug guest MemTotal: ${views.slice(3).join(', ')}`);
  assert.match(out, /Domain 'virtmem-demo-hotplug' reached 2097152 KiB/);
  assert.match(out, /Hot-plugged:    1572864 KiB of 3670016 KiB \(virtio-mem\)/);
  assert.match(out, /Done\.\n$/);
  assert.equal((await sb.ok('list', '--all', '--name')).trim(), '', 'the demo domain is gone');
});
