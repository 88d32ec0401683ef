/**
 * What a running guest must survive: refused changes leave it as it was, a guest whose balloon
 * driver never answers is reported as "not reached", QEMU dying mid-command gives a clear error
 * (not a hang), crashes are detected, and concurrent invocations don't corrupt anything.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sandbox, parseDominfo, runCli } from '../helpers/cli.js';
import { findDefaultGuest } from '../../src/guest/build.js';
import { QmpClient } from '../../src/qmp/index.js';
import { GuestAgent } from '../../src/guest/agent.js';

const sb = await sandbox();
after(() => sb.cleanup());

const used = async (name: string): Promise<string> => parseDominfo(await sb.ok('dominfo', name)).get('Used memory')!;
const pidOf = async (name: string): Promise<number> =>
  (JSON.parse(await readFile(join(sb.stateDir, 'run', name, 'status.json'), 'utf8')) as { pid: number }).pid;
/** Wait until the guest's agent answers: the guest has booted and loaded its drivers. */
async function booted(name: string): Promise<void> {
  const a = await GuestAgent.connect(join(sb.stateDir, 'run', name, 'agent.sock'), { timeoutMs: 90_000 });
  a.close();
}

describe('a running guest', () => {
  before(async () => {
    await sb.ok('new', 'live', '--memory', '1G');
    await sb.ok('start', 'live');
    await booted('live');
  });

  test('start twice is refused', async () => {
    const r = await sb.run('start', 'live');
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'error: Domain is already active\n');
  });

  test('setmem above the maximum leaves the balloon alone', async () => {
    const r = await sb.run('setmem', 'live', '2G');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot set memory higher than max memory/);
    assert.equal(await used('live'), '1048576 KiB');
  });

  test('setmaxmem --live is refused with virsh\'s message', async () => {
    const r = await sb.run('setmaxmem', 'live', '2G', '--live');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot resize the maximum memory on an active domain/);
  });

  test('undefine of a running domain is refused and it keeps running', async () => {
    const r = await sb.run('undefine', 'live');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot undefine running domain 'live'/);
    assert.equal((await sb.ok('domstate', 'live')).trim(), 'running');
  });

  test('qemu-monitor-command passes QMP through, and rejects what is not QMP', async () => {
    const out = JSON.parse(await sb.ok('qemu-monitor-command', 'live', '{"execute":"query-balloon"}')) as { return: { actual: number } };
    assert.equal(out.return.actual, 1073741824);
    const err = JSON.parse(await sb.ok('qemu-monitor-command', 'live', '{"execute":"no-such-command"}')) as { error: { class: string } };
    assert.equal(err.error.class, 'CommandNotFound');
    const bad = await sb.run('qemu-monitor-command', 'live', 'info balloon');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /not valid JSON.*--hmp/);
  });

  test('concurrent setmem --config calls serialise: the definition stays valid', async () => {
    const sizes = ['600M', '610M', '620M', '630M', '640M', '650M', '660M', '670M'];
    const results = await Promise.all(sizes.map((s) => sb.run('setmem', 'live', s, '--config')));
    for (const r of results) assert.equal(r.code, 0, r.stderr);
    const def = JSON.parse(await readFile(join(sb.stateDir, 'domains', 'live.json'), 'utf8')) as { memory: { currentKiB: number } };
    assert.ok(sizes.map((s) => Number(s.slice(0, -1)) * 1024).includes(def.memory.currentKiB));
    assert.equal(await used('live'), '1048576 KiB', '--config does not touch the running guest');
  });

  test('a watcher on the second monitor does not block CLI calls', async () => {
    const watcher = await QmpClient.connect(join(sb.stateDir, 'run', 'live', 'qmp-watch.sock'), { timeoutMs: 5000 });
    try {
      assert.equal(await used('live'), '1048576 KiB');
    } finally {
      await watcher.close();
    }
  });

  test('QEMU killed while setmem --wait is in flight: a clear error, no hang, state "crashed"', async () => {
    // Watch the balloon move on the second monitor; kill QEMU as soon as it does.
    const watcher = await QmpClient.connect(join(sb.stateDir, 'run', 'live', 'qmp-watch.sock'), { timeoutMs: 5000 });
    const events = watcher.events({ names: ['BALLOON_CHANGE'] });
    const pid = await pidOf('live');
    const pending = sb.run('setmem', 'live', '128M', '--wait', '--timeout', '300');
    await events.nextEvent({ timeoutMs: 60_000 });
    process.kill(pid, 'SIGKILL');
    const r = await pending;
    watcher.destroy();
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no longer running|closed the monitor/);
    assert.equal((await sb.ok('domstate', 'live', '--reason')).trim(), 'shut off (crashed)');
    // And it can be started again.
    await sb.ok('start', 'live');
    await sb.ok('destroy', 'live');
  });
});

describe('a guest whose balloon driver never answers', () => {
  test('setmem --wait reports "not reached" within its timeout and claims nothing', async () => {
    const guest = await findDefaultGuest();
    assert.ok(guest, 'the built-in guest is built');
    await sb.ok('new', 'noballoon', '--memory', '1G', '--kernel', guest.kernelPath, '--initrd', guest.initrdPath,
      '--cmdline', `${guest.cmdline} virtmem.skip=virtio_balloon`);
    await sb.ok('start', 'noballoon');
    await booted('noballoon');
    const t0 = Date.now();
    const r = await sb.run('setmem', 'noballoon', '512M', '--wait', '--timeout', '20');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /memory target 524288 KiB not reached: domain 'noballoon' stopped at 1048576 KiB/);
    assert.ok(Date.now() - t0 < 60_000, 'bounded by its own timeout');
    assert.equal(await used('noballoon'), '1048576 KiB');
    const json = JSON.parse((await sb.run('setmem', 'noballoon', '512M', '--json')).stdout) as { reached: boolean; actualKiB: number };
    assert.equal(json.reached, false);
    assert.equal(json.actualKiB, 1048576);
    await sb.ok('destroy', 'noballoon');
  });
});

test('the CLI refuses a connection URI it cannot serve', async () => {
  // libvirt URIs go to the libvirt driver (test/integration/libvirt-driver.test.ts); a transport
  // virtmem does not speak is refused before anything is tried.
  const r = await runCli(['-c', 'qemu+libssh2://host/system', 'list']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: failed to connect to the hypervisor\nerror: unsupported transport 'libssh2'/);
});
