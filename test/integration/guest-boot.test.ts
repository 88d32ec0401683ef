/**
 * The default guest on a real QEMU: builds (or reuses) it in defaultGuestDir(), boots it, talks
 * to its serial command agent, checks the memory drivers, the vmhelper's addresses, ACPI
 * power-off and virtio-mem hot-plug.
 *
 * Needs qemu-system-x86, and to build the guest: apt lists (`apt-get update`), dpkg-deb, cpio,
 * and gcc + libc6-dev for /bin/vmhelper. The QMP client here is deliberately tiny and local:
 * the project's QMP layer is developed separately and this test must not depend on it.
 */

import { kvmStatus } from '../../src/driver/native/accel.js';
import { resolveEmulator } from '../../src/driver/native/emulator.js';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as fsc } from 'node:fs';
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { before, test } from 'node:test';
import { GuestAgent, readGuestMeminfo } from '../../src/guest/agent.js';
import { buildDefaultGuest, defaultGuestDir, type DefaultGuest } from '../../src/guest/build.js';
import { skipUnlessCi } from '../helpers/skip.js';

const QEMU = 'qemu-system-x86_64';
const MiB = 1024;
const GiB_KIB = 1024 * 1024;

let guest: DefaultGuest;

before(
  async () => {
    const t0 = Date.now();
    guest = await buildDefaultGuest({ dir: defaultGuestDir(), log: (l) => console.log(`build: ${l}`) });
    console.log(`default guest ready in ${Date.now() - t0} ms: ${guest.kernelPath} ${guest.initrdPath}`);
  },
  { timeout: 20 * 60_000 },
);

test('default guest boots, loads balloon and virtio-mem drivers, reports vmhelper addresses, powers off on ACPI', { timeout: 240_000 }, async (t) => {
  await withGuest(['-m', '512M', '-device', 'virtio-balloon-pci,id=balloon0'], async (vm) => {
    const agent = await GuestAgent.connect(vm.agentPath, { timeoutMs: 120_000 });
    t.diagnostic(`boot to agent-ready: ${Date.now() - vm.startedAt} ms (${vm.accel})`);
    try {
      const mem = await readGuestMeminfo(agent);
      // 512 MiB minus what the kernel keeps for itself (~30 MiB here).
      assert.ok(mem.memTotalKiB > 400 * MiB && mem.memTotalKiB <= 512 * MiB, `MemTotal ${mem.memTotalKiB} KiB implausible for -m 512M`);
      assert.ok(mem.memAvailableKiB > 0 && mem.memAvailableKiB <= mem.memTotalKiB);

      const drivers = await agent.run('ls /sys/bus/virtio/drivers; lsmod');
      assert.equal(drivers.exitCode, 0, drivers.output);
      assert.match(drivers.output, /^virtio_balloon\b/m);
      assert.match(drivers.output, /^virtio_mem\b/m);
      // The balloon driver is not only loaded but bound to the device.
      const bound = await agent.run('ls /sys/bus/virtio/drivers/virtio_balloon/ | grep "^virtio[0-9]"');
      assert.equal(bound.exitCode, 0, `virtio_balloon bound to no device: ${bound.output}`);

      const exit = await agent.run('exit 7');
      assert.equal(exit.exitCode, 7);

      if (!guest.hasVmhelper) {
        assert.equal(await onPath('gcc'), false, 'gcc is installed but the guest has no /bin/vmhelper: rebuild with --force');
        t.diagnostic(skipUnlessCi('no gcc on this host: vmhelper check skipped') || '');
      } else {
        // Background it with its output in a file (its tty output would outlive this command),
        // then wait for its line inside the guest, bounded.
        const r = await agent.run(
          '/bin/vmhelper pattern >/tmp/pattern.out 2>&1 & i=0; ' +
            'while ! grep -q gpa= /tmp/pattern.out && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; cat /tmp/pattern.out',
          { timeoutMs: 60_000 },
        );
        const m = /^va=0x([0-9a-f]+) gpa=0x([0-9a-f]+) pid=(\d+)$/m.exec(r.output);
        assert.ok(m?.[2], `vmhelper printed no va/gpa line: ${r.output}`);
        // The gpa is true if guest-physical memory there holds the pattern ("VIRTMEM!" as a
        // little-endian u64). HMP `xp` reads guest-physical memory.
        const qmp = await TinyQmp.connect(vm.qmpPath, 10_000);
        try {
          const xp = await qmp.execute('human-monitor-command', { 'command-line': `xp /2gx 0x${m[2]}` });
          assert.equal(typeof xp, 'string');
          assert.equal((String(xp).match(/0x214d454d54524956/g) ?? []).length, 2, `no VIRTMEM! pattern at gpa 0x${m[2]}: ${String(xp)}`);
        } finally {
          qmp.close();
        }
      }
    } finally {
      agent.close();
    }

    const qmp = await TinyQmp.connect(vm.qmpPath, 10_000);
    try {
      const t0 = Date.now();
      await qmp.execute('system_powerdown');
      const result = await vm.waitExit(30_000);
      t.diagnostic(`system_powerdown -> QEMU exit: ${Date.now() - t0} ms`);
      assert.deepEqual(result, { code: 0, signal: null }, `QEMU did not exit cleanly: ${vm.stderr()}`);
    } finally {
      qmp.close();
    }
  });
});

test('virtio-mem: qom-set requested-size plugs 1 GiB and the guest MemTotal grows by it', { timeout: 240_000 }, async (t) => {
  const machine = [
    '-m', '512M,slots=4,maxmem=4G',
    '-object', 'memory-backend-ram,id=m0,size=2G',
    '-device', 'virtio-mem-pci,id=vm0,memdev=m0,requested-size=0,block-size=2M',
  ];
  await withGuest(machine, async (vm) => {
    const agent = await GuestAgent.connect(vm.agentPath, { timeoutMs: 120_000 });
    const qmp = await TinyQmp.connect(vm.qmpPath, 10_000);
    try {
      const before = await readGuestMeminfo(agent);
      const t0 = Date.now();
      await qmp.execute('qom-set', { path: '/machine/peripheral/vm0', property: 'requested-size', value: 1024 * 1024 * 1024 });
      // Poll the guest, bounded; the device plugs in steps and the guest onlines each block.
      let now = before;
      const deadline = Date.now() + 60_000;
      while (now.memTotalKiB < before.memTotalKiB + GiB_KIB && Date.now() < deadline) {
        await sleepBriefly(200);
        now = await readGuestMeminfo(agent);
      }
      t.diagnostic(`MemTotal ${before.memTotalKiB} -> ${now.memTotalKiB} KiB in ${Date.now() - t0} ms`);
      assert.equal(now.memTotalKiB - before.memTotalKiB, GiB_KIB, 'guest MemTotal did not grow by exactly 1 GiB');
      const size = await qmp.execute('qom-get', { path: '/machine/peripheral/vm0', property: 'size' });
      assert.equal(size, 1024 * 1024 * 1024);
    } finally {
      qmp.close();
      agent.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------

interface RunningGuest {
  proc: ChildProcess;
  dir: string;
  qmpPath: string;
  agentPath: string;
  consolePath: string;
  accel: string;
  startedAt: number;
  stderr(): string;
  /** Resolves when QEMU exits; rejects after `timeoutMs`. */
  waitExit(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL if still running, wait for the exit, remove the temp dir; print console and stderr if `failed`. */
  destroy(failed: boolean): Promise<void>;
}

/** Boots a guest, runs `body`, and always kills QEMU and cleans up; shows the console on failure. */
async function withGuest(machineArgs: string[], body: (vm: RunningGuest) => Promise<void>): Promise<void> {
  const vm = await startGuest(machineArgs);
  let failed = true;
  try {
    await body(vm);
    failed = false;
  } finally {
    await vm.destroy(failed);
  }
}

/** KVM only where a probe guest has run under it (a /dev/kvm that opens is not proof). */
async function kvmUsable(): Promise<boolean> {
  const s = await kvmStatus({ emulator: await resolveEmulator(QEMU), kernel: guest.kernelPath });
  return s.usable;
}

async function onPath(cmd: string): Promise<boolean> {
  for (const d of (process.env.PATH ?? '').split(delimiter)) {
    try {
      await access(join(d, cmd), fsc.X_OK);
      return true;
    } catch {
      // next
    }
  }
  return false;
}

async function startGuest(machineArgs: string[]): Promise<RunningGuest> {
  assert.ok(await onPath(QEMU), `${QEMU} not found: install qemu-system-x86`);
  const dir = await mkdtemp(join(tmpdir(), 'virtmem-guest-test-'));
  const qmpPath = join(dir, 'qmp.sock');
  const agentPath = join(dir, 'agent.sock');
  const consolePath = join(dir, 'console.log');
  const accel = (await kvmUsable()) ? 'kvm' : 'tcg';
  const args = [
    '-machine', 'pc', '-accel', accel, ...(accel === 'kvm' ? ['-cpu', 'host'] : []), '-smp', '1',
    '-nodefaults', '-display', 'none', '-no-user-config',
    ...machineArgs,
    '-kernel', guest.kernelPath, '-initrd', guest.initrdPath, '-append', guest.cmdline,
    '-chardev', `socket,id=qmp,path=${qmpPath},server=on,wait=off`, '-mon', 'chardev=qmp,mode=control',
    '-chardev', `socket,id=con0,path=${join(dir, 'console.sock')},server=on,wait=off,logfile=${consolePath}`,
    '-serial', 'chardev:con0',
    '-chardev', `socket,id=agent0,path=${agentPath},server=on,wait=off`, '-serial', 'chardev:agent0',
  ];
  const startedAt = Date.now();
  const proc = spawn(QEMU, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr?.setEncoding('utf8').on('data', (c: string) => (err += c));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('exit', (code, signal) => resolve({ code, signal }));
    proc.once('error', (e) => {
      err += String(e);
      resolve({ code: -1, signal: null });
    });
  });
  const waitExit = async (timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`QEMU still running after ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  };
  return {
    proc, dir, qmpPath, agentPath, consolePath, accel, startedAt,
    stderr: () => err,
    waitExit,
    async destroy(failed) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await waitExit(10_000).catch(() => undefined);
      if (failed) {
        const log = await readFile(consolePath, 'utf8').catch(() => '');
        console.log(`qemu stderr: ${err.trim() || '(empty)'}`);
        console.log(`guest console (last 3000 chars):\n${log.slice(-3000).replace(/\r/g, '')}`);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function sleepBriefly(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Just enough QMP (docs/interop/qmp-spec.rst) for this test: greeting, capabilities
 * negotiation, one command at a time with an id, events ignored. Every wait is bounded and
 * everything pending fails when the socket closes.
 */
class TinyQmp {
  #sock: Socket;
  #buf = '';
  #nextId = 1;
  #pending = new Map<string, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #greeting: ((ok: boolean) => void) | null = null;
  #closed = false;

  private constructor(sock: Socket) {
    this.#sock = sock;
    sock.setEncoding('utf8');
    sock.on('data', (c: string) => this.#onData(c));
    sock.on('error', () => this.#onClose());
    sock.on('close', () => this.#onClose());
  }

  static async connect(path: string, timeoutMs: number): Promise<TinyQmp> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = createConnection(path);
          s.once('connect', () => {
            s.removeAllListeners('error');
            resolve(s);
          });
          s.once('error', reject);
        });
        const q = new TinyQmp(sock);
        await q.#waitGreeting(Math.max(1, deadline - Date.now()));
        await q.execute('qmp_capabilities', undefined, Math.max(1, deadline - Date.now()));
        return q;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() > deadline) throw e;
        await sleepBriefly(100);
      }
    }
  }

  #waitGreeting(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#greeting = null;
        this.close();
        reject(new Error('no QMP greeting'));
      }, timeoutMs);
      this.#greeting = (ok) => {
        clearTimeout(timer);
        this.#greeting = null;
        if (ok) resolve();
        else reject(new Error('QMP socket closed before the greeting'));
      };
    });
  }

  execute(command: string, args?: Record<string, unknown>, timeoutMs = 30_000): Promise<unknown> {
    if (this.#closed) return Promise.reject(new Error('QMP closed'));
    const id = `t${this.#nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`QMP ${command}: no reply in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#sock.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  close(): void {
    this.#sock.destroy();
    this.#onClose();
  }

  #onData(chunk: string): void {
    this.#buf += chunk;
    for (let nl = this.#buf.indexOf('\n'); nl >= 0; nl = this.#buf.indexOf('\n')) {
      const line = this.#buf.slice(0, nl).trim();
      this.#buf = this.#buf.slice(nl + 1);
      if (!line) continue;
      const msg = JSON.parse(line) as { QMP?: unknown; id?: string; return?: unknown; error?: { class: string; desc: string } };
      if (msg.QMP !== undefined) {
        this.#greeting?.(true);
        continue;
      }
      const p = msg.id !== undefined ? this.#pending.get(msg.id) : undefined;
      if (!p || msg.id === undefined) continue; // events and unknown ids
      this.#pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`QMP error ${msg.error.class}: ${msg.error.desc}`));
      else p.resolve(msg.return);
    }
  }

  #onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#greeting?.(false);
    for (const p of this.#pending.values()) p.reject(new Error('QMP socket closed'));
    this.#pending.clear();
  }
}
