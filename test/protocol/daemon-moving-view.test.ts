/**
 * The daemon's view of a guest whose memory moves. QEMU sends BALLOON_CHANGE and
 * MEMORY_DEVICE_SIZE_CHANGE at most once a second each, so a view built from events alone is up
 * to a second behind and can add a new plugged size to a balloon size from before an inflation
 * (the policy benchmark once read a guest 128 MiB over its size that way). The watcher reads
 * balloon and devices together when a size event comes, and again while the memory moves.
 * Which events QEMU holds back is not up to a test on a real guest, so the monitor is scripted
 * (fake-qmp.ts): it answers from the sizes the test sets and sends only the events the test
 * sends.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { bounded, type FakePeer } from './fake-qmp.js';
import { fakeGuest } from './fake-guest.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { ApiServer } from '../../src/http/server.js';
import { daemonRequest, closeDaemonClients } from '../../src/driver/remote/http-client.js';
import { NativeDriver } from '../../src/driver/native/driver.js';
import type { DomainDef } from '../../src/domain/definition.js';
import { acquireLock } from '../../src/driver/native/lock.js';

const MiB = 1024 * 1024;
const dir = await mkdtemp(join(tmpdir(), 'vdm-'));
const stand = spawn('sleep', ['600'], { stdio: 'ignore' });
let server: net.Server | null = null;
let peer: FakePeer | null = null;
let daemon: Daemon | null = null;
let api: ApiServer | null = null;
let finished = false;
after(async () => {
  finished = true;
  closeDaemonClients();
  await api?.close();
  await daemon?.stop();
  peer?.destroy();
  server?.close();
  stand.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

/** 512 MiB of boot RAM with a balloon, and a 1 GiB virtio-mem device with nothing plugged. */
const live = {
  schemaVersion: 1, name: 'mover', uuid: '00000000-0000-0000-0000-000000000003', vcpus: 1,
  memory: { maxKiB: 1536 * 1024, currentKiB: 512 * 1024 },
  memoryDevices: [{ model: 'virtio-mem', sizeKiB: 1024 * 1024, blockKiB: 2048, requestedKiB: 0 }], os: {}, disks: [],
  balloon: { model: 'virtio', autodeflate: true, freePageReporting: true, statsPeriodS: 1 },
} as unknown as DomainDef;

/** What the scripted QEMU answers. */
const qemu = { balloon: 512 * MiB, plugged: 0, requested: 0, balloonQueries: 0, usable: 300 * MiB, reportAt: Math.floor(Date.now() / 1000), intervalSets: [] as unknown[], pendingUsable: null as number | null };

interface View { monitor: string; memory: { totalBytes: number; balloonBytes: number; pluggedBytes: number } }

test('a size event and a moving balloon: the view reads balloon and devices together, while they move and not after', async () => {
  server = await fakeGuest(dir, stand.pid!, 3, live, (p) => {
    peer = p;
    void (async () => {
      await p.handshake();
      while (!finished) {
        const c = await p.nextCommand(500).catch(() => null);
        if (!c || finished) continue;
        if (c.execute === 'query-status') p.reply(c, { status: 'running', running: true });
        else if (c.execute === 'query-balloon') { qemu.balloonQueries++; p.reply(c, { actual: qemu.balloon }); }
        else if (c.execute === 'query-memory-devices') {
          p.reply(c, [{ type: 'virtio-mem', data: { id: 'vmem0', memaddr: 4 * 1024 * MiB, 'requested-size': qemu.requested, size: qemu.plugged, 'max-size': 1024 * MiB, 'block-size': 2 * MiB, node: 0, memdev: '/objects/mem-vmem0' } }]);
        } else if (c.execute === 'qom-get') p.reply(c, { stats: { 'stat-available-memory': qemu.usable, 'stat-total-memory': 400 * MiB }, 'last-update': qemu.reportAt });
        else if (c.execute === 'qom-set' && c.arguments?.property === 'guest-stats-polling-interval') {
          qemu.intervalSets.push(c.arguments.value);
          p.reply(c, {});
          // A new polling timer fires at once: the guest's report comes a little later.
          if (c.arguments.value === 1 && qemu.pendingUsable !== null) {
            const usable = qemu.pendingUsable;
            setTimeout(() => { qemu.usable = usable; qemu.reportAt = Math.floor(Date.now() / 1000); }, 30);
          }
        } else p.reply(c, {});
      }
    })();
  });
  daemon = new Daemon({ stateDir: dir, guestBoundMs: 1_000, tickMs: 100 });
  await daemon.start();
  api = new ApiServer({ daemon, token: null, listen: { kind: 'unix', path: join(dir, 'd.sock') } });
  await api.start();
  const t = { socketPath: join(dir, 'd.sock') };
  const view = async (): Promise<View> => (await daemonRequest(t, 'GET', '/api/v1/domains/mover', { timeoutMs: 5_000 })).body as View;
  const until = async (what: string, ok: (v: View) => boolean, ms = 5_000): Promise<View> => bounded((async () => {
    for (;;) {
      const v = await view();
      if (ok(v)) return v;
      await delay(20);
    }
  })(), ms, what);
  await until('the guest connected with its boot sizes', (v) => v.monitor === 'connected' && v.memory.balloonBytes === 512 * MiB && v.memory.pluggedBytes === 0);
  // The daemon's first rounds (every 100 ms here) read the run record once; after that, only the monitor moves the view.
  await delay(1_000);

  // A shrink stopped half way: QEMU has inflated the balloon by 128 MiB (its event held back)
  // and plugged 128 MiB, whose event comes. The guest has 512 MiB.
  qemu.balloon = 384 * MiB;
  qemu.requested = qemu.plugged = 128 * MiB;
  peer!.event('MEMORY_DEVICE_SIZE_CHANGE', { id: 'vmem0', size: 128 * MiB, 'qom-path': '/machine/peripheral/vmem0' });
  const seen = await until('the plugged 128 MiB in the view', (v) => v.memory.pluggedBytes === 128 * MiB);
  assert.equal(seen.memory.balloonBytes, 384 * MiB, 'the balloon read with the devices, not the size from before the inflation');
  assert.equal(seen.memory.totalBytes, 512 * MiB);

  // The balloon's target is still the definition's 512 MiB: it is moving. It deflates with no
  // event, and the view follows.
  qemu.balloon = 448 * MiB;
  // Without reads while moving, the next read of the balloon would be the 10 s liveness round.
  await until('the balloon deflating without an event', (v) => v.memory.balloonBytes === 448 * MiB, 3_000);

  // At its target (the definition's 512 MiB) the view is settled: no more reads of the balloon.
  qemu.balloon = 512 * MiB;
  await until('the balloon at its target', (v) => v.memory.balloonBytes === 512 * MiB, 3_000);
  await delay(300); // a read that was in flight or scheduled when the view settled
  const before = qemu.balloonQueries;
  await delay(1_500);
  assert.equal(qemu.balloonQueries, before, 'a settled guest is not read every 200 ms');
  assert.equal((await view()).memory.totalBytes, 640 * MiB);
});

test('a tick for the policy asks the guest for a new statistics report and waits for it', async () => {
  // The guest's next report (when asked) shows 100 MiB less available; its periodic one never comes here.
  qemu.pendingUsable = 200 * MiB;
  qemu.intervalSets = [];
  const driver = new NativeDriver({ stateDir: dir });
  const watch = driver.watch({ boundMs: 1_000 });
  try {
    await watch.start();
    await bounded((async () => { while (watch.guest('mover')?.monitor !== 'connected') await delay(20); })(), 5_000, 'the second watch connected');
    await watch.tick();
    assert.equal(watch.guest('mover')!.stats.usableBytes, 300 * MiB, 'a plain tick reads the last report');
    assert.deepEqual(qemu.intervalSets, [], 'and asks for none');
    await watch.tick({ freshStats: new Set(['mover']) });
    assert.deepEqual(qemu.intervalSets, [0, 1], 'the polling timer made anew');
    assert.equal(watch.guest('mover')!.stats.usableBytes, 200 * MiB, 'the new report, read in the same tick');
  } finally {
    await watch.stop();
    await driver.close();
  }
});

test('a report request never sets back a statistics period someone is changing under the job lock', async () => {
  qemu.intervalSets = [];
  const driver = new NativeDriver({ stateDir: dir });
  const watch = driver.watch({ boundMs: 1_000 });
  const status = join(dir, 'run', 'mover', 'status.json');
  const setPeriod = async (s: number): Promise<void> => {
    const rec = JSON.parse(await readFile(status, 'utf8')) as { live: DomainDef };
    rec.live.balloon.statsPeriodS = s;
    await writeFile(status, JSON.stringify(rec));
  };
  await mkdir(join(dir, 'locks'), { recursive: true, mode: 0o700 });
  try {
    await watch.start();
    await bounded((async () => { while (watch.guest('mover')?.monitor !== 'connected') await delay(20); })(), 5_000, 'the watch connected');
    // `dommemstat --period 0` in another process: it holds the job lock from its change in
    // QEMU until the run record says so.
    const cli = await acquireLock(join(dir, 'locks', 'mover.lock'));
    try {
      await watch.tick({ freshStats: new Set(['mover']) });
      assert.deepEqual(qemu.intervalSets, [], 'no period set while another change of the guest holds the lock');
      await setPeriod(0);
    } finally {
      await cli.release();
    }
    await watch.tick({ freshStats: new Set(['mover']) });
    assert.deepEqual(qemu.intervalSets, [], 'the statistics someone turned off stay off');
    assert.equal(watch.guest('mover')!.statsPeriodS, 0);
  } finally {
    await setPeriod(1);
    await watch.stop();
    await driver.close();
  }
});
