/**
 * Where the policy benchmark's three guests live (bench/policy-real.ts): virtmem's own QEMU
 * guests in the bench's state directory, or libvirt guests defined in a libvirtd (this machine's
 * qemu:///system, or a second libvirtd in its own mount namespace on 127.0.0.1 TCP standing for a
 * remote host). Either way the guest is the built-in guest with the same memory layout (512 MiB
 * boot RAM + a 1.5 GiB virtio-mem region, balloon with 1 s statistics, deflate-on-OOM and free
 * page reporting), its agent on the second serial port, and the same read-only ext2 disk for the
 * cache guest. Every step a user would type goes through `bin/virtmem` (`-c URI` on libvirt).
 */
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StatePaths } from '../../src/driver/native/paths.js';
import { libvirtGuestXml } from '../../test/helpers/libvirt-guest.js';
import { removeDomains, virsh } from '../../test/helpers/virsh.js';
import { startRemoteLibvirtd, type RemoteLibvirtd } from '../../test/helpers/remote-libvirtd.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const BIN = join(ROOT, 'bin', 'virtmem');
const MiB = 1024;

export const GUEST_NAMES = ['alloc', 'cache', 'ramp'] as const;
export type GName = (typeof GUEST_NAMES)[number];

/** `bin/virtmem ARGS...`, bounded; throws with its stderr on failure. */
export function virtmemCli(args: readonly string[], timeoutMs = 120_000): string {
  // Without the warm CLI process: the bench's state directory goes away at the end.
  const r = spawnSync(BIN, args, { encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, VIRTMEM_WARM: '0' } });
  if (r.status !== 0) throw new Error(`virtmem ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}`);
  return r.stdout;
}

/** `bin/virtmem [where] qemu-monitor-command DOM --hmp --cmd COMMAND`: its output, or why it failed; never rejects. */
function hmpVia(where: readonly string[], dom: string, command: string): Promise<string> {
  return new Promise((resolve) => {
    execFile(BIN, [...where, 'qemu-monitor-command', dom, '--hmp', '--cmd', ...command.split(' ')], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, VIRTMEM_WARM: '0' } },
      (err, stdout, stderr) => resolve(err ? `(failed: ${err.message.split('\n')[0]} ${stderr.trim()})` : stdout));
  });
}

/** One host of the benchmark and its three guests. */
export interface BenchHost {
  /** What the daemon calls the host: 'local' for virtmem's own guests, else the libvirt URI. */
  readonly key: string;
  /** For tables and logs. */
  readonly label: string;
  /** The most this host's guests may hold together (KiB). */
  readonly budgetKiB: number;
  /** The line of `virtmem daemon --hosts FILE` for a libvirt host; null for the local host. */
  readonly hostsLine: string | null;
  name(g: GName): string;
  /** Where the guest's agent answers (a unix socket the bench can reach). */
  agentPath(g: GName): string;
  /** Defines the three guests (the cache guest with `disk` attached) with the policy on and a 384 MiB floor. */
  define(disk: string | null): Promise<void>;
  /** Starts one guest (fresh for every row). */
  start(g: GName): void;
  /** `setmem NAME SIZE --wait --force` with 1 s statistics. */
  setMemory(g: GName, kib: number): void;
  /** An HMP command on the guest's monitor (`qemu-monitor-command --hmp`); its output, or the error. */
  hmp(g: GName, command: string): Promise<string>;
  /** Stops one guest; never throws. */
  destroy(g: GName): void;
  /** Destroys and undefines the guests, stops what the host started; never throws. */
  cleanup(): Promise<void>;
}

/** virtmem's own guests in `stateDir` (its daemon's local host). */
export function nativeHost(stateDir: string, budgetKiB: number): BenchHost {
  const paths = new StatePaths(stateDir);
  const name = (g: GName): string => `pr-${g}`;
  const cli = (...args: string[]): string => virtmemCli(['--state-dir', stateDir, ...args]);
  return {
    key: 'local', label: 'virtmem (native QEMU)', budgetKiB, hostsLine: null, name,
    agentPath: (g) => paths.run(name(g)).agent,
    async define(disk) {
      for (const g of GUEST_NAMES) {
        const d = g === 'cache' && disk ? ['--disk', `${disk},format=raw,readonly`] : [];
        cli('new', name(g), '--accel', 'tcg', '--memory', '512M', '--max-memory', '2G', ...d);
        cli('policy', 'set', name(g), '--enable', '--floor', '384M');
      }
    },
    start: (g) => { cli('start', name(g)); },
    setMemory(g, kib) {
      cli('dommemstat', name(g), '--period', '1', '--live');
      cli('setmem', name(g), `${kib}K`, '--wait', '--force', '--timeout', '120');
    },
    hmp: (g, command) => hmpVia(['--state-dir', stateDir], name(g), command),
    destroy: (g) => { spawnSync(BIN, ['--state-dir', stateDir, 'destroy', name(g)], { stdio: 'ignore', timeout: 60_000 }); },
    async cleanup() {
      for (const g of GUEST_NAMES) {
        spawnSync(BIN, ['--state-dir', stateDir, 'destroy', name(g)], { stdio: 'ignore', timeout: 60_000 });
        spawnSync(BIN, ['--state-dir', stateDir, 'undefine', name(g)], { stdio: 'ignore', timeout: 60_000 });
      }
    },
  };
}

/**
 * Guests defined in the libvirtd at `uri`. `agentRoot` prefixes the agent socket's path (the
 * root of a libvirtd in another mount namespace, `/proc/PID/root`); `stop` ends that libvirtd.
 * The guests' names are unique to this run (`vmpl<random>-<role>`).
 */
function libvirtHost(uri: string, label: string, budgetKiB: number, agentRoot: string, workDir: string, stop: () => Promise<void>): BenchHost {
  const tag = `vmpl${randomBytes(3).toString('hex')}`;
  const name = (g: GName): string => `${tag}-${g}`;
  const socket = (g: GName): string => `/var/lib/libvirt/qemu/${name(g)}.agent.sock`;
  const names = GUEST_NAMES.map(name);
  return {
    key: uri, label, budgetKiB, hostsLine: `${uri} budget=${budgetKiB / MiB}M`, name,
    agentPath: (g) => `${agentRoot}${socket(g)}`,
    async define(disk) {
      for (const g of GUEST_NAMES) {
        const xml = join(workDir, `${name(g)}.xml`);
        // Its own copy of the cache disk: libvirt takes ownership of an image while a guest uses it.
        let own: string | undefined;
        if (g === 'cache' && disk) { own = join(workDir, `${name(g)}.img`); await copyFile(disk, own); }
        await writeFile(xml, libvirtGuestXml(name(g), {
          memoryKiB: 512 * MiB, currentKiB: 512 * MiB, virtioMemKiB: 1536 * MiB, cmdline: 'memhp_default_state=online_movable',
          agentSocket: socket(g), balloonAutodeflate: true, freePageReporting: true, ...(own ? { readonlyDisk: own } : {}),
        }));
        const r = await virsh(uri, 'define', xml);
        if (r.code !== 0) throw new Error(`virsh -c ${uri} define ${name(g)}: ${r.stderr}`);
        virtmemCli(['-c', uri, 'policy', 'set', name(g), '--enable', '--floor', '384M']);
      }
    },
    start: (g) => { virtmemCli(['-c', uri, 'start', name(g)]); },
    setMemory: (g, kib) => { virtmemCli(['-c', uri, 'setmem', name(g), `${kib}K`, '--wait', '--force', '--timeout', '120']); },
    hmp: (g, command) => hmpVia(['-c', uri], name(g), command),
    destroy: (g) => { spawnSync(BIN, ['-c', uri, 'destroy', name(g)], { stdio: 'ignore', timeout: 60_000 }); },
    async cleanup() {
      const left = await removeDomains(uri, names).catch(() => names);
      if (left.length > 0) process.stderr.write(`[policy-real] ${uri}: could not remove ${left.join(', ')}\n`);
      await stop();
    },
  };
}

/** The three guests in this machine's libvirtd (qemu:///system). */
export function systemLibvirtHost(workDir: string, budgetKiB: number): BenchHost {
  return libvirtHost('qemu:///system', 'libvirt (qemu:///system)', budgetKiB, '', workDir, async () => {});
}

/**
 * A second libvirtd in its own mount namespace on 127.0.0.1 TCP (test/helpers/remote-libvirtd.ts),
 * standing for a remote host, and the three guests in it.
 */
export async function remoteLibvirtHost(workDir: string, budgetKiB: number): Promise<BenchHost> {
  const remote: RemoteLibvirtd = await startRemoteLibvirtd();
  return libvirtHost(remote.uri, `libvirt (remote ${remote.uri})`, budgetKiB, `/proc/${remote.pid}/root`, workDir, () => remote.stop());
}
