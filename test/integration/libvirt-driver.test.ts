/**
 * virtmem on libvirt hosts, end to end through bin/virtmem and the real libvirtd on this
 * machine: output identical to virsh for the same guests (virsh runs in the test, same moment),
 * a TCG guest defined in libvirt with a virtio-mem device resized by `setmem --wait`, typed
 * errors, and a second libvirtd in its own namespace on 127.0.0.1 TCP as a "remote host".
 * Needs root and a running libvirtd (CI: scripts/setup.sh --dev starts one).
 */
import { libvirtGuestXml } from '../helpers/libvirt-guest.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { runCli } from '../helpers/cli.js';
import { until } from '../helpers/poll.js';
import { skipUnlessCi, notRoot, libvirtdMissing, builtInGuestMissing } from '../helpers/skip.js';
import { virsh, virshDominfoLines, type VirshResult } from '../helpers/virsh.js';
import { startRemoteLibvirtd } from '../helpers/remote-libvirtd.js';
import { LibvirtDriver } from '../../src/driver/libvirt/driver.js';
import { LibvirtError } from '../../src/libvirt/errors.js';

const skip = skipUnlessCi(libvirtdMissing(), notRoot());
const noGuest = skipUnlessCi(skip, builtInGuestMissing());


/** Lines that change by themselves between two calls (CPU time runs). */
const steady = (text: string): string => text.replace(/^CPU time:.*$/m, 'CPU time: X');

test('test:///default: virsh commands print exactly what virsh prints', { skip }, async () => {
  const U = 'test:///default';
  for (const args of [['list', '--all'], ['list', '--name'], ['dominfo', 'test'], ['dominfo', '1'], ['domstate', 'test', '--reason'],
    ['dumpxml', 'test'], ['dumpxml', 'test', '--inactive'], ['dommemstat', 'test'], ['dominfo', 'nosuch'], ['setmaxmem', 'test', '8G', '--config'], ['start', 'test']]) {
    const ours = await runCli(['-c', U, ...args]);
    const theirs = await virsh(U, ...args);
    assert.deepEqual([ours.code, steady(ours.stdout), ours.stderr], [theirs.code, steady(theirs.stdout), theirs.stderr], args.join(' '));
  }
  // LIBVIRT_DEFAULT_URI is honoured as virsh honours it.
  const viaEnv = await runCli(['list', '--all'], { env: { LIBVIRT_DEFAULT_URI: U } });
  assert.deepEqual([viaEnv.code, viaEnv.stdout], [0, (await virsh(U, 'list', '--all')).stdout]);
});

test('test:///default: what libvirt lacks says so; native-only commands are refused on libvirt URIs', { skip }, async () => {
  const qmc = await runCli(['-c', 'test:///default', 'qemu-monitor-command', 'test', '--hmp', 'info', 'balloon']);
  assert.equal(qmc.code, 1);
  assert.equal(qmc.stderr, (await virsh('test:///default', 'qemu-monitor-command', 'test', '--hmp', 'info', 'balloon')).stderr);
  // --json keeps libvirt's own error number and domain (VIR_ERR_NO_SUPPORT = 3) for scripts.
  const qmcJson = await runCli(['-c', 'test:///default', 'qemu-monitor-command', 'test', '--hmp', 'info', '--json']);
  assert.equal(qmcJson.code, 1);
  assert.deepEqual((JSON.parse(qmcJson.stdout) as { error: { code: string; libvirt: { code: number } } }).error.libvirt.code, 3);
  const caps = await runCli(['-c', 'test:///default', 'capabilities']);
  assert.equal(caps.code, 1);
  assert.match(caps.stderr, /not supported by the connection driver: 'capabilities' works on virtmem's own guests only/);
  // A daemon that is not there: virsh's two lines, nothing on stdout.
  for (const uri of ['qemu+tcp://127.0.0.1:1/system', 'qemu:///system?socket=/nonexistent/libvirt-sock']) {
    const ours = await runCli(['-c', uri, 'list']);
    const theirs = await virsh(uri, 'list');
    assert.deepEqual([ours.code, ours.stdout, ours.stderr], [theirs.code, theirs.stdout, theirs.stderr], uri);
  }
  const bad = await runCli(['-c', 'qemu+bogus://h/system', 'list']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^error: failed to connect to the hypervisor\nerror: unsupported transport 'bogus'/);
});

/**
 * `list` on this machine's libvirtd while other tests (and benchmarks) define guests on it: ours
 * runs between two virsh runs, and when virsh's two answers differ the host changed meanwhile,
 * so it is measured again (at most 10 times). A difference that remains is ours.
 */
async function bracketed(uri: string, args: string[]): Promise<{ ours: Awaited<ReturnType<typeof runCli>>; theirs: VirshResult }> {
  for (let i = 0; ; i++) {
    const before = await virsh(uri, ...args);
    const ours = await runCli(['-c', uri, ...args]);
    const theirs = await virsh(uri, ...args);
    if (before.stdout === theirs.stdout || i === 9) return { ours, theirs };
  }
}


test('qemu:///system: a TCG guest with virtio-mem, driven through libvirt like virsh, resized by setmem --wait', { skip: noGuest, timeout: 600_000 }, async () => {
  const U = 'qemu:///system';
  const name = `vmlv-${randomBytes(3).toString('hex')}`;
  const dir = await mkdtemp(join(tmpdir(), 'vm-lvt-'));
  const file = join(dir, 'guest.xml');
  await writeFile(file, libvirtGuestXml(name, { memoryKiB: 262144, currentKiB: 262144, virtioMemKiB: 524288, cmdline: 'memhp_default_state=online_movable' }));
  try {
    const def = await runCli(['-c', U, 'define', file]);
    assert.deepEqual([def.code, def.stdout, def.stderr], [0, `Domain '${name}' defined from ${file}\n\n`, '']);
    for (const args of [['dominfo', name], ['domstate', name, '--reason'], ['dumpxml', name], ['list', '--all']]) {
      const { ours, theirs } = args[0] === 'list' ? await bracketed(U, args) : { ours: await runCli(['-c', U, ...args]), theirs: await virsh(U, ...args) };
      assert.deepEqual([ours.code, virshDominfoLines(ours.stdout), ours.stderr], [theirs.code, theirs.stdout, theirs.stderr], `shut off: ${args.join(' ')}`);
    }
    const start = await runCli(['-c', U, 'start', name]);
    assert.deepEqual([start.code, start.stdout], [0, `Domain '${name}' started\n\n`]);
    for (const args of [['dominfo', name], ['domstate', name, '--reason'], ['list']]) {
      const { ours, theirs } = args[0] === 'list' ? await bracketed(U, args) : { ours: await runCli(['-c', U, ...args]), theirs: await virsh(U, ...args) };
      assert.deepEqual([ours.code, steady(virshDominfoLines(ours.stdout)), ours.stderr], [theirs.code, steady(theirs.stdout), theirs.stderr], `running: ${args.join(' ')}`);
    }
    // A tick for the policy asks the guest for a statistics report and reads it:
    // with a 60 s period no report would come on its own, and the view's report time is when the
    // watch saw it arrive, not libvirt's whole second.
    assert.equal((await virsh(U, 'dommemstat', name, '--period', '60', '--live')).code, 0);
    const lv = new LibvirtDriver(U);
    try {
      const watch = lv.watch({ pollMs: 60_000 });
      await watch.start();
      await until('the guest\'s first report in the view', async () => { await watch.tick(); return watch.guest(name)?.stats.lastUpdateS ?? 0; }, (t) => t > 0);
      const before = watch.guest(name)!.stats.lastUpdateS!;
      await new Promise((r) => setTimeout(r, 1_100)); // into the next second: a new report's second differs
      await watch.tick();
      assert.equal(watch.guest(name)!.stats.lastUpdateS, before, 'a plain tick asks for no report');
      const askedAt = Date.now() / 1000;
      // A guest still booting under TCG may answer after the tick's bound: up to three ticks ask.
      // With a 60 s period, no report comes unasked.
      let after = before;
      for (let i = 0; i < 3 && after === before; i++) {
        await watch.tick({ freshStats: new Set([name]) });
        after = watch.guest(name)!.stats.lastUpdateS!;
      }
      assert.ok(after >= askedAt - 1 && after > before, `a new report (${before} -> ${after}, asked at ${askedAt})`);
      await watch.stop();
    } finally {
      await lv.close();
    }
    assert.equal((await virsh(U, 'dommemstat', name, '--period', '1', '--live')).code, 0);
    // Grow through virtio-mem (update-device), confirmed by libvirt's events. First a grow that
    // is not waited for, then, as soon as the guest's own MemTotal shows some of it onlined, the
    // grow that is: libvirt learns plugged sizes from QEMU's events (at most one a second), so
    // its XML may still lag what the guest already counts, and the wait must not take that for
    // memory the guest failed to online.
    const memTotalKiB = async (): Promise<number> => Number(/^available (\d+)$/m.exec((await virsh(U, 'dommemstat', name)).stdout)?.[1] ?? 0);
    await until('the guest reporting statistics', memTotalKiB, (k) => k > 0);
    const totalBefore = await memTotalKiB();
    assert.equal((await runCli(['-c', U, 'setmem', name, '400M'])).code, 0);
    await until('the guest counting plugged memory', memTotalKiB, (k) => k >= totalBefore + 65536, () => {}, 60_000, 50);
    const grow = await runCli(['-c', U, 'setmem', name, '600M', '--wait']);
    assert.deepEqual([grow.code, grow.stdout, grow.stderr], [0, `Domain '${name}' reached 614400 KiB\n\n`, '']);
    const xml = (await virsh(U, 'dumpxml', name)).stdout;
    assert.match(xml, /<requested unit='KiB'>352256<\/requested>\s*<current unit='KiB'>352256<\/current>/);
    const info = (await runCli(['-c', U, 'dominfo', name])).stdout;
    assert.match(info, /^Used memory: +614400 KiB$/m);
    assert.match(info, /^Hot-plugged: +352256 KiB of 524288 KiB \(virtio-mem\)$/m);
    assert.equal(info.split('\n').slice(0, 14).map((l) => l.replace(/^CPU time:.*/, '')).join('\n'),
      (await virsh(U, 'dominfo', name)).stdout.split('\n').slice(0, 14).map((l) => l.replace(/^CPU time:.*/, '')).join('\n'), 'virsh lines unchanged');
    // Shrink below boot RAM: unplug everything, then the balloon.
    const shrink = await runCli(['-c', U, 'setmem', name, '200M', '--wait', '--force']);
    assert.deepEqual([shrink.code, shrink.stdout], [0, `Domain '${name}' reached 204800 KiB\n\n`]);
    assert.match((await virsh(U, 'dumpxml', name)).stdout, /<current unit='KiB'>0<\/current>/);
    const stats = await runCli(['-c', U, 'dommemstat', name]);
    const vstats = await virsh(U, 'dommemstat', name);
    assert.deepEqual(stats.stdout.split('\n').map((l) => l.split(' ')[0]), vstats.stdout.split('\n').map((l) => l.split(' ')[0]), 'same statistics, same order');
    assert.match(stats.stdout, /^actual 204800$/m);
    const hmp = await runCli(['-c', U, 'qemu-monitor-command', name, '--hmp', 'info', 'balloon']);
    assert.equal(hmp.stdout, (await virsh(U, 'qemu-monitor-command', name, '--hmp', 'info', 'balloon')).stdout);
    // The monitor command tainted the domain: virsh 9 prints libvirt's messages in dominfo, so do we
    // (our own memory lines aside, the output is virsh's).
    const tainted = (await runCli(['-c', U, 'dominfo', name])).stdout;
    assert.match(tainted, /^Messages: +tainted: custom monitor control commands issued$/m);
    assert.equal(steady(virshDominfoLines(tainted)), steady((await virsh(U, 'dominfo', name)).stdout));
    // Beyond what the guest has: refused with the limit named, nothing changed.
    const tooBig = await runCli(['-c', U, 'setmem', name, '2G', '--wait']);
    assert.equal(tooBig.code, 1);
    assert.match(tooBig.stderr, /cannot set memory higher than max memory/);
    // The guard rail: not below what the guest uses (its own statistics through libvirt).
    const tooSmall = await runCli(['-c', U, 'setmem', name, '4M', '--wait']);
    assert.equal(tooSmall.code, 1);
    assert.match(tooSmall.stderr, /refusing to shrink to 4096 KiB: the guest is using \d+ KiB/);
    assert.match((await runCli(['-c', U, 'dominfo', name])).stdout, /^Used memory: +204800 KiB$/m, 'nothing changed');
    // Shutdown waits for libvirt's lifecycle event (the built-in guest powers off on the button).
    const down = await runCli(['-c', U, 'shutdown', name, '--timeout', '120']);
    assert.deepEqual([down.code, down.stdout, down.stderr], [0, `Domain '${name}' is being shutdown\n\n`, '']);
    assert.equal((await virsh(U, 'domstate', name, '--reason')).stdout, 'shut off (shutdown)\n\n');
    assert.equal((await runCli(['-c', U, 'start', name])).code, 0);
    const destroyed = await runCli(['-c', U, 'destroy', name]);
    assert.deepEqual([destroyed.code, destroyed.stdout], [0, `Domain '${name}' destroyed\n\n`]);
    const undef = await runCli(['-c', U, 'undefine', name]);
    assert.deepEqual([undef.code, undef.stdout], [0, `Domain '${name}' has been undefined\n\n`]);
  } finally {
    await virsh(U, 'destroy', name);
    await virsh(U, 'undefine', name);
    await rm(dir, { recursive: true, force: true });
  }
});

test('a second libvirtd on 127.0.0.1 TCP as a remote host: list, define, and the daemon dying mid-call is a typed error', { skip, timeout: 300_000 }, async () => {
  const remote = await startRemoteLibvirtd();
  const dir = await mkdtemp(join(tmpdir(), 'vm-lvr-'));
  try {
    const name = 'remote-guest';
    const file = join(dir, 'g.xml');
    await writeFile(file, libvirtGuestXml(name, { memoryKiB: 262144, currentKiB: 262144, virtioMemKiB: 524288, cmdline: 'memhp_default_state=online_movable' }));
    const def = await runCli(['-c', remote.uri, 'define', file]);
    assert.equal(def.code, 0, def.stderr);
    const ours = await runCli(['-c', remote.uri, 'list', '--all']);
    assert.deepEqual([ours.code, ours.stdout], [0, (await virsh(remote.uri, 'list', '--all')).stdout]);
    assert.match(ours.stdout, /remote-guest +shut off/);
    // The machine's own libvirtd does not see it: a different host.
    assert.doesNotMatch((await virsh('qemu:///system', 'list', '--all', '--name')).stdout, /^remote-guest$/m);
    // ... and it writes nothing into this machine's libvirt configuration either.
    assert.ok(!existsSync(`/etc/libvirt/qemu/${name}.xml`), 'the remote host keeps its definitions to itself');
    // The daemon dies while a call waits: the call fails with a typed error, promptly.
    const d = new LibvirtDriver(remote.uri, { keepaliveIntervalMs: 500, keepaliveCount: 3 });
    await d.list();
    process.kill(remote.pid, 'SIGSTOP'); // stops answering (keepalive loss) ...
    const started = Date.now();
    const pending = d.dumpXml(name);
    const err = await pending.then(() => null, (e: unknown) => e);
    process.kill(remote.pid, 'SIGCONT');
    assert.ok(err instanceof LibvirtError, `typed error, got ${String(err)}`);
    assert.equal((err as LibvirtError).kind, 'keepalive');
    assert.ok(Date.now() - started < 60_000, 'within the keepalive bound');
    // ... and a dead daemon fails the next connection attempt as a typed connect error.
    const d2 = new LibvirtDriver(remote.uri);
    await d2.list();
    process.kill(remote.pid, 'SIGKILL');
    const err2 = await d2.dumpXml(name).then(() => null, (e: unknown) => e);
    assert.ok(err2 instanceof LibvirtError && ['closed', 'connect'].includes(err2.kind), `typed error, got ${String(err2)}`);
    await d.close();
    await d2.close();
  } finally {
    await remote.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('qemu:///system: a shut-off guest — successes and errors read exactly as virsh\'s', { skip }, async () => {
  const U = 'qemu:///system';
  const name = `vmlv-off-${randomBytes(3).toString('hex')}`;
  const dir = await mkdtemp(join(tmpdir(), 'vm-lvo-'));
  const file = join(dir, 'g.xml');
  await writeFile(file, `<domain type='qemu'><name>${name}</name><memory unit='KiB'>262144</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os></domain>`);
  try {
    assert.equal((await virsh(U, 'define', file)).code, 0);
    for (const words of ['setmem NAME 100M', 'setmem NAME 100M --config', 'setmem NAME 100M --current', 'setmaxmem NAME 200M',
      'setmaxmem NAME 200M --live', 'dommemstat NAME', 'dommemstat NAME --period 5', 'dommemstat NAME --period 5 --config',
      'shutdown NAME', 'destroy NAME', 'qemu-monitor-command NAME --hmp info balloon', 'dominfo NAME', 'dumpxml NAME --inactive',
      'start nosuch', 'undefine nosuch', 'domstate nosuch']) {
      const args = words.split(' ').map((w) => (w === 'NAME' ? name : w));
      const ours = await runCli(['-c', U, ...args]);
      const theirs = await virsh(U, ...args);
      assert.deepEqual([ours.code, ours.stdout, ours.stderr], [theirs.code, theirs.stdout, theirs.stderr], words);
    }
  } finally {
    await virsh(U, 'undefine', name);
    await rm(dir, { recursive: true, force: true });
  }
});

test('test:///default: all-domain statistics in one call and memory tunables agree with virsh domstats / memtune', { skip }, async () => {
  const d = new LibvirtDriver('test:///default');
  try {
    const all = await d.allDomainStats();
    const text = all.map((r) => [`Domain: '${r.name}'`, ...Object.entries(r.stats).map(([k, v]) => `  ${k}=${v}`)].join('\n') + '\n\n').join('');
    assert.equal(text, (await virsh('test:///default', 'domstats', '--state', '--balloon')).stdout);
    const tune = await d.memoryParameters('test');
    const memtune = (await virsh('test:///default', 'memtune', 'test')).stdout;
    for (const { field, valueKiB } of tune) {
      assert.match(memtune, new RegExp(`^${field} *: ${valueKiB === null ? 'unlimited' : String(valueKiB)}$`, 'm'), field);
    }
    assert.deepEqual(tune.map((p) => p.field).sort(), ['hard_limit', 'soft_limit', 'swap_hard_limit']);
  } finally {
    await d.close();
  }
});
