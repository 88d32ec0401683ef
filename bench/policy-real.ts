/**
 * The policy benchmark on REAL guests: three TCG guests of the built-in guest (boot RAM 512 MiB
 * + a virtio-mem region up to 2 GiB, floor 384 MiB), the same scripted demand (driven from the
 * host through the guest agent with /bin/vmhelper, and a read of the cache guest's disk) and the
 * same host budget for every row. Each row runs `virtmem daemon` as a user would:
 * `--policy off` (none) or `--policy all --policy-engine virtmem|proxmox|mom`, with
 * `--policy-budget`; the policy loop, its snapshots and its resizes are the daemon's.
 *
 *   npm run bench -- policy [--seconds N] [--rows none,proxmox,mom,virtmem] [--no-cache]
 *
 * Sampled every second per guest from the daemon's live model (GET /api/v1/stats: current
 * memory, QEMU RSS, guest statistics; no monitor connection of the bench's own), plus from each
 * guest through its agent: OOM kills (`dmesg | grep -c 'Out of memory'`) and how many vmhelper
 * processes are alive against how many the scenario started. Resize commands are counted from
 * the daemon's event stream (policy decisions). Guests are fresh for each row (destroyed and
 * started again), all in a temporary --state-dir that is removed at the end.
 * VIRTMEM_BENCH_TRACE=1 prints every decision and every sample.
 */
import { spawnSync } from 'node:child_process';
import { startBenchDaemon, type BenchDaemon } from './daemon.js';
import { request } from 'node:http';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeDriver as Driver } from '../src/index.js';
import { GuestAgent } from '../src/guest/agent.js';
import { StatePaths } from '../src/driver/native/paths.js';
import { GiB, MiB, POLICY_ENGINES, type PolicyEngine } from '../src/policy/types.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(ROOT, 'bin', 'virtmem');

/** The simulator's timeline is 300 s; this one is scaled by SCALE (default 1/3: 100 s). */
const SIM_END_S = 300;
const MAX_KIB = 2 * GiB;
const FLOOR_KIB = 384 * MiB;
const BUDGET_KIB = 3.75 * GiB;
const START_KIB = Math.floor(BUDGET_KIB / 3 / 1024) * 1024; // 1.25 GiB each, as in the simulator
const HELPER_MIB = 100;
/** The spike: 9 helpers of 100 MiB at once in the alloc guest. */
const SPIKE_MIB = 900;
/** What the cache guest reads from its disk into page cache. */
const CACHE_MIB = 1200;
const NAMES = ['alloc', 'cache', 'ramp'] as const;
type GName = (typeof NAMES)[number];

const log = (s: string): void => { process.stderr.write(`[policy-real] ${s}\n`); };
/** VIRTMEM_BENCH_TRACE=1: every decision and every second's numbers on stderr. */
const TRACE = process.env.VIRTMEM_BENCH_TRACE === '1';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One scripted step: at time atS (scaled), start `start` helpers of 100 MiB in guest g, or kill all of g's phase helpers. */
interface Step { atS: number; g: GName; start?: number; killPhase?: boolean; readCacheMiB?: number }

/**
 * The scenario, from the simulator's (times scaled by k): base loads held the whole run (alloc
 * 100 MiB, cache 100 MiB, ramp 200 MiB); alloc ramps +1.2 GiB from 20 s at ~100 MiB/s-equivalent,
 * frees at 60 s; ramp grows +1.4 GiB between 60 s and 150 s; alloc spikes +900 MiB at 170 s; all
 * phase memory freed at 200 s (quiet).
 */
function scenario(k: number, withCache: boolean): { steps: Step[]; endS: number; quietS: number; spikeS: number } {
  const steps: Step[] = [
    { atS: 0, g: 'alloc', start: 1 }, { atS: 0, g: 'cache', start: 1 }, { atS: 0, g: 'ramp', start: 2 },
  ];
  // cache: reads 1.2 GiB of its disk from 5 s (page cache it never touches again), then idles.
  if (withCache) steps.push({ atS: 5 * k, g: 'cache', readCacheMiB: CACHE_MIB });
  // alloc: 12 x 100 MiB over 10 simulated seconds from 20 s
  for (let i = 0; i < 12; i++) steps.push({ atS: (20 + (i * 10) / 12) * k, g: 'alloc', start: 1 });
  steps.push({ atS: 60 * k, g: 'alloc', killPhase: true });
  // ramp: 14 x 100 MiB evenly from 60 s to 150 s
  for (let i = 0; i < 14; i++) steps.push({ atS: (60 + (i * 90) / 13) * k, g: 'ramp', start: 1 });
  // spike: 9 x 100 MiB within 2 simulated seconds (as fast as the agent starts them)
  steps.push({ atS: 170 * k, g: 'alloc', start: SPIKE_MIB / HELPER_MIB });
  steps.push({ atS: 200 * k, g: 'alloc', killPhase: true }, { atS: 200 * k, g: 'ramp', killPhase: true });
  steps.sort((a, b) => a.atS - b.atS);
  return { steps, endS: SIM_END_S * k, quietS: 200 * k, spikeS: 170 * k };
}

interface Latest { currentKiB: number; rssKiB: number; usableKiB?: number; unusedKiB?: number; cachesKiB?: number; majorFaults?: number; atS: number }

export interface RealRow {
  policy: string;
  givenBackGiBs: number;
  meanCurrentGiB: number;
  meanRssGiB: number;
  peakRssGiB: number;
  overBudgetS: number;
  rssOverBudgetS: number;
  oomKills: number;
  helperSLost: number;
  helperSDemanded: number;
  spikeServedS: number | null;
  settledAfterQuietS: number | null;
  resizeCommands: number;
  resizeFailures: number;
  samples: number;
  skippedSamples: number;
  cacheKiBMax: number;
  /** Major page faults in all guests over the row (refaults of dropped cache, the guests have no swap). */
  majorFaults: number;
}

function vm(stateDir: string, ...args: string[]): string {
  const r = spawnSync(BIN, ['--state-dir', stateDir, ...args], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`virtmem ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}`);
  return r.stdout;
}


type Engine = 'none' | PolicyEngine;

/** GET a daemon API path over its unix socket (bounded). */
function apiGet(socketPath: string, path: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, headers: { host: 'localhost' } }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => {
        if (res.statusCode !== 200) { reject(new Error(`GET ${path}: ${res.statusCode} ${body}`)); return; }
        try { resolve(JSON.parse(body)); } catch (err) { reject(err as Error); }
      });
    });
    req.setTimeout(5_000, () => req.destroy(new Error(`GET ${path} timed out`)));
    req.once('error', reject);
    req.end();
  });
}

/** `virtmem daemon` for one row, as a user runs it; resolves once it watches the guests. */
function startDaemon(stateDir: string, engine: Engine): Promise<BenchDaemon> {
  const args = ['--policy', engine === 'none' ? 'off' : 'all', '--policy-budget', `${BUDGET_KIB / MiB}M`];
  if (engine !== 'none') args.push('--policy-engine', engine);
  return startBenchDaemon(stateDir, args);
}

/** The daemon's event stream: every policy decision it publishes (resize, failed, hold). */
function followPolicyEvents(socketPath: string, onDecision: (d: { name: string; action: string; at: string; reason: string }) => void): () => void {
  const req = request({ socketPath, path: '/api/v1/events', headers: { host: 'localhost', accept: 'text/event-stream' } }, (res) => {
    let buf = '';
    res.setEncoding('utf8').on('data', (c: string) => {
      buf += c;
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const frame = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const ev = /^event: (.*)$/m.exec(frame)?.[1];
        const data = /^data: (.*)$/m.exec(frame)?.[1];
        if (ev === 'policy' && data) onDecision(JSON.parse(data) as { name: string; action: string; at: string; reason: string });
      }
    });
  });
  req.once('error', () => {});
  req.end();
  return () => req.destroy();
}

interface GuestDoc {
  name: string;
  memory: { totalBytes: number };
  stats: { usableBytes?: number; unusedBytes?: number; diskCachesBytes?: number; majorFaults?: number; rssBytes?: number };
}

async function runRow(stateDir: string, driver: Driver, engine: Engine, k: number, cacheDisk: string | null): Promise<RealRow> {
  const name = (g: GName): string => `pr-${g}`;
  const paths = new StatePaths(stateDir);
  const agents = new Map<GName, GuestAgent>();
  const pname = engine;
  let daemon: { stop(): Promise<void> } | null = null;
  let unfollow = (): void => {};
  try {
    for (const g of NAMES) {
      vm(stateDir, 'start', name(g));
      agents.set(g, await GuestAgent.connect(paths.run(name(g)).agent, { timeoutMs: 180_000 }));
    }
    if (cacheDisk) {
      const m = await agents.get('cache')!.run('mkdir -p /mnt && mount -o ro /dev/vda /mnt', { timeoutMs: 30_000 });
      if (m.exitCode !== 0) throw new Error(`cache guest: mounting its disk failed: ${m.output}`);
    }
    for (const g of NAMES) {
      await driver.setStatsPeriod(name(g), 1, { live: true });
      await driver.setMemory(name(g), START_KIB, { force: true, wait: true, timeoutMs: 120_000 });
    }
    daemon = await startDaemon(stateDir, engine);
    const socketPath = join(stateDir, 'virtmemd.sock');
    log(`${pname}: 3 guests up at ${START_KIB / MiB} MiB each, daemon running`);
    const sc = scenario(k, cacheDisk !== null);
    const expected = new Map<GName, number>(NAMES.map((g) => [g, 0]));
    const base: Record<GName, number> = { alloc: 1, cache: 1, ramp: 2 };
    const latest = new Map<GName, Latest>();
    const alive = new Map<GName, number>();
    const ooms = new Map<GName, number>();
    let resizeCommands = 0;
    let resizeFailures = 0;
    let lastCommandAfterQuiet: number | null = null;
    let spikeServed: number | null = null;
    let useBeforeSpike: number | null = null;
    const t0 = Date.now();
    const now = (): number => (Date.now() - t0) / 1000;
    const acc = { givenBack: 0, current: 0, rss: 0, peakRss: 0, over: 0, rssOver: 0, lost: 0, demanded: 0, samples: 0, skipped: 0, cacheMax: 0, majorFaults: 0 };
    const firstMajor = new Map<GName, number>();
    let done = false;
    unfollow = followPolicyEvents(socketPath, (d) => {
      if (TRACE) log(`${now().toFixed(1)} ${d.name} ${d.action}: ${d.reason}`);
      if (d.action !== 'resize' && d.action !== 'failed') return;
      resizeCommands++;
      if (d.action === 'failed') { resizeFailures++; log(`${pname}: ${d.name}: ${d.reason}`); }
      const t = now();
      if (t >= sc.quietS) lastCommandAfterQuiet = t;
    });

    // The scenario driver: starts/kills helpers through the agent at the scripted times.
    const script = (async () => {
      for (const s of sc.steps) {
        const wait = s.atS * 1000 - (Date.now() - t0);
        if (wait > 0) await sleep(wait);
        const a = agents.get(s.g)!;
        if (s.readCacheMiB) {
          // Fill the page cache: read the file once (clean cache the guest can drop at any time).
          // In the background: the agent runs one command at a time, and the sampler's must not wait.
          await a.run(`(dd if=/mnt/data of=/dev/null bs=1M count=${s.readCacheMiB} 2>/dev/null &)`, { timeoutMs: 30_000 }).catch((e: Error) => log(`${s.g}: read failed: ${e.message}`));
        } else if (s.killPhase) {
          // Kill the newest helpers down to the base load (pids ascend; keep the oldest).
          const keep = base[s.g];
          await a.run(`for p in $(pidof vmhelper | tr ' ' '\\n' | sort -n | tail -n +${keep + 1}); do kill $p; done`, { timeoutMs: 30_000 }).catch((e: Error) => log(`${s.g}: kill failed: ${e.message}`));
          expected.set(s.g, keep);
        } else {
          const n = s.start!;
          expected.set(s.g, expected.get(s.g)! + n);
          const cmd = Array.from({ length: n }, () => `vmhelper alloc ${HELPER_MIB} >/dev/null 2>&1 &`).join(' ');
          await a.run(cmd, { timeoutMs: 30_000 }).catch((e: Error) => log(`${s.g}: start failed: ${e.message}`));
        }
      }
    })();

    // The sampler: every second, the daemon's live model of every guest (one request, no monitor
    // of its own), and helpers alive and OOM kills from each guest.
    let sampling = false;
    const sampleOnce = async (): Promise<void> => {
      const t = now();
      const [doc, replies] = await Promise.all([
        apiGet(socketPath, '/api/v1/stats') as Promise<{ guests: GuestDoc[] }>,
        Promise.all(NAMES.map((g) => agents.get(g)!.run("pidof vmhelper | wc -w; dmesg | grep -c 'Out of memory'", { timeoutMs: 10_000 }).catch(() => null))),
      ]);
      NAMES.forEach((g, i) => {
        const d = doc.guests.find((x) => x.name === name(g));
        if (d) {
          const l: Latest = { currentKiB: d.memory.totalBytes / 1024, rssKiB: (d.stats.rssBytes ?? 0) / 1024, atS: t };
          if (d.stats.usableBytes !== undefined) l.usableKiB = d.stats.usableBytes / 1024;
          if (d.stats.unusedBytes !== undefined) l.unusedKiB = d.stats.unusedBytes / 1024;
          if (d.stats.diskCachesBytes !== undefined) { l.cachesKiB = d.stats.diskCachesBytes / 1024; acc.cacheMax = Math.max(acc.cacheMax, l.cachesKiB); }
          if (d.stats.majorFaults !== undefined) {
            l.majorFaults = d.stats.majorFaults;
            if (!firstMajor.has(g)) firstMajor.set(g, d.stats.majorFaults);
          }
          latest.set(g, l);
        }
        const reply = replies[i];
        if (reply) {
          const [a, o] = reply.output.trim().split(/\s+/).map(Number);
          if (Number.isFinite(a)) alive.set(g, a!);
          if (Number.isFinite(o)) {
            if (o! > (ooms.get(g) ?? 0)) log(`${t.toFixed(1)} ${g}: OOM kill (${o} so far)`);
            ooms.set(g, o!);
          }
        }
        if (TRACE && d) log(`${t.toFixed(1)} ${g}: current ${(d.memory.totalBytes / 2 ** 20).toFixed(0)} MiB, available ${((d.stats.usableBytes ?? 0) / 2 ** 20).toFixed(0)}, rss ${((d.stats.rssBytes ?? 0) / 2 ** 20).toFixed(0)}, helpers ${alive.get(g)}/${expected.get(g)}`);
      });
      if (latest.size < NAMES.length) return;
      acc.samples++;
      let cur = 0;
      let rss = 0;
      for (const g of NAMES) {
        const l = latest.get(g)!;
        cur += l.currentKiB;
        rss += l.rssKiB;
        acc.givenBack += (MAX_KIB - l.currentKiB);
        const exp = expected.get(g)!;
        acc.demanded += exp;
        acc.lost += Math.max(0, exp - (alive.get(g) ?? 0));
      }
      acc.current += cur;
      acc.rss += rss;
      acc.peakRss = Math.max(acc.peakRss, rss);
      if (cur > BUDGET_KIB + MiB) acc.over++;
      if (rss > BUDGET_KIB + MiB) acc.rssOver++;
      // The spike is served when the alloc guest holds its use from before the spike plus the
      // spike's 900 MiB: the memory is there (touching it is the guest's own pace under TCG).
      const al = latest.get('alloc')!;
      if (t < sc.spikeS && al.usableKiB !== undefined) useBeforeSpike = Math.max(0, al.currentKiB - al.usableKiB);
      if (spikeServed === null && t >= sc.spikeS && useBeforeSpike !== null && al.currentKiB >= useBeforeSpike + SPIKE_MIB * MiB) spikeServed = t - sc.spikeS;
    };
    const sampler = (async () => {
      while (!done) {
        const tick = Date.now();
        if (!sampling) {
          sampling = true;
          await sampleOnce().catch((e: Error) => log(`sample failed: ${e.message}`)).finally(() => { sampling = false; });
        } else acc.skipped++;
        const wait = 1000 - (Date.now() - tick);
        if (wait > 0) await sleep(wait); else acc.skipped += Math.floor(-wait / 1000);
      }
    })();

    await script;
    const rest = sc.endS * 1000 - (Date.now() - t0);
    if (rest > 0) await sleep(rest);
    done = true;
    await sampler;
    const n = Math.max(1, acc.samples);
    const majorFaults = NAMES.reduce((s, g) => s + Math.max(0, (latest.get(g)?.majorFaults ?? 0) - (firstMajor.get(g) ?? 0)), 0);
    const row: RealRow = {
      policy: pname,
      givenBackGiBs: acc.givenBack / GiB, // one sample per second: KiB·s
      meanCurrentGiB: acc.current / n / GiB,
      meanRssGiB: acc.rss / n / GiB,
      peakRssGiB: acc.peakRss / GiB,
      overBudgetS: acc.over,
      rssOverBudgetS: acc.rssOver,
      oomKills: NAMES.reduce((s, g) => s + (ooms.get(g) ?? 0), 0),
      helperSLost: acc.lost,
      helperSDemanded: acc.demanded,
      spikeServedS: spikeServed,
      settledAfterQuietS: engine !== 'none' ? (lastCommandAfterQuiet === null ? 0 : lastCommandAfterQuiet - sc.quietS) : null,
      resizeCommands,
      resizeFailures,
      samples: acc.samples,
      skippedSamples: acc.skipped,
      cacheKiBMax: acc.cacheMax,
      majorFaults,
    };
    log(`${pname}: ${JSON.stringify(row)}`);
    return row;
  } finally {
    unfollow();
    await daemon?.stop();
    for (const a of agents.values()) a.close();
    for (const g of NAMES) spawnSync(BIN, ['--state-dir', stateDir, 'destroy', name(g)], { stdio: 'ignore', timeout: 60_000 });
  }
}

export function formatRealTable(rows: RealRow[], k: number, minutes: number): string {
  const f = (x: number | null, d = 1): string => (x === null ? '—' : x.toFixed(d));
  const best = Math.max(...rows.filter((r) => r.policy === 'proxmox' || r.policy === 'mom').map((r) => r.givenBackGiBs));
  const end = SIM_END_S * k;
  return [
    `REAL GUESTS (TCG): 3 guests of the built-in guest, boot RAM 512 MiB + virtio-mem to 2 GiB, floor 384 MiB, each starting at ${START_KIB / MiB} MiB (a third of the budget of ${BUDGET_KIB / GiB} GiB); `
      + `timeline shortened to ${f(k, 3)}x the simulator's (${end.toFixed(0)} s instead of ${SIM_END_S} s): quiet from ${(200 * k).toFixed(0)} s, spike +900 MiB at ${(170 * k).toFixed(0)} s; total run ${minutes.toFixed(1)} min`,
    '',
    '| policy | given back (GiB·s, max − current) | vs best of Proxmox/MoM | mean current (GiB, 3 guests) | mean / peak QEMU RSS (GiB) | over budget (s, current / RSS) | OOM kills | helper·s lost (of demanded) | major faults | spike served (s) | settled after quiet (s) | resize commands (failed) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map((r) => `| ${r.policy} | ${f(r.givenBackGiBs)} | ${best > 0 ? `${(r.givenBackGiBs / best).toFixed(2)}x` : '—'} | ${f(r.meanCurrentGiB, 2)} | ${f(r.meanRssGiB, 2)} / ${f(r.peakRssGiB, 2)} | ${r.overBudgetS} / ${r.rssOverBudgetS} | ${r.oomKills} | ${r.helperSLost} (of ${r.helperSDemanded}, ${(100 * r.helperSLost / Math.max(1, r.helperSDemanded)).toFixed(1)} %) | ${r.majorFaults} | ${f(r.spikeServedS)} | ${f(r.settledAfterQuietS)} | ${r.resizeCommands} (${r.resizeFailures}) |`),
    '',
    `Samples per row: ${rows.map((r) => `${r.policy} ${r.samples} (${r.skippedSamples} skipped: previous sample still running)`).join(', ')}. `
      + `Largest disk_caches seen in any guest: ${Math.max(...rows.map((r) => r.cacheKiBMax / MiB)).toFixed(0)} MiB.`,
  ].join('\n') + '\n';
}

/**
 * An ext2 image holding one file of `mib` MiB of incompressible data. The guest reads the file
 * from the mounted file system: file page cache is movable (it can live in hot-plugged memory)
 * and stays after the read, unlike a block device's own cache, which is dropped at last close.
 */
async function writeCacheDisk(image: string, mib: number): Promise<void> {
  const src = await mkdtemp(join(tmpdir(), 'vmpr-fs-'));
  try {
    const chunk = randomBytes(MiB * 1024); // 1 MiB, written again and again
    const fh = await open(join(src, 'data'), 'wx', 0o600);
    try {
      for (let i = 0; i < mib; i++) await fh.write(chunk);
    } finally {
      await fh.close();
    }
    const r = spawnSync('mke2fs', ['-q', '-F', '-t', 'ext2', '-m', '0', '-d', src, image, `${mib + 64}M`], { encoding: 'utf8', timeout: 120_000 });
    if (r.status !== 0) throw new Error(`mke2fs failed (${r.status ?? r.signal}): ${r.stderr}`);
  } finally {
    await rm(src, { recursive: true, force: true });
  }
}

/** Entry point for `npm run bench -- policy [--seconds N] [--rows none,proxmox,mom,virtmem] [--no-cache]`. */
export async function runPolicyReal(argv: string[]): Promise<void> {
  const i = argv.indexOf('--seconds');
  const endS = i >= 0 ? Number(argv[i + 1]) : 100;
  if (!Number.isFinite(endS) || endS < 30) throw new Error('--seconds takes a number >= 30');
  const r = argv.indexOf('--rows');
  const engines = (r >= 0 ? (argv[r + 1] ?? '').split(',') : ['none', ...POLICY_ENGINES.filter((e) => e !== 'virtmem'), 'virtmem']) as Engine[];
  for (const e of engines) if (e !== 'none' && !POLICY_ENGINES.includes(e)) throw new Error(`--rows: '${e}' is not none or one of ${POLICY_ENGINES.join(', ')}`);
  const k = endS / SIM_END_S;
  const started = Date.now();
  const stateDir = await mkdtemp(join(tmpdir(), 'vmpr-'));
  const driver = new Driver({ stateDir });
  const onSignal = (): void => {
    for (const g of NAMES) spawnSync(BIN, ['--state-dir', stateDir, 'destroy', `pr-${g}`], { stdio: 'ignore', timeout: 60_000 });
    void rm(stateDir, { recursive: true, force: true }).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    // The cache guest's disk: data it reads once into page cache (clean, droppable), read-only.
    const cacheDisk = argv.includes('--no-cache') ? null : join(stateDir, 'cache.img');
    if (cacheDisk) await writeCacheDisk(cacheDisk, CACHE_MIB);
    for (const g of NAMES) {
      const disk = g === 'cache' && cacheDisk ? ['--disk', `${cacheDisk},format=raw,readonly`] : [];
      vm(stateDir, 'new', `pr-${g}`, '--accel', 'tcg', '--memory', '512M', '--max-memory', '2G', ...disk);
      vm(stateDir, 'policy', 'set', `pr-${g}`, '--enable', '--floor', '384M');
    }
    log(`state dir ${stateDir}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    const rows: RealRow[] = [];
    for (const e of engines) rows.push(await runRow(stateDir, driver, e, k, cacheDisk));
    process.stdout.write(formatRealTable(rows, k, (Date.now() - started) / 60_000));
    process.stdout.write(`JSON ${JSON.stringify(rows)}\n`);
  } finally {
    for (const g of NAMES) {
      spawnSync(BIN, ['--state-dir', stateDir, 'destroy', `pr-${g}`], { stdio: 'ignore', timeout: 60_000 });
      spawnSync(BIN, ['--state-dir', stateDir, 'undefine', `pr-${g}`], { stdio: 'ignore', timeout: 60_000 });
    }
    await rm(stateDir, { recursive: true, force: true });
  }
}
