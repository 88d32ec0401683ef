/**
 * Side-by-side benchmarks, virtmem against libvirt/virsh, on the same guest (the built-in kernel
 * and initramfs, one domain XML defined in both systems).
 *
 *   npm run bench [-- --quick] [-- --docs] [-- --scales 10,50,200]
 *   npm run bench -- policy [--seconds N] [--rows none,proxmox,mom,virtmem,virtmem-unplug]
 *                               the memory policies side by side on three real guests, each
 *                               through virtmem's daemon (bench/policy-real.ts)
 *   npm run bench -- policy --sim   the same scenario in a deterministic model (bench/policy-sim.ts)
 *   npm run bench -- api            per-call speed through virtmemd vs libvirt's C client (bench/api-calls.ts)
 *
 * --quick   fewer runs and only 10 guests at scale: a few minutes.
 * --docs    also write the table into docs/benchmarks.md.
 *
 * Prints a table (medians, interquartile range, virtmem/libvirt ratio) and writes all samples to
 * bench/results/<time>.json (and latest.json / latest.md). Every guest created here, in either
 * system, is destroyed and removed at the end, also on failure or Ctrl-C.
 */
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { cpus, totalmem, loadavg, release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { NativeDriver as Driver } from '../src/index.js';
import { findDefaultGuest, buildDefaultGuest, type DefaultGuest } from '../src/guest/build.js';
import { ensureLibvirt, processMemory, virsh, VirshSession, URI, type LibvirtHandle } from './libvirt.js';
import { formatTable, ratio, summarize, timed, type Row, type Summary } from './stats.js';
import { startBenchDaemon, apiThroughDaemon, sweepThroughDaemon, waitWatching } from './daemon.js';

/** Repository root (dist/bench -> ../..). */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(ROOT, 'bin', 'virtmem');
const WORKER = join(ROOT, 'dist', 'bench', 'virtmem-worker.js');
const RESULTS = join(ROOT, 'bench', 'results');
const DOCS = join(ROOT, 'docs', 'benchmarks.md');

interface Plan {
  mode: 'quick' | 'full';
  cliRuns: number;
  plainRuns: number;
  apiCalls: number;
  scales: number[];
  scaleCliRuns: number;
  scaleReps: number;
}

function plan(argv: string[]): { plan: Plan; docs: boolean } {
  const quick = argv.includes('--quick');
  const p: Plan = quick
    ? { mode: 'quick', cliRuns: 20, plainRuns: 8, apiCalls: 100, scales: [10], scaleCliRuns: 10, scaleReps: 5 }
    : { mode: 'full', cliRuns: 50, plainRuns: 20, apiCalls: 300, scales: [10, 50, 200], scaleCliRuns: 20, scaleReps: 7 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick' || a === '--docs') continue;
    if (a === '--scales') {
      p.scales = (argv[++i] ?? '').split(',').filter(Boolean).map(Number);
      if (p.scales.some((n) => !Number.isInteger(n) || n <= 0)) throw new Error('--scales takes a comma-separated list of guest counts');
      continue;
    }
    throw new Error(`unknown argument '${a}' (use --quick, --docs, --scales N,N)`);
  }
  return { plan: p, docs: argv.includes('--docs') };
}

const log = (s: string): void => { process.stderr.write(`[bench] ${s}\n`); };

// ---------------------------------------------------------------- guests

const SINGLE_KIB = 512 * 1024;
const SCALE_KIB = 128 * 1024;

/** The one domain XML both systems define (test/fixtures/virsh/xml/*.xml, as libvirt records it). */
function domainXml(name: string, kib: number, guest: DefaultGuest, type: 'kvm' | 'qemu'): string {
  return `<domain type='${type}'>
  <name>${name}</name>
  <uuid>${randomUUID()}</uuid>
  <memory unit='KiB'>${kib}</memory>
  <currentMemory unit='KiB'>${kib}</currentMemory>
${bootXml(guest)}  <devices>
    <serial type='pty'/>
    <console type='pty'/>
    <memballoon model='virtio'><stats period='5'/></memballoon>
  </devices>
</domain>
`;
}

/** The part of both domain XMLs that boots the built-in guest. */
function bootXml(guest: DefaultGuest): string {
  return `  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${guest.kernelPath}</kernel>
    <initrd>${guest.initrdPath}</initrd>
    <cmdline>${guest.cmdline}</cmdline>
  </os>
  <features><acpi/><apic/></features>
`;
}

/**
 * A guest that can grow without reboot: boot RAM plus a virtio-mem region (libvirt's rules:
 * <memory> is boot RAM plus the device, hot-plug needs <maxMemory> and a NUMA cell).
 */
function resizeXml(name: string, bootKiB: number, regionKiB: number, guest: DefaultGuest, type: 'kvm' | 'qemu'): string {
  return `<domain type='${type}'>
  <name>${name}</name>
  <uuid>${randomUUID()}</uuid>
  <maxMemory slots='1' unit='KiB'>${bootKiB + regionKiB}</maxMemory>
  <memory unit='KiB'>${bootKiB + regionKiB}</memory>
  <currentMemory unit='KiB'>${bootKiB}</currentMemory>
${bootXml(guest)}  <cpu><numa><cell id='0' cpus='0' memory='${bootKiB}' unit='KiB'/></numa></cpu>
  <devices>
    <serial type='pty'/>
    <console type='pty'/>
    <memballoon model='virtio'><stats period='5'/></memballoon>
    <memory model='virtio-mem'>
      <target>
        <size unit='KiB'>${regionKiB}</size>
        <node>0</node>
        <block unit='KiB'>2048</block>
        <requested unit='KiB'>0</requested>
      </target>
    </memory>
  </devices>
</domain>
`;
}

// ---------------------------------------------------------------- timing

/** Wall time of one command (ms); throws when it fails. Both systems pay the same spawn cost. */
function timeCommand(argv: string[], env?: NodeJS.ProcessEnv): number {
  const t0 = performance.now();
  const r = spawnSync(argv[0]!, argv.slice(1), { env: env ?? process.env, encoding: 'utf8', timeout: 60_000 });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}`);
  return ms;
}

/** Time commands interleaved (a, b, a, b, ...) so background load hits both alike. */
function interleaved(runs: number, warmup: number, cmds: Array<(i: number) => string[]>, env?: Array<NodeJS.ProcessEnv | undefined>): number[][] {
  const out = cmds.map(() => [] as number[]);
  for (let i = 0; i < warmup + runs; i++) {
    cmds.forEach((c, k) => {
      const ms = timeCommand(c(i), env?.[k]);
      if (i >= warmup) out[k]!.push(ms);
    });
  }
  return out;
}


function runWorker(job: Record<string, unknown>): Record<string, unknown> {
  const r = spawnSync(process.execPath, [WORKER, JSON.stringify(job)], { encoding: 'utf8', timeout: 30 * 60_000, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`virtmem worker failed (${r.status ?? r.signal}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

const one = (x: number): Summary => summarize([x]);

// ---------------------------------------------------------------- machine

function cmdOut(argv: string[]): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  return (r.stdout || r.stderr || '').trim();
}

async function machine(): Promise<Record<string, unknown>> {
  const qemu = cmdOut(['qemu-system-x86_64', '--version']).split('\n')[0];
  const kvm = (await new Driver().kvm().catch(() => null))?.usable ?? false;
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    os: (await readFile('/etc/os-release', 'utf8').catch(() => '')).match(/^PRETTY_NAME="?([^"\n]*)/m)?.[1] ?? 'unknown',
    node: process.version,
    qemu,
    accel: kvm ? 'kvm' : 'tcg',
    libvirt: cmdOut(['libvirtd', '--version']),
    virsh: cmdOut(['virsh', '--version']),
    virtmemCommit: cmdOut(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD']) + (cmdOut(['git', '-C', ROOT, 'status', '--porcelain']) ? ' (with local changes)' : ''),
    loadAverageAtStart: loadavg().map((x) => Number(x.toFixed(2))),
    otherQemuProcesses: Number(cmdOut(['sh', '-c', 'pgrep -c qemu-system || true'])),
  };
}

/** The warm CLI process of this build (its RSS is virtmem's resident control plane). */
async function warmProcessPid(): Promise<number | null> {
  const id = (await readFile(join(ROOT, 'dist', 'warm-id'), 'utf8').catch(() => '')).trim();
  if (!id) return null;
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes('warm-server.js') && cmd.includes(`cli-${id}-`)) return Number(p);
  }
  return null;
}

async function memAvailableMiB(): Promise<number> {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(await readFile('/proc/meminfo', 'utf8'));
  return Number(m?.[1] ?? 0) / 1024;
}

// ---------------------------------------------------------------- the run

class Bench {
  rows: Row[] = [];
  raw: Record<string, unknown> = {};
  readonly prefix = `vmb${process.pid}`;
  stateDir = '';
  driver!: Driver;
  xmlDir = '';
  session: VirshSession | null = null;
  lv: LibvirtHandle | null = null;
  accelType: 'kvm' | 'qemu' = 'qemu';

  constructor(readonly plan: Plan, readonly guest: DefaultGuest) {}

  async setup(): Promise<void> {
    this.lv = await ensureLibvirt(log);
    await this.removeStaleLibvirtGuests();
    this.stateDir = await mkdtemp(join(tmpdir(), 'vmb-'));
    this.xmlDir = join(this.stateDir, 'xml');
    await mkdir(this.xmlDir);
    this.driver = new Driver({ stateDir: this.stateDir });
    // Both systems get the accelerator a probe guest proved (a /dev/kvm that opens is no proof).
    this.accelType = (await this.driver.kvm()).usable ? 'kvm' : 'qemu';
  }

  /** Guests of an earlier run that died before cleaning up (its pid is in their names). */
  async removeStaleLibvirtGuests(): Promise<void> {
    for (const name of virsh('list', '--all', '--name').split('\n').map((s) => s.trim()).filter(Boolean)) {
      const m = /^vmb(\d+)-/.exec(name);
      if (!m || Number(m[1]) === process.pid) continue;
      if (spawnSync('kill', ['-0', m[1]!]).status === 0) continue; // that run is still going
      log(`removing leftover libvirt guest ${name}`);
      this.libvirtRemove(name);
    }
  }

  libvirtRemove(name: string): void {
    spawnSync('virsh', ['-c', URI, 'destroy', name], { stdio: 'ignore' });
    spawnSync('virsh', ['-c', URI, 'undefine', name], { stdio: 'ignore' });
  }

  async defineBoth(name: string, kib: number): Promise<string> {
    const file = join(this.xmlDir, `${name}.xml`);
    await writeFile(file, domainXml(name, kib, this.guest, this.accelType));
    await this.driver.defineXml(await readFile(file, 'utf8'));
    return file;
  }

  vm(...args: string[]): string[] { return [BIN, '--state-dir', this.stateDir, ...args]; }
  vs(...args: string[]): string[] { return ['virsh', '-c', URI, ...args]; }

  // ---------------------------------------------------------------- one guest

  async single(): Promise<void> {
    const p = this.plan;
    const name = `${this.prefix}-a`;
    log(`one running guest (${SINGLE_KIB / 1024} MiB) in each system`);
    const file = await this.defineBoth(name, SINGLE_KIB);
    virsh('define', file);
    await this.driver.start(name);
    virsh('start', name);
    const sizes = ['500M', '480M'];
    const sizesKiB: [number, number] = [500 * 1024, 480 * 1024];

    log(`CLI per invocation, ${p.cliRuns} runs each, interleaved`);
    const cli: Array<[string, (i: number) => string[], (i: number) => string[]]> = [
      ['dominfo', () => this.vm('dominfo', name), () => this.vs('dominfo', name)],
      ['setmem --live', (i) => this.vm('setmem', name, sizes[i % 2]!, '--live'), (i) => this.vs('setmem', name, sizes[i % 2]!, '--live')],
      ['list --all', () => this.vm('list', '--all'), () => this.vs('list', '--all')],
    ];
    const raw: Record<string, unknown> = {};
    for (const [what, a, b] of cli) {
      const [va, vb] = interleaved(p.cliRuns, 3, [a, b]);
      raw[what] = { virtmem: va, virsh: vb };
      this.rows.push({ section: 'CLI, per invocation', what: `\`${what}\``, unit: 'ms', virtmem: summarize(va!), libvirt: summarize(vb!), goal: 1.0 });
    }
    // For reference: the same commands on plain Node, without the warm process.
    const plainEnv = { ...process.env, VIRTMEM_WARM: '0' };
    for (const [what, a, b] of cli) {
      const [va, vb] = interleaved(p.plainRuns, 1, [a, b], [plainEnv, undefined]);
      raw[`${what} (plain node)`] = { virtmem: va, virsh: vb };
      this.rows.push({ section: 'CLI, per invocation', what: `\`${what}\`, virtmem on plain Node (VIRTMEM_WARM=0)`, unit: 'ms', virtmem: summarize(va!), libvirt: summarize(vb!) });
    }
    this.raw.cli = raw;

    log(`API per call in one long-lived process, ${p.apiCalls} calls each, in alternating blocks`);
    this.session = new VirshSession();
    const s = this.session;
    await s.run(`dominfo ${name}`);
    const vmSamples: Record<string, number[]> = { info: [], setmem: [], qmp: [] };
    const lvSamples: Record<string, number[]> = { info: [], setmem: [], qmp: [] };
    const blocks = 3;
    const per = Math.ceil(p.apiCalls / blocks);
    for (let b = 0; b < blocks; b++) {
      const w = runWorker({ mode: 'api', stateDir: this.stateDir, domain: name, calls: per, sizesKiB });
      for (const k of ['info', 'setmem', 'qmp']) vmSamples[k]!.push(...(w[k] as number[]));
      lvSamples.info!.push(...await timed(per, () => s.run(`dominfo ${name}`)));
      lvSamples.setmem!.push(...await timed(per, (i) => s.run(`setmem ${name} ${sizes[i % 2]} --live`)));
      lvSamples.qmp!.push(...await timed(per, () => s.run(`qemu-monitor-command ${name} '{"execute":"query-balloon"}'`)));
    }
    this.raw.api = { virtmem: vmSamples, libvirt: lvSamples };
    this.rows.push(
      { section: 'API, per call (one process)', what: 'domain info incl. live balloon: `Driver.info()` vs `dominfo` in one virsh', unit: 'ms', virtmem: summarize(vmSamples.info!), libvirt: summarize(lvSamples.info!), goal: 0.3 },
      { section: 'API, per call (one process)', what: 'balloon change: `Driver.setMemory(live)` vs `setmem --live` in one virsh', unit: 'ms', virtmem: summarize(vmSamples.setmem!), libvirt: summarize(lvSamples.setmem!), goal: 0.3 },
      { section: 'API, per call (one process)', what: 'raw QMP `query-balloon`: `QmpClient` on the monitor socket (the floor) vs `qemu-monitor-command` through libvirtd', unit: 'ms', virtmem: summarize(vmSamples.qmp!), libvirt: summarize(lvSamples.qmp!) },
    );

    log(`API through virtmemd (unix socket, one client process), ${p.apiCalls} calls each`);
    const daemon = await startBenchDaemon(this.stateDir);
    try {
      await waitWatching(daemon.target, 1);
      const d = await apiThroughDaemon(daemon.target, name, p.apiCalls, sizesKiB);
      this.raw.daemonApi = d;
      this.rows.push(
        { section: 'API through virtmemd, per call', what: 'domain info: `GET /api/v1/domains/NAME` (live model) vs `dominfo` in one virsh', unit: 'ms', virtmem: summarize(d.info), libvirt: summarize(lvSamples.info!), goal: 0.3 },
        { section: 'API through virtmemd, per call', what: 'live setmem: `PUT /api/v1/domains/NAME/memory` (held monitor) vs `setmem --live` in one virsh', unit: 'ms', virtmem: summarize(d.setmem), libvirt: summarize(lvSamples.setmem!), goal: 0.3 },
      );
    } finally {
      await daemon.stop();
    }

    await this.driver.destroy(name);
    await this.driver.undefine(name);
    this.libvirtRemove(name);
  }

  // ---------------------------------------------------------------- live resize

  /**
   * Rows of the live-resize issue: grow a running guest by 1 GiB and shrink it back, through
   * virtio-mem in both systems (no reboot, no pause: the guest keeps running throughout). Each
   * time runs until the guest really has (or has given back) the memory: virtmem's
   * `setMemory(..., { wait: true })` (what `setmem --wait` does) against libvirt's
   * `update-memory-device --requested-size`, followed by polling QEMU's `query-memory-devices`
   * through libvirt every 20 ms (libvirt itself has no wait; its own view follows QEMU's
   * MEMORY_DEVICE_SIZE_CHANGE event, which QEMU sends at most once a second).
   */
  async liveResize(): Promise<void> {
    const reps = this.plan.mode === 'quick' ? 2 : 4;
    const name = `${this.prefix}-r`;
    const bootKiB = SINGLE_KIB;
    const stepKiB = 1024 * 1024;
    log(`live resize: one guest with ${bootKiB / 1024} MiB boot RAM and a 2 GiB virtio-mem region in each system`);
    const file = join(this.xmlDir, `${name}.xml`);
    await writeFile(file, resizeXml(name, bootKiB, 2 * stepKiB, this.guest, this.accelType));
    await this.driver.defineXml(await readFile(file, 'utf8'));
    virsh('define', file);
    await this.driver.start(name);
    virsh('start', name);
    const s = this.session ?? (this.session = new VirshSession());
    await this.waitBooted(name);

    const pluggedKiB = async (): Promise<number> => {
      const out = await s.run(`qemu-monitor-command ${name} '{"execute":"query-memory-devices"}'`);
      // The output also echoes the command line (with its own JSON): take QEMU's reply.
      const reply = out.split('\n').find((l) => l.startsWith('{"return"'));
      if (!reply) throw new Error(`query-memory-devices through libvirt gave no reply: ${out}`);
      const json = JSON.parse(reply) as { return: Array<{ type: string; data: { size: number } }> };
      return json.return.filter((d) => d.type === 'virtio-mem').reduce((sum, d) => sum + d.data.size / 1024, 0);
    };
    const libvirtTo = async (requestedKiB: number): Promise<void> => {
      await s.run(`update-memory-device ${name} --live --requested-size ${requestedKiB}KiB`);
      const deadline = Date.now() + 120_000;
      while ((await pluggedKiB()) !== requestedKiB) {
        if (Date.now() > deadline) throw new Error(`libvirt guest did not reach ${requestedKiB} KiB of virtio-mem in 120 s`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const vmGrow: number[] = [];
    const vmShrink: number[] = [];
    const lvGrow: number[] = [];
    const lvShrink: number[] = [];
    for (let i = 0; i < reps; i++) {
      vmGrow.push(...await timed(1, () => this.driver.setMemory(name, bootKiB + stepKiB, { live: true, wait: true })));
      lvGrow.push(...await timed(1, () => libvirtTo(stepKiB)));
      vmShrink.push(...await timed(1, () => this.driver.setMemory(name, bootKiB, { live: true, wait: true })));
      lvShrink.push(...await timed(1, () => libvirtTo(0)));
    }
    this.raw.liveResize = { virtmem: { grow: vmGrow, shrink: vmShrink }, libvirt: { grow: lvGrow, shrink: lvShrink } };
    const sec = 'Live resize (virtio-mem, guest keeps running)';
    this.rows.push(
      { section: sec, what: 'grow a running guest by 1 GiB, until the guest has it: `setMemory(wait)` vs `update-memory-device` + polling', unit: 'ms', virtmem: summarize(vmGrow), libvirt: summarize(lvGrow) },
      { section: sec, what: 'shrink it by 1 GiB, until the guest gave it back', unit: 'ms', virtmem: summarize(vmShrink), libvirt: summarize(lvShrink) },
    );
    await this.driver.destroy(name);
    await this.driver.undefine(name);
    this.libvirtRemove(name);
  }

  /** Wait (bounded) until both guests run their balloon driver: the built-in guest loads virtio_mem right after it. */
  async waitBooted(name: string): Promise<void> {
    const deadline = Date.now() + 240_000;
    const booted = (argv: string[]): boolean => /^available /m.test(spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' }).stdout ?? '');
    while (!booted(this.vm('dommemstat', name)) || !booted(this.vs('dommemstat', name))) {
      if (Date.now() > deadline) throw new Error(`guest ${name} did not boot (no balloon statistics) within 240 s`);
      await new Promise((r) => setTimeout(r, 1000));
    }
    await new Promise((r) => setTimeout(r, 2000)); // the modules after virtio_balloon
  }

  // ---------------------------------------------------------------- scale

  async scale(n: number): Promise<void> {
    const p = this.plan;
    const needMiB = n * 80 + 2048;
    const avail = await memAvailableMiB();
    if (avail < needMiB) {
      log(`skipping ${n} guests: ${Math.round(avail)} MiB available, want ${needMiB}`);
      this.rows.push({ section: `Scale: ${n} guests`, what: 'all rows', unit: 'ms', virtmem: null, libvirt: null, pending: `skipped, ${Math.round(avail)} MiB of memory available on this run` });
      return;
    }
    const names = Array.from({ length: n }, (_, i) => `${this.prefix}-${i}`);
    const files: string[] = [];
    for (const name of names) files.push(await this.defineBoth(name, SCALE_KIB));
    const raw: Record<string, unknown> = {};
    const sec = `Scale: ${n} guests (paused)`;

    // virtmem
    log(`${n} guests in virtmem: start --paused`);
    let t0 = performance.now();
    for (const name of names) await this.driver.start(name, { paused: true });
    const vmStartMs = performance.now() - t0;
    const vmList = interleaved(p.scaleCliRuns, 2, [() => this.vm('list', '--all')])[0]!;
    const w = runWorker({ mode: 'scale', stateDir: this.stateDir, reps: p.scaleReps });
    if (w.domains !== n) throw new Error(`virtmem sweep saw ${String(w.domains)} running domains, expected ${n}`);
    const warmPid = await warmProcessPid();
    const warmMem = warmPid === null ? null : await processMemory(warmPid);
    log(`${n} guests in virtmem: virtmemd sweep and /metrics`);
    const daemon = await startBenchDaemon(this.stateDir);
    let dSweep: { sweep: number[]; metrics: number[] };
    let daemonMem: Awaited<ReturnType<typeof processMemory>>;
    let vmListDaemon: number[];
    try {
      await waitWatching(daemon.target, n);
      // The CLI as users run it while virtmemd runs: it goes through the daemon.
      vmListDaemon = interleaved(p.scaleCliRuns, 2, [() => this.vm('list', '--all')])[0]!;
      dSweep = await sweepThroughDaemon(daemon.target, Math.max(p.scaleReps, 10));
      daemonMem = await processMemory(daemon.pid);
    } finally {
      await daemon.stop();
    }
    log(`${n} guests in virtmem: destroy`);
    for (const name of names) await this.driver.destroy(name);

    // libvirt
    log(`${n} guests in libvirt: define, start --paused`);
    const s = this.session ?? (this.session = new VirshSession());
    for (const f of files) await s.run(`define ${f}`);
    t0 = performance.now();
    for (const name of names) await s.run(`start --paused ${name}`);
    const lvStartMs = performance.now() - t0;
    const lvList = interleaved(p.scaleCliRuns, 2, [() => this.vs('list', '--all')])[0]!;
    const lvMemlist = await timed(p.scaleReps, async () => {
      await s.run('list --all');
      for (const name of names) await s.run(`dominfo ${name}`);
    });
    const lvSweepBulk = await timed(p.scaleReps, () => s.run('domstats --balloon --list-active'));
    const lvSweepEach = await timed(Math.min(p.scaleReps, 3), async () => {
      for (const name of names) await s.run(`dommemstat ${name}`);
    });
    const libvirtdMem = await processMemory(this.lv!.libvirtdPid);
    const virtlogdMem = this.lv!.virtlogdPid === null ? null : await processMemory(this.lv!.virtlogdPid);
    log(`${n} guests in libvirt: destroy, undefine`);
    for (const name of names) {
      await s.run(`destroy ${name}`);
      await s.run(`undefine ${name}`);
    }
    for (const name of names) await this.driver.undefine(name);

    raw.virtmem = { startAllMs: vmStartMs, list: vmList, listWithDaemon: vmListDaemon, memlist: w.memlist, sweep: w.sweep, workerHwmMiB: w.hwmMiB, warmProcess: warmMem, daemonSweep: dSweep.sweep, daemonMetrics: dSweep.metrics, daemon: daemonMem };
    raw.libvirt = { startAllMs: lvStartMs, list: lvList, memlist: lvMemlist, sweepBulk: lvSweepBulk, sweepEach: lvSweepEach, libvirtd: libvirtdMem, virtlogd: virtlogdMem };
    (this.raw.scale ??= {} as Record<string, unknown>);
    (this.raw.scale as Record<string, unknown>)[n] = raw;

    const lvdRss = libvirtdMem ? one(libvirtdMem.rssMiB) : null;
    this.rows.push(
      { section: sec, what: '`list --all`, CLI', unit: 'ms', virtmem: summarize(vmList), libvirt: summarize(lvList), goal: 1.0 },
      { section: sec, what: '`list --all`, CLI, virtmemd running (the CLI asks it)', unit: 'ms', virtmem: summarize(vmListDaemon), libvirt: summarize(lvList), goal: 0.5 },
      { section: sec, what: 'name + max/used memory of every guest, one process: `list()` + `info()` each (concurrent) vs virsh `list --all` + `dominfo` each', unit: 'ms', virtmem: summarize(w.memlist as number[]), libvirt: summarize(lvMemlist) },
      { section: sec, what: 'memory-stats sweep, one process: `memoryStats()` each (concurrent) vs libvirt\'s bulk `domstats --balloon`', unit: 'ms', virtmem: summarize(w.sweep as number[]), libvirt: summarize(lvSweepBulk), goal: 0.5 },
      { section: sec, what: 'memory-stats sweep vs virsh `dommemstat` each, one virsh process', unit: 'ms', virtmem: summarize(w.sweep as number[]), libvirt: summarize(lvSweepEach) },
      { section: sec, what: 'control-plane resident memory: warm CLI process vs `libvirtd`', unit: 'MiB', virtmem: warmMem ? one(warmMem.rssMiB) : null, libvirt: lvdRss, goal: 1.0 },
      { section: sec, what: 'peak resident memory of the virtmem API process doing the sweeps vs `libvirtd`', unit: 'MiB', virtmem: one(w.hwmMiB as number), libvirt: lvdRss, goal: 1.0 },
      { section: sec, what: 'stats sweep through virtmemd: `GET /api/v1/stats` (live model) vs libvirt\'s bulk `domstats --balloon`', unit: 'ms', virtmem: summarize(dSweep.sweep), libvirt: summarize(lvSweepBulk), goal: 0.5 },
      { section: sec, what: '`GET /metrics` through virtmemd (goal < 50 ms at 200 guests)', unit: 'ms', virtmem: summarize(dSweep.metrics), libvirt: null },
      { section: sec, what: 'resident memory: virtmemd watching every guest vs `libvirtd`', unit: 'MiB', virtmem: daemonMem ? one(daemonMem.rssMiB) : null, libvirt: lvdRss, goal: 1.0 },
      { section: sec, what: `define + start --paused all ${n}, one after another (once)`, unit: 'ms', virtmem: one(vmStartMs), libvirt: one(lvStartMs) },
    );
  }

  // ---------------------------------------------------------------- cleanup

  #cleaned = false;

  /** Destroy and remove every guest this run created, in both systems. Idempotent. */
  async cleanup(): Promise<void> {
    if (this.#cleaned) return;
    this.#cleaned = true;
    await this.session?.close().catch(() => {});
    const names = spawnSync('virsh', ['-c', URI, 'list', '--all', '--name'], { encoding: 'utf8' }).stdout ?? '';
    for (const name of names.split('\n').map((x) => x.trim()).filter((x) => x.startsWith(`${this.prefix}-`))) this.libvirtRemove(name);
    if (this.stateDir) {
      for (const d of await this.driver.list().catch(() => [])) {
        if (d.state !== 'shutoff') await this.driver.destroy(d.name).catch(() => {});
      }
      // Anything still holding the state directory (a QEMU whose start was interrupted).
      for (const p of await readdir('/proc').catch(() => [] as string[])) {
        if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
        const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
        if (cmd.includes(this.stateDir)) { try { process.kill(Number(p), 'SIGKILL'); } catch { /* gone */ } }
      }
      await rm(this.stateDir, { recursive: true, force: true });
    }
    for (const pid of this.lv?.started ?? []) { try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ } }
  }
}

// ---------------------------------------------------------------- output

function notes(): string[] {
  return [
    'Times are wall-clock medians with the interquartile range (p25–p75) in brackets; the ratio is virtmem/libvirt of the medians, from this one run.',
    'CLI rows run `bin/virtmem` exactly as users do (short commands answered by the warm CLI process) against `virsh -c qemu:///system`, interleaved; each sample includes spawning the process from the benchmark (same for both).',
    'libvirt\'s `dominfo` answers from libvirt\'s cached balloon size (kept current by QEMU\'s BALLOON_CHANGE events); virtmem\'s `info()` asks QEMU each time.',
    'API rows: virtmem\'s TypeScript API in one Node process (bench/virtmem-worker.ts) vs one `virsh` process running the commands from a pipe (libvirt\'s C API through libvirtd), each call timed on its own.',
    'Live resize rows: one guest per system with 512 MiB boot RAM and a 2 GiB virtio-mem region (block 2 MiB), booted; grow to 1.5 GiB and back, each step timed until QEMU reports the new plugged size.',
    'Scale rows: guests started paused (no guest CPU), 128 MiB each; virtmem\'s guests are destroyed before libvirt\'s are started, so both run with the same number of QEMU processes.',
    'Resident memory: virtmem has no daemon; its resident control plane is the warm CLI process (exits after 60 s idle) and whatever program uses the API. libvirtd is compared as a single process (virtlogd, which libvirt also needs, is in the JSON).',
  ];
}

function machineText(m: Record<string, unknown>): string {
  return [
    `- ${String(m.os)}, kernel ${String(m.kernel)}; ${String(m.cores)} cores (${String(m.cpu)}), ${String(m.memoryGiB)} GiB; QEMU accel: ${String(m.accel)}`,
    `- ${String(m.qemu)}; ${String(m.libvirt)}; virsh ${String(m.virsh)}; Node ${String(m.node)}`,
    `- libvirtd at start: ${JSON.stringify(m.libvirtdAtStart)} (a long-running libvirtd keeps the memory of earlier guests)`,
    `- virtmem ${String(m.virtmemCommit)}; load average at start ${JSON.stringify(m.loadAverageAtStart)}, at end ${JSON.stringify(m.loadAverageAtEnd)}; other QEMU processes on the machine at start: ${String(m.otherQemuProcesses)}`,
  ].join('\n');
}

async function writeDocs(block: string): Promise<void> {
  const begin = '<!-- bench:begin (written by `npm run bench -- --docs`) -->';
  const end = '<!-- bench:end -->';
  const text = await readFile(DOCS, 'utf8');
  const a = text.indexOf(begin);
  const b = text.indexOf(end);
  if (a < 0 || b < a) throw new Error(`${DOCS} has no ${begin} ... ${end} markers`);
  await writeFile(DOCS, text.slice(0, a + begin.length) + '\n' + block + text.slice(b));
}

async function main(): Promise<void> {
  if (process.argv[2] === 'policy' && process.argv.includes('--sim')) {
    // The same scenario in a deterministic model of guests (bench/policy-sim.ts): seconds, no QEMU.
    const { runPolicySim, formatPolicyTable } = await import('./policy-sim.js');
    process.stdout.write(formatPolicyTable(runPolicySim()));
    return;
  }
  // The policy comparison on real guests, each row through virtmem's daemon (bench/policy-real.ts).
  if (process.argv[2] === 'policy') return (await import('./policy-real.js')).runPolicyReal(process.argv.slice(3).filter((a) => a !== '--real'));
  // Per-call speed through virtmemd vs libvirt's C client, and setmem --wait vs libvirt's API path (bench/api-calls.ts).
  if (process.argv[2] === 'api') return (await import('./api-calls.js')).runApiBench(process.argv.slice(3));
  const { plan: p, docs } = plan(process.argv.slice(2));
  if (process.getuid?.() !== 0) log('not root: libvirt qemu:///system and its install need root; this will likely fail');
  log(`mode ${p.mode}: scales ${p.scales.join(', ')}`);
  let guest = await findDefaultGuest();
  if (!guest) {
    log('building the built-in guest (Debian cloud kernel + busybox initramfs)');
    guest = await buildDefaultGuest();
  }
  const bench = new Bench(p, guest);
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: cleaning up`);
    void bench.cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const started = new Date();
  let m: Record<string, unknown> = {};
  try {
    await bench.setup();
    m = await machine();
    const lvd = await processMemory(bench.lv!.libvirtdPid);
    m.libvirtdAtStart = {
      rssMiB: lvd ? Number(lvd.rssMiB.toFixed(1)) : null,
      runningForS: Number(cmdOut(['ps', '-o', 'etimes=', '-p', String(bench.lv!.libvirtdPid)])) || null,
      startedByThisRun: bench.lv!.started.includes(bench.lv!.libvirtdPid),
    };
    await bench.single();
    await bench.liveResize();
    for (const n of p.scales) await bench.scale(n);
  } finally {
    await bench.cleanup();
  }
  m.loadAverageAtEnd = loadavg().map((x) => Number(x.toFixed(2)));
  const minutes = ((Date.now() - started.getTime()) / 60_000).toFixed(1);
  const table = formatTable(bench.rows);
  const header = `Run ${started.toISOString()} (${p.mode} mode, ${minutes} min)`;
  const text = `${header}\n\n${machineText(m)}\n\n${table}\n${notes().map((n) => `- ${n}`).join('\n')}\n`;
  process.stdout.write(`\n${text}`);

  await mkdir(RESULTS, { recursive: true });
  const json = {
    startedAt: started.toISOString(), mode: p.mode, plan: p, machine: m,
    rows: bench.rows.map((r) => ({ ...r, ratio: ratio(r) })), samples: bench.raw,
  };
  const stamp = started.toISOString().replace(/[:.]/g, '-');
  await writeFile(join(RESULTS, `${stamp}-${p.mode}.json`), JSON.stringify(json, null, 1) + '\n');
  await writeFile(join(RESULTS, `latest-${p.mode}.json`), JSON.stringify(json, null, 1) + '\n');
  await writeFile(join(RESULTS, `latest-${p.mode}.md`), text);
  log(`results: bench/results/${stamp}-${p.mode}.json`);
  if (docs) {
    await writeDocs(`\n${text}\n`);
    log('table written into docs/benchmarks.md');
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`[bench] failed: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exitCode = 1;
});
