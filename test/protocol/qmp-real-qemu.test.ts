/**
 * The QMP client against a real QEMU 7.2 (TCG, paused with -S, no guest needed).
 * Every QEMU started here is SIGKILLed in `after`, and every wait is bounded.
 */

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { QmpClient } from '../../src/qmp/client.js';
import {
  qomSet,
  queryBalloon,
  queryBalloonGuestStats,
  queryMemoryDevices,
  queryMemorySizeSummary,
  queryStatus,
  quit,
} from '../../src/qmp/commands.js';
import { QmpCommandError, QmpConnectError, QmpDisconnectedError, QmpTimeoutError } from '../../src/qmp/errors.js';
import { bounded } from './fake-qmp.js';
import { readProcStat } from '../../src/driver/native/host-process.js';
import { until } from '../helpers/poll.js';

const MiB = 1024 * 1024;
const T = { timeout: 30_000 };

interface Qemu {
  proc: ChildProcess;
  socketPath: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

function startQemu(dir: string, extra: string[] = [], memory = '128M'): Qemu {
  const socketPath = path.join(dir, 'q.sock');
  // argv array, never a shell string.
  const argv = [
    '-machine', 'pc', '-accel', 'tcg', '-m', memory, '-nodefaults', '-display', 'none', '-S',
    '-chardev', `socket,id=qmp,path=${socketPath},server=on,wait=off`,
    '-mon', 'chardev=qmp,mode=control',
    ...extra,
  ];
  const proc = spawn('qemu-system-x86_64', argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('exit', (code, signal) => resolve({ code, signal })),
  );
  proc.on('error', () => {}); // surfaces as 'exit'/connect failure below
  return { proc, socketPath, exited, stderr: () => stderr };
}

function kill(qemu: Qemu | undefined): void {
  if (qemu && qemu.proc.exitCode === null && qemu.proc.signalCode === null) qemu.proc.kill('SIGKILL');
}

/** QEMU creates the socket shortly after start: retry connect on ENOENT/ECONNREFUSED, bounded. */
async function connectWhenReady(qemu: Qemu, totalMs = 10_000): Promise<QmpClient> {
  const deadline = Date.now() + totalMs;
  for (;;) {
    if (qemu.proc.exitCode !== null || qemu.proc.signalCode !== null) {
      throw new Error(`QEMU exited before its monitor was ready: ${qemu.stderr()}`);
    }
    try {
      return await QmpClient.connect(qemu.socketPath, { timeoutMs: Math.max(100, deadline - Date.now()) });
    } catch (err) {
      if (!(err instanceof QmpConnectError) || Date.now() > deadline) throw err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('QmpClient against real QEMU', () => {
  let dir: string;
  let qemu: Qemu | undefined;
  let client: QmpClient | undefined;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'virtmem-qmp-qemu-'));
    qemu = startQemu(dir, ['-device', 'virtio-balloon-pci,id=balloon0']);
    client = await connectWhenReady(qemu);
  });

  after(async () => {
    client?.destroy();
    kill(qemu);
    if (qemu) await bounded(qemu.exited, 5_000, 'QEMU to exit');
    await rm(dir, { recursive: true, force: true });
  });

  it('negotiated with QEMU 7.x', T, () => {
    assert.equal(client?.state, 'running');
    assert.equal(client?.greeting?.version.qemu.major, 7);
  });

  it('query-status: not running (-S leaves it in prelaunch)', T, async () => {
    assert.deepEqual(await queryStatus(client!), { status: 'prelaunch', running: false });
  });

  it('hmp info balloon, query-balloon and query-memory-size-summary agree on 128 MiB', T, async () => {
    assert.match(await client!.hmp('info balloon'), /^balloon: actual=128\r?\n$/);
    assert.deepEqual(await queryBalloon(client!), { actualBytes: 128 * MiB });
    assert.deepEqual(await queryMemorySizeSummary(client!), { baseMemoryBytes: 128 * MiB, pluggedMemoryBytes: 0 });
  });

  it('balloon guest stats before the guest reported anything are all -1, last update 0', T, async () => {
    const { stats, lastUpdate } = await queryBalloonGuestStats(client!, '/machine/peripheral/balloon0');
    assert.equal(lastUpdate, 0);
    assert.ok('stat-total-memory' in stats && 'stat-available-memory' in stats);
    for (const [key, value] of Object.entries(stats)) assert.equal(value, -1, key);
  });

  it('an unknown command fails with QmpCommandError CommandNotFound; the connection stays usable', T, async () => {
    await assert.rejects(client!.execute('no-such-command'), (e: unknown) => {
      assert.ok(e instanceof QmpCommandError);
      assert.equal(e.errorClass, 'CommandNotFound');
      assert.equal(e.command, 'no-such-command');
      return true;
    });
    assert.equal((await queryStatus(client!)).running, false);
  });

  it('a second client gets no greeting while the monitor is busy: connect times out saying so', T, async () => {
    await assert.rejects(QmpClient.connect(qemu!.socketPath, { timeoutMs: 300 }), (e: unknown) => {
      assert.ok(e instanceof QmpTimeoutError);
      assert.match(e.message, /no QMP greeting.*busy/);
      return true;
    });
    assert.equal(client!.state, 'running');
  });

  it('quit: a stream registered first sees SHUTDOWN, QEMU exits, the client closes', T, async () => {
    const shutdown = client!.events({ names: ['SHUTDOWN'] });
    await quit(client!);
    const event = await shutdown.nextEvent({ timeoutMs: 5_000 });
    assert.equal(event.event, 'SHUTDOWN');
    assert.deepEqual(event.data, { guest: false, reason: 'host-qmp-quit' });
    await bounded(client!.closed, 5_000, 'client to close after quit');
    assert.equal(client!.state, 'closed');
    assert.deepEqual(await bounded(qemu!.exited, 5_000, 'QEMU to exit after quit'), { code: 0, signal: null });
  });
});

describe('QmpClient when QEMU is SIGKILLed', () => {
  let dir: string;
  let qemu: Qemu | undefined;
  let client: QmpClient | undefined;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'virtmem-qmp-kill-'));
    qemu = startQemu(
      dir,
      [
        '-object', 'memory-backend-ram,id=m0,size=256M',
        '-device', 'virtio-mem-pci,id=vm0,memdev=m0,requested-size=0,block-size=2M',
      ],
      '128M,slots=1,maxmem=1G',
    );
    client = await connectWhenReady(qemu);
  });

  after(async () => {
    client?.destroy();
    if (qemu?.proc.signalCode === 'SIGSTOP') qemu.proc.kill('SIGCONT');
    kill(qemu);
    if (qemu) await bounded(qemu.exited, 5_000, 'QEMU to exit');
    await rm(dir, { recursive: true, force: true });
  });

  it('query-memory-devices and qom-set on a virtio-mem device', T, async () => {
    const [dev] = await queryMemoryDevices(client!);
    assert.ok(dev && dev.type === 'virtio-mem');
    assert.equal(dev.id, 'vm0');
    assert.equal(dev.maxSizeBytes, 256 * MiB);
    assert.equal(dev.blockSizeBytes, 2 * MiB);
    assert.equal(dev.requestedSizeBytes, 0);
    await qomSet(client!, '/machine/peripheral/vm0', 'requested-size', 64 * MiB);
    const [after] = await queryMemoryDevices(client!);
    assert.ok(after && after.type === 'virtio-mem');
    assert.equal(after.requestedSizeBytes, 64 * MiB);
    assert.equal(after.sizeBytes, 0, 'nothing plugged: no guest driver is running');
  });

  it('a call in flight when QEMU dies rejects with QmpDisconnectedError', T, async () => {
    const q = qemu!;
    // Freeze QEMU so the call is certainly still in flight when the kill lands.
    q.proc.kill('SIGSTOP');
    const inflight = client!.execute('query-status', undefined, { timeoutMs: 20_000 });
    assert.equal(client!.pendingCount, 1);
    q.proc.kill('SIGKILL');
    const started = Date.now();
    await assert.rejects(bounded(inflight, 5_000, 'in-flight call to settle'), (e: unknown) => {
      assert.ok(e instanceof QmpDisconnectedError, String(e));
      assert.match(e.message, /QEMU closed the monitor/);
      return true;
    });
    assert.ok(Date.now() - started < 5_000);
    await bounded(client!.closed, 5_000, 'client closed');
    assert.equal(client!.state, 'closed');
    assert.equal((await bounded(q.exited, 5_000, 'QEMU exit')).signal, 'SIGKILL');
  });
});

describe('QmpClient and a QEMU that is not accepting (stopped with SIGSTOP)', () => {
  let dir: string;
  let qemu: Qemu | undefined;
  const raw: net.Socket[] = [];

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'virtmem-qmp-stop-'));
    qemu = startQemu(dir);
    (await connectWhenReady(qemu)).destroy();
  });

  after(async () => {
    for (const s of raw) s.destroy();
    qemu?.proc.kill('SIGCONT');
    kill(qemu);
    if (qemu) await bounded(qemu.exited, 5_000, 'QEMU to exit');
    await rm(dir, { recursive: true, force: true });
  });

  /** A plain connection: 'connected' (queued, even when nobody accepts) or the error code. */
  const rawConnect = (): Promise<string> => new Promise((resolve) => {
    const s = net.createConnection(qemu!.socketPath);
    raw.push(s);
    s.once('connect', () => resolve('connected'));
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });

  it('connected but never greeted: a greeting time-out within the answer bound, stage greeting', T, async () => {
    qemu!.proc.kill('SIGSTOP');
    // The stop lands when QEMU's threads are next scheduled, not when kill() returns.
    await until('QEMU stopped', async () => (await readProcStat(qemu!.proc.pid!))?.state, (st) => st === 'T', () => {}, 10_000);
    await assert.rejects(QmpClient.connect(qemu!.socketPath, { timeoutMs: 10_000, answerTimeoutMs: 200 }), (e: unknown) => {
      assert.ok(e instanceof QmpTimeoutError, String(e));
      assert.equal(e.stage, 'greeting');
      assert.equal(e.boundMs, 200);
      return true;
    });
  });

  it('a full queue of waiting connections (EAGAIN) is retried until the bound, then a time-out, stage busy', T, async () => {
    // Fill QEMU's listen queue: plain connects succeed until it is full, then EAGAIN.
    let last = 'connected';
    for (let i = 0; i < 10 && last === 'connected'; i++) last = await rawConnect();
    assert.equal(last, 'EAGAIN', 'the queue of a stopped QEMU fills up');
    await assert.rejects(QmpClient.connect(qemu!.socketPath, { timeoutMs: 300 }), (e: unknown) => {
      assert.ok(e instanceof QmpTimeoutError, String(e));
      assert.equal(e.stage, 'busy');
      assert.match(e.message, /queue of waiting connections stayed full/);
      return true;
    });
  });

  it('when QEMU takes connections again, the retrying connect gets in', T, async () => {
    const pending = QmpClient.connect(qemu!.socketPath, { timeoutMs: 20_000, answerTimeoutMs: 5_000 });
    // The queued plain connections go away; QEMU, resumed, accepts them, sees them closed, and
    // then takes the retrying client.
    for (const s of raw.splice(0)) s.destroy();
    qemu!.proc.kill('SIGCONT');
    const c = await bounded(pending, 25_000, 'the retrying connect');
    assert.equal((await queryStatus(c)).running, false);
    c.destroy();
  });
});
