/**
 * A guest whose monitor hangs stalls nothing else (issue 9, part 1): two fake guests, one whose
 * watch monitor answers and one whose monitor greets and then never answers again. The hung
 * one is marked stale within its bound; the other's events still update the model; /metrics and
 * the API answer throughout. A hang is a fault a real QEMU will not produce on demand, so the
 * monitors are scripted (fake-qmp.ts).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakePeer, bounded } from './fake-qmp.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { ApiServer } from '../../src/http/server.js';
import { fakeGuest as fakeRun } from './fake-guest.js';
import { daemonRequest, closeDaemonClients } from '../../src/driver/remote/http-client.js';
import type { DomainDef } from '../../src/domain/definition.js';

const MiB = 1024 * 1024;
const dir = await mkdtemp(join(tmpdir(), 'vds-'));
// A live process stands in for each QEMU (the daemon checks the pid and its start time).
const stand = spawn('sleep', ['600'], { stdio: 'ignore' });
const servers: net.Server[] = [];
const peers: FakePeer[] = [];
let daemon: Daemon | null = null;
let api: ApiServer | null = null;
after(async () => {
  finished = true;
  closeDaemonClients();
  await api?.close();
  await daemon?.stop();
  for (const p of peers) p.destroy();
  for (const s of servers) s.close();
  stand.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

function def(name: string): DomainDef {
  return {
    schemaVersion: 1, name, uuid: `00000000-0000-0000-0000-00000000000${name === 'good' ? 1 : 2}`, vcpus: 1,
    memory: { maxKiB: 524288, currentKiB: 524288 }, memoryDevices: [], os: {}, disks: [],
    balloon: { model: 'virtio', autodeflate: true, freePageReporting: true, statsPeriodS: 1 },
  } as unknown as DomainDef;
}

/** A fake guest: run record + watch monitor socket whose peers `onPeer` drives. */
async function fakeGuest(name: string, onPeer: (p: FakePeer) => void): Promise<void> {
  servers.push(await fakeRun(dir, stand.pid!, name === 'good' ? 1 : 2, def(name), (p) => { peers.push(p); onPeer(p); }));
}

let goodPeer: FakePeer | null = null;
/** Set at the end: the scripted monitors stop reading. */
let finished = false;
let hungQuestions = 0;
/** The good guest's balloon as its QEMU would answer it. */
let goodBalloon = 512 * MiB;

test('a hung monitor is marked stale; the other guest, the API and /metrics carry on', async () => {
  await fakeGuest('good', (p) => {
    goodPeer = p;
    void (async () => {
      await p.handshake();
      for (;;) {
        const c = await p.nextCommand(500).catch(() => null);
        if (finished) return;
        if (!c) continue;
        if (c.execute === 'query-status') p.reply(c, { status: 'running', running: true });
        else if (c.execute === 'query-balloon') p.reply(c, { actual: goodBalloon });
        else if (c.execute === 'qom-get') p.reply(c, { stats: { 'stat-available-memory': 300 * MiB, 'stat-total-memory': 400 * MiB }, 'last-update': Math.floor(Date.now() / 1000) });
        else p.reply(c, []);
      }
    })();
  });
  await fakeGuest('hung', (p) => {
    void (async () => {
      await p.handshake();
      // From here on: reads every question, answers none.
      for (;;) {
        const c = await p.nextCommand(500).catch(() => null);
        if (finished) return;
        if (!c) continue;
        hungQuestions++;
      }
    })();
  });
  daemon = new Daemon({ stateDir: dir, guestBoundMs: 500, tickMs: 100 });
  await daemon.start();
  api = new ApiServer({ daemon, token: null, listen: { kind: 'unix', path: join(dir, 'd.sock') } });
  await api.start();
  const t = { socketPath: join(dir, 'd.sock') };

  const stats = async (): Promise<Array<{ name: string; monitor: string; stale: boolean; memory: { balloonBytes: number } }>> =>
    ((await daemonRequest(t, 'GET', '/api/v1/stats', { timeoutMs: 5_000 })).body as { guests: Array<{ name: string; monitor: string; stale: boolean; memory: { balloonBytes: number } }> }).guests;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const g = await stats();
    const good = g.find((x) => x.name === 'good');
    const hung = g.find((x) => x.name === 'hung');
    if (good?.monitor === 'connected' && hung?.monitor === 'stale') break;
    assert.ok(Date.now() < deadline, `expected good connected and hung stale, got ${JSON.stringify(g.map((x) => [x.name, x.monitor]))}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(hungQuestions > 0);
  // The good guest's events still reach the model while the other one hangs.
  goodBalloon = 256 * MiB;
  goodPeer!.event('BALLOON_CHANGE', { actual: 256 * MiB });
  await bounded((async () => {
    while ((await stats()).find((x) => x.name === 'good')!.memory.balloonBytes !== 256 * MiB) await new Promise((r) => setTimeout(r, 20));
  })(), 10_000, 'the good guest\'s balloon change in the model');
  // Scrapes answer from the model at once, hung guest or not.
  const m = await daemonRequest(t, 'GET', '/metrics', { timeoutMs: 2_000 });
  assert.equal(m.status, 200);
  assert.match(m.text, /^virtmem_guest_up\{domain="hung"\} 0$/m);
  assert.match(m.text, /^virtmem_guest_up\{domain="good"\} 1$/m);
  assert.match(m.text, /^virtmem_guest_balloon_actual_bytes\{domain="good"\} 268435456$/m);
  assert.match(m.text, /^virtmem_guest_monitor_timeouts_total\{domain="hung"\} [1-9]\d*$/m);
  assert.doesNotMatch(m.text, /virtmem_guest_mem_available_bytes\{domain="hung"\}/, 'never reported: absent');
  const hungDoc = (await daemonRequest(t, 'GET', '/api/v1/domains/hung', { timeoutMs: 2_000 })).body as { stale: boolean; staleSinceS: number | null };
  assert.equal(hungDoc.stale, true);
  assert.equal(typeof hungDoc.staleSinceS, 'number');
});
