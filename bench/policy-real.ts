/**
 * The policy benchmark on REAL guests: three TCG guests of the built-in guest (boot RAM 512 MiB
 * + a virtio-mem region up to 2 GiB, floor 384 MiB), the same scripted demand (driven from the
 * host through the guest agent with /bin/vmhelper, and a read of the cache guest's disk) and the
 * same host budget for every row. Each row runs `virtmem daemon` as a user would:
 * `--policy off` (none) or `--policy all --policy-engine virtmem|proxmox|mom` (row
 * virtmem-unplug: virtmem's with `--policy-reclaim unplug`), with the budget
 * (`--policy-budget` for virtmem's own guests, `budget=` in `--hosts FILE` for a libvirt host);
 * the policy loop, its snapshots and its resizes are the daemon's.
 *
 *   npm run bench -- policy [--seconds N] [--rows none,proxmox,mom,virtmem,virtmem-unplug] [--no-cache]
 *                           [--on native,libvirt,two-hosts]
 *
 * `--on` picks the guests (default native,libvirt): `native` virtmem's own QEMU guests;
 * `libvirt` guests defined in this machine's libvirtd (qemu:///system); `two-hosts` the scenario
 * on qemu:///system and, at the same time, on a second libvirtd in its own mount namespace on
 * 127.0.0.1 TCP (a remote host), one daemon serving both, each host with its own budget.
 *
 * Sampled every second per guest from the daemon's live model (GET /api/v1/stats: current
 * memory, QEMU RSS, guest statistics; no monitor connection of the bench's own), plus from each
 * guest through its agent: OOM kills (`dmesg | grep -c 'Out of memory'`, plus any a trace-mode
 * statistics-stall capture cleared from the log) and how many vmhelper processes are alive
 * against how many the scenario started. Resize commands are counted from the daemon's event
 * stream (policy decisions). Guests are fresh for each row (destroyed and
 * started again); everything the bench creates is removed at the end.
 * VIRTMEM_BENCH_TRACE=1 prints every decision and every sample.
 */
import { spawnSync } from 'node:child_process';
import { startBenchDaemon, type BenchDaemon } from './daemon.js';
import { request } from 'node:http';
import { chmod, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir, loadavg } from 'node:os';
import { join } from 'node:path';
import { GuestAgent } from '../src/guest/agent.js';
import { GiB, MiB, POLICY_ENGINES, type PolicyEngine } from '../src/policy/types.js';
import { GUEST_NAMES, nativeHost, remoteLibvirtHost, systemLibvirtHost, type BenchHost, type GName } from './lib/policy-hosts.js';

/** The simulator's timeline is 300 s; this one is scaled by SCALE (default 1/3: 100 s). */
const SIM_END_S = 300;
const MAX_KIB = 2 * GiB;
/** The budget of the scenario's host; the second host of `two-hosts` has its own, larger one. */
const BUDGET_KIB = 3.75 * GiB;
const REMOTE_BUDGET_KIB = 4 * GiB;
const HELPER_MIB = 100;
/** The spike: 9 helpers of 100 MiB at once in the alloc guest. */
const SPIKE_MIB = 900;
/** What the cache guest reads from its disk into page cache. */
const CACHE_MIB = 1200;

const log = (s: string): void => { process.stderr.write(`[policy-real] ${s}\n`); };
/** VIRTMEM_BENCH_TRACE=1: every decision and every second's numbers on stderr. */
const TRACE = process.env.VIRTMEM_BENCH_TRACE === '1';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Each guest starts at a third of its host's budget (1.25 GiB of 3.75 GiB, as in the simulator). */
const startKiB = (h: BenchHost): number => Math.floor(h.budgetKiB / 3 / 1024) * 1024;

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
  /** The host the row's guests live on (its label). */
  host: string;
  budgetGiB: number;
  givenBackGiBs: number;
  meanCurrentGiB: number;
  meanRssGiB: number;
  peakRssGiB: number;
  peakCurrentGiB: number;
  overBudgetS: number;
  rssOverBudgetS: number;
  oomKills: number;
  helperSLost: number;
  helperSDemanded: number;
  spikeServedS: number | null;
  settledAfterQuietS: number | null;
  /** Resizes the policy sent (a decision with outcome pending), and refused ones. */
  resizeCommands: number;
  /** Of those, how many ended short: not reached (includes superseded by the next decision) and refused. */
  resizeNotReached: number;
  resizeRefused: number;
  samples: number;
  skippedSamples: number;
  cacheKiBMax: number;
  /** Major page faults in all guests over the row (refaults of dropped cache, the guests have no swap). */
  majorFaults: number;
}

/** A row: no policy, one engine, or virtmem's with `--policy-reclaim unplug` (not the default). */
type Engine = 'none' | PolicyEngine | 'virtmem-unplug';
const ROWS: readonly Engine[] = ['none', ...POLICY_ENGINES, 'virtmem-unplug'];

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

/** `virtmem daemon` for one row, as a user runs it, serving every host of the row; resolves once it watches the guests. */
async function startDaemon(stateDir: string, engine: Engine, hosts: readonly BenchHost[]): Promise<BenchDaemon> {
  const args = ['--policy', engine === 'none' ? 'off' : 'all'];
  if (engine === 'virtmem-unplug') args.push('--policy-engine', 'virtmem', '--policy-reclaim', 'unplug');
  else if (engine !== 'none') args.push('--policy-engine', engine);
  const local = hosts.find((h) => h.hostsLine === null);
  if (local) args.push('--policy-budget', `${local.budgetKiB / MiB}M`);
  const lines = hosts.flatMap((h) => (h.hostsLine === null ? [] : [h.hostsLine]));
  if (lines.length > 0) {
    const file = join(stateDir, 'hosts');
    await writeFile(file, lines.join('\n') + '\n', { mode: 0o600 });
    args.push('--hosts', file);
  }
  return startBenchDaemon(stateDir, args);
}

interface PolicyEvent { name: string; host?: string; action: string; outcome?: string; at: string; reason: string }

/** The daemon's event stream: every policy decision it publishes (resize, failed, hold), and how resizes ended. */
function followPolicyEvents(socketPath: string, onDecision: (d: PolicyEvent) => void): () => void {
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
        if (ev === 'policy' && data) onDecision(JSON.parse(data) as PolicyEvent);
      }
    });
  });
  req.once('error', () => {});
  req.end();
  return () => req.destroy();
}

interface GuestDoc {
  name: string;
  host?: string;
  stats: { usableBytes?: number; unusedBytes?: number; diskCachesBytes?: number; majorFaults?: number; rssBytes?: number; ageS?: number | null; periodS?: number | null };
  memory: { totalBytes: number; pluggedBytes?: number; requestedBytes?: number };
}

/** One host's part of a row: its agents, what the scenario demanded, what was seen, the sums. */
class HostRun {
  readonly agents = new Map<GName, GuestAgent>();
  readonly expected = new Map<GName, number>(GUEST_NAMES.map((g) => [g, 0]));
  readonly latest = new Map<GName, Latest>();
  readonly alive = new Map<GName, number>();
  readonly ooms = new Map<GName, number>();
  readonly firstMajor = new Map<GName, number>();
  /** Trace mode: statistics stalls already captured per guest (at most two captures each). */
  readonly stallCaptures = new Map<GName, number>();
  readonly acc = { givenBack: 0, current: 0, rss: 0, peakRss: 0, peakCurrent: 0, over: 0, rssOver: 0, lost: 0, demanded: 0, samples: 0, cacheMax: 0 };
  resizeCommands = 0;
  resizeNotReached = 0;
  resizeRefused = 0;
  lastCommandAfterQuiet: number | null = null;
  spikeServed: number | null = null;
  useBeforeSpike: number | null = null;
  constructor(readonly h: BenchHost) {}
  tag(g: GName): string { return this.h.hostsLine === null ? g : `${this.h.key} ${g}`; }
}

/** The guest-side half of a statistics-stall capture: what the guest's per-CPU workqueue pool is
 * running and has pending (sysrq-t's workqueue dump), the in-flight workers' stacks and the
 * virtio interrupt counts. It clears the kernel log (sysrq-t's output would push OOM reports out
 * of it) and keeps the OOM kills it cleared in /tmp/oom-base, which GUEST_OOM_COUNT adds back.
 * Busybox sh; the built-in guest runs it as root. */
const GUEST_STALL_DUMP = 'b=$(cat /tmp/oom-base 2>/dev/null || echo 0); echo $((b + $(dmesg | grep -c "Out of memory"))) > /tmp/oom-base; dmesg -c >/dev/null; '
  + 'echo t > /proc/sysrq-trigger; dmesg -c > /tmp/sysrq-t.txt; echo $(($(cat /tmp/oom-base) + $(grep -c "Out of memory" /tmp/sysrq-t.txt))) > /tmp/oom-base; '
  + 'sed -n "/Showing busy workqueues/,\\$p" /tmp/sysrq-t.txt | sed "s/^\\[[ 0-9.]*\\] //" | head -30; '
  + 'for p in $(sed -n "s/.*in-flight: \\([0-9]*\\):.*/\\1/p" /tmp/sysrq-t.txt | sort -u); do awk -v p=" pid:$p " "index(\\$0,p){f=1} f{print} f&&/<\\/TASK>/{exit}" /tmp/sysrq-t.txt | sed "s/^\\[[ 0-9.]*\\] //" | grep -v "^ *? " | head -30; done; '
  + 'grep virtio /proc/interrupts';

/** OOM kills so far: the ones in the kernel log plus the ones a stall capture cleared from it (/tmp/oom-base). */
const GUEST_OOM_COUNT = 'echo $(( $(cat /tmp/oom-base 2>/dev/null || echo 0) + $(dmesg | grep -c \'Out of memory\') ))';

/** How many statistics periods old a guest's statistics are before trace mode captures a stall. */
const STALL_PERIODS = Number(process.env.VIRTMEM_BENCH_STALL_PERIODS ?? 5);

/**
 * Trace mode: when a guest's balloon statistics are more than 5 periods old (VIRTMEM_BENCH_STALL_PERIODS) (once, and again past
 * 30 s), log what QEMU holds of the statistics virtqueue (inuse 1: QEMU has the buffer and will
 * ask again; inuse 0 with used_idx = signalled_used: the guest was asked and has not answered),
 * the device's pending interrupt status, and the guest's workqueue state (docs/benchmarks.md,
 * "A guest that stops sending statistics").
 */
async function captureStatsStall(r: HostRun, g: GName, d: GuestDoc, t: number): Promise<void> {
  const age = d.stats.ageS;
  const period = d.stats.periodS ?? 1;
  const done = r.stallCaptures.get(g) ?? 0;
  if (typeof age !== 'number' || age <= STALL_PERIODS * Math.max(1, period) || done >= 2 || (done === 1 && age <= 30)) return;
  r.stallCaptures.set(g, done + 1);
  const dev = '/machine/peripheral/balloon0/virtio-backend';
  const [vq, status] = [await r.h.hmp(g, `info virtio-queue-status ${dev} 2`), await r.h.hmp(g, `info virtio-status ${dev}`)];
  const pick = (text: string, keys: RegExp): string => text.split('\n').filter((l) => keys.test(l)).map((l) => l.trim().replace(/\s+/g, ' ')).join(', ');
  log(`${t.toFixed(1)} ${r.tag(g)}: STATISTICS STALL (age ${age} s, virtio-mem plugged ${((d.memory.pluggedBytes ?? 0) / 2 ** 20).toFixed(0)} of requested ${((d.memory.requestedBytes ?? 0) / 2 ** 20).toFixed(0)} MiB); QEMU stats vq: ${pick(vq, /inuse|used_idx|signalled_used:|last_avail_idx/)}; ${pick(status, /^\s*(isr|broken):/)}`);
  const guest = await r.agents.get(g)!.run(GUEST_STALL_DUMP, { timeoutMs: 30_000 }).then((x) => x.output, (e: Error) => `(guest dump failed: ${e.message})`);
  log(`${r.tag(g)}: guest at the stall:\n${guest.trimEnd()}`);
}

/** The base load each guest keeps the whole run (helpers of 100 MiB). */
const BASE: Record<GName, number> = { alloc: 1, cache: 1, ramp: 2 };

async function runRow(stateDir: string, engine: Engine, hosts: readonly BenchHost[], k: number, withCache: boolean): Promise<RealRow[]> {
  const runs = hosts.map((h) => new HostRun(h));
  const pname = engine;
  let daemon: { stop(): Promise<void> } | null = null;
  let unfollow = (): void => {};
  try {
    await Promise.all(runs.map(async (r) => {
      for (const g of GUEST_NAMES) {
        r.h.start(g);
        r.agents.set(g, await GuestAgent.connect(r.h.agentPath(g), { timeoutMs: 180_000 }));
      }
      if (withCache) {
        const m = await r.agents.get('cache')!.run('mkdir -p /mnt && mount -o ro /dev/vda /mnt', { timeoutMs: 30_000 });
        if (m.exitCode !== 0) throw new Error(`${r.h.label}: cache guest: mounting its disk failed: ${m.output}`);
      }
      for (const g of GUEST_NAMES) r.h.setMemory(g, startKiB(r.h));
    }));
    daemon = await startDaemon(stateDir, engine, hosts);
    const socketPath = join(stateDir, 'virtmemd.sock');
    log(`${pname}: ${runs.map((r) => `${r.h.label}: 3 guests up at ${startKiB(r.h) / MiB} MiB each, budget ${r.h.budgetKiB / MiB} MiB`).join('; ')}; daemon running`);
    const sc = scenario(k, withCache);
    const t0 = Date.now();
    const now = (): number => (Date.now() - t0) / 1000;
    let skipped = 0;
    let done = false;
    unfollow = followPolicyEvents(socketPath, (d) => {
      const r = runs.find((x) => x.h.key === (d.host ?? 'local'));
      if (!r) return;
      if (TRACE) log(`${now().toFixed(1)} ${r.h.hostsLine === null ? '' : `${r.h.key} `}${d.name} ${d.action}${d.outcome ? ` (${d.outcome})` : ''}: ${d.reason}`);
      // A decision is published when it is sent (outcome pending, or refused) and again when it
      // ends (reached, not reached): count each resize once, and how it ended.
      if (d.outcome === 'not reached') r.resizeNotReached++;
      if (d.outcome === 'refused') { r.resizeRefused++; log(`${pname}: ${r.h.label} ${d.name}: ${d.reason}`); }
      if (d.outcome !== 'pending' && d.outcome !== 'refused') return;
      r.resizeCommands++;
      const t = now();
      if (t >= sc.quietS) r.lastCommandAfterQuiet = t;
    });

    // The scenario driver: starts/kills helpers through each host's agents at the scripted times.
    const script = (r: HostRun): Promise<void> => (async () => {
      for (const s of sc.steps) {
        const wait = s.atS * 1000 - (Date.now() - t0);
        if (wait > 0) await sleep(wait);
        const a = r.agents.get(s.g)!;
        if (s.readCacheMiB) {
          // Fill the page cache: read the file once (clean cache the guest can drop at any time).
          // In the background: the agent runs one command at a time, and the sampler's must not wait.
          await a.run(`(dd if=/mnt/data of=/dev/null bs=1M count=${s.readCacheMiB} 2>/dev/null &)`, { timeoutMs: 30_000 }).catch((e: Error) => log(`${r.tag(s.g)}: read failed: ${e.message}`));
        } else if (s.killPhase) {
          // Kill the newest helpers down to the base load (pids ascend; keep the oldest).
          const keep = BASE[s.g];
          await a.run(`for p in $(pidof vmhelper | tr ' ' '\\n' | sort -n | tail -n +${keep + 1}); do kill $p; done`, { timeoutMs: 30_000 }).catch((e: Error) => log(`${r.tag(s.g)}: kill failed: ${e.message}`));
          r.expected.set(s.g, keep);
        } else {
          const n = s.start!;
          const cmd = Array.from({ length: n }, () => `vmhelper alloc ${HELPER_MIB} >/dev/null 2>&1 &`).join(' ');
          const started = await a.run(cmd, { timeoutMs: 30_000 }).then(() => true, (e: Error) => { log(`${r.tag(s.g)}: start failed: ${e.message}`); return false; });
          // Demanded from when the agent has started them: the agent's round trip (up to a second
          // under load, in every row alike) is not work the guest lost.
          if (started) r.expected.set(s.g, r.expected.get(s.g)! + n);
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
        Promise.all(runs.map((r) => Promise.all(GUEST_NAMES.map((g) => r.agents.get(g)!.run(`pidof vmhelper | wc -w; ${GUEST_OOM_COUNT}`, { timeoutMs: 10_000 }).catch(() => null))))),
      ]);
      runs.forEach((r, ri) => {
        GUEST_NAMES.forEach((g, i) => {
          const d = doc.guests.find((x) => x.name === r.h.name(g) && (x.host ?? 'local') === r.h.key);
          if (d) {
            const l: Latest = { currentKiB: d.memory.totalBytes / 1024, rssKiB: (d.stats.rssBytes ?? 0) / 1024, atS: t };
            if (d.stats.usableBytes !== undefined) l.usableKiB = d.stats.usableBytes / 1024;
            if (d.stats.unusedBytes !== undefined) l.unusedKiB = d.stats.unusedBytes / 1024;
            if (d.stats.diskCachesBytes !== undefined) { l.cachesKiB = d.stats.diskCachesBytes / 1024; r.acc.cacheMax = Math.max(r.acc.cacheMax, l.cachesKiB); }
            if (d.stats.majorFaults !== undefined) {
              l.majorFaults = d.stats.majorFaults;
              if (!r.firstMajor.has(g)) r.firstMajor.set(g, d.stats.majorFaults);
            }
            r.latest.set(g, l);
          }
          const reply = replies[ri]![i];
          if (reply) {
            const [a, o] = reply.output.trim().split(/\s+/).map(Number);
            if (Number.isFinite(a)) r.alive.set(g, a!);
            if (Number.isFinite(o)) {
              if (o! > (r.ooms.get(g) ?? 0)) log(`${t.toFixed(1)} ${r.tag(g)}: OOM kill (${o} so far)`);
              r.ooms.set(g, o!);
            }
          }
          if (TRACE && d) log(`${t.toFixed(1)} ${r.tag(g)}: current ${(d.memory.totalBytes / 2 ** 20).toFixed(0)} MiB, available ${((d.stats.usableBytes ?? 0) / 2 ** 20).toFixed(0)}, cache ${((d.stats.diskCachesBytes ?? 0) / 2 ** 20).toFixed(0)}, rss ${((d.stats.rssBytes ?? 0) / 2 ** 20).toFixed(0)}, helpers ${r.alive.get(g)}/${r.expected.get(g)}, statistics age ${d.stats.ageS ?? '-'} s`);
          if (TRACE && d) void captureStatsStall(r, g, d, t);
        });
        if (r.latest.size < GUEST_NAMES.length) return;
        const acc = r.acc;
        acc.samples++;
        let cur = 0;
        let rss = 0;
        for (const g of GUEST_NAMES) {
          const l = r.latest.get(g)!;
          cur += l.currentKiB;
          rss += l.rssKiB;
          acc.givenBack += (MAX_KIB - l.currentKiB);
          const exp = r.expected.get(g)!;
          acc.demanded += exp;
          acc.lost += Math.max(0, exp - (r.alive.get(g) ?? 0));
        }
        acc.current += cur;
        acc.rss += rss;
        acc.peakRss = Math.max(acc.peakRss, rss);
        acc.peakCurrent = Math.max(acc.peakCurrent, cur);
        if (cur > r.h.budgetKiB + MiB) acc.over++;
        if (rss > r.h.budgetKiB + MiB) acc.rssOver++;
        // The spike is served when the alloc guest holds its use from before the spike plus the
        // spike's 900 MiB: the memory is there (touching it is the guest's own pace under TCG).
        const al = r.latest.get('alloc')!;
        if (t < sc.spikeS && al.usableKiB !== undefined) r.useBeforeSpike = Math.max(0, al.currentKiB - al.usableKiB);
        if (r.spikeServed === null && t >= sc.spikeS && r.useBeforeSpike !== null && al.currentKiB >= r.useBeforeSpike + SPIKE_MIB * MiB) r.spikeServed = t - sc.spikeS;
      });
    };
    const sampler = (async () => {
      while (!done) {
        const tick = Date.now();
        if (!sampling) {
          sampling = true;
          await sampleOnce().catch((e: Error) => log(`sample failed: ${e.message}`)).finally(() => { sampling = false; });
        } else skipped++;
        const wait = 1000 - (Date.now() - tick);
        if (wait > 0) await sleep(wait); else skipped += Math.floor(-wait / 1000);
      }
    })();

    await Promise.all(runs.map(script));
    const rest = sc.endS * 1000 - (Date.now() - t0);
    if (rest > 0) await sleep(rest);
    done = true;
    await sampler;
    return runs.map((r) => {
      const n = Math.max(1, r.acc.samples);
      const majorFaults = GUEST_NAMES.reduce((s, g) => s + Math.max(0, (r.latest.get(g)?.majorFaults ?? 0) - (r.firstMajor.get(g) ?? 0)), 0);
      const row: RealRow = {
        policy: pname,
        host: r.h.label,
        budgetGiB: r.h.budgetKiB / GiB,
        givenBackGiBs: r.acc.givenBack / GiB, // one sample per second: KiB·s
        meanCurrentGiB: r.acc.current / n / GiB,
        meanRssGiB: r.acc.rss / n / GiB,
        peakRssGiB: r.acc.peakRss / GiB,
        peakCurrentGiB: r.acc.peakCurrent / GiB,
        overBudgetS: r.acc.over,
        rssOverBudgetS: r.acc.rssOver,
        oomKills: GUEST_NAMES.reduce((s, g) => s + (r.ooms.get(g) ?? 0), 0),
        helperSLost: r.acc.lost,
        helperSDemanded: r.acc.demanded,
        spikeServedS: r.spikeServed,
        settledAfterQuietS: engine !== 'none' ? (r.lastCommandAfterQuiet === null ? 0 : r.lastCommandAfterQuiet - sc.quietS) : null,
        resizeCommands: r.resizeCommands,
        resizeNotReached: r.resizeNotReached,
        resizeRefused: r.resizeRefused,
        samples: r.acc.samples,
        skippedSamples: skipped,
        cacheKiBMax: r.acc.cacheMax,
        majorFaults,
      };
      log(`${pname}: ${JSON.stringify(row)}`);
      return row;
    });
  } finally {
    unfollow();
    await daemon?.stop();
    for (const r of runs) {
      for (const a of r.agents.values()) a.close();
      for (const g of GUEST_NAMES) r.h.destroy(g);
    }
  }
}

/** One table: the rows of one set of guests (for two hosts, each host's rows). */
export function formatRealTable(title: string, rows: RealRow[], k: number, minutes: number, loads: string): string {
  const f = (x: number | null, d = 1): string => (x === null ? '—' : x.toFixed(d));
  const end = SIM_END_S * k;
  const hosts = [...new Set(rows.map((r) => r.host))];
  const bestOf = (host: string): number => Math.max(...rows.filter((r) => r.host === host && (r.policy === 'proxmox' || r.policy === 'mom')).map((r) => r.givenBackGiBs));
  const multi = hosts.length > 1;
  return [
    `${title}: 3 guests of the built-in guest per host, boot RAM 512 MiB + virtio-mem to 2 GiB, floor 384 MiB, each starting at a third of its host's budget (${hosts.map((h) => `${h}: ${f(rows.find((r) => r.host === h)!.budgetGiB, 2)} GiB`).join(', ')}); `
      + `timeline ${f(k, 3)}x the simulator's (${end.toFixed(0)} s instead of ${SIM_END_S} s): quiet from ${(200 * k).toFixed(0)} s, spike +900 MiB at ${(170 * k).toFixed(0)} s; total ${minutes.toFixed(1)} min; load average ${loads}`,
    '',
    `| policy${multi ? ' | host' : ''} | given back (GiB·s, max − current) | vs best of Proxmox/MoM | mean / peak current (GiB, 3 guests) | mean / peak QEMU RSS (GiB) | over budget (s, current / RSS) | OOM kills | helper·s lost (of demanded) | major faults | spike served (s) | settled after quiet (s) | resize commands (not reached, refused) |`,
    `| ---${multi ? ' | ---' : ''} | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |`,
    ...rows.map((r) => {
      const best = bestOf(r.host);
      return `| ${r.policy}${multi ? ` | ${r.host}` : ''} | ${f(r.givenBackGiBs)} | ${best > 0 ? `${(r.givenBackGiBs / best).toFixed(2)}x` : '—'} | ${f(r.meanCurrentGiB, 2)} / ${f(r.peakCurrentGiB, 2)} | ${f(r.meanRssGiB, 2)} / ${f(r.peakRssGiB, 2)} | ${r.overBudgetS} / ${r.rssOverBudgetS} | ${r.oomKills} | ${r.helperSLost} (of ${r.helperSDemanded}, ${(100 * r.helperSLost / Math.max(1, r.helperSDemanded)).toFixed(1)} %) | ${r.majorFaults} | ${f(r.spikeServedS)} | ${f(r.settledAfterQuietS)} | ${r.resizeCommands} (${r.resizeNotReached}, ${r.resizeRefused}) |`;
    }),
    '',
    `Samples per row: ${rows.map((r) => `${r.policy}${multi ? ` ${r.host}` : ''} ${r.samples} (${r.skippedSamples} skipped: previous sample still running)`).join(', ')}. `
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

type GuestSet = 'native' | 'libvirt' | 'two-hosts';
const SETS: readonly GuestSet[] = ['native', 'libvirt', 'two-hosts'];
const TITLES: Record<GuestSet, string> = {
  'native': "REAL GUESTS (TCG), virtmem's own QEMU guests",
  'libvirt': 'REAL GUESTS (TCG), libvirt guests in qemu:///system',
  'two-hosts': 'REAL GUESTS (TCG), two libvirt hosts at once: qemu:///system and a second libvirtd (own mount namespace, 127.0.0.1 TCP), one daemon',
};

const loads = (): string => loadavg().map((x) => x.toFixed(2)).join(' ');

/** Entry point for `npm run bench -- policy [--seconds N] [--rows none,proxmox,mom,virtmem,virtmem-unplug] [--no-cache] [--on native,libvirt,two-hosts]`. */
export async function runPolicyReal(argv: string[]): Promise<void> {
  const i = argv.indexOf('--seconds');
  const endS = i >= 0 ? Number(argv[i + 1]) : 100;
  if (!Number.isFinite(endS) || endS < 30) throw new Error('--seconds takes a number >= 30');
  const r = argv.indexOf('--rows');
  const engines = (r >= 0 ? (argv[r + 1] ?? '').split(',') : ['none', ...POLICY_ENGINES.filter((e) => e !== 'virtmem'), 'virtmem']) as Engine[];
  for (const e of engines) if (!ROWS.includes(e)) throw new Error(`--rows: '${e}' is not one of ${ROWS.join(', ')}`);
  const o = argv.indexOf('--on');
  const sets = (o >= 0 ? (argv[o + 1] ?? '').split(',') : ['native', 'libvirt']) as GuestSet[];
  for (const s of sets) if (!SETS.includes(s)) throw new Error(`--on: '${s}' is not one of ${SETS.join(', ')}`);
  const k = endS / SIM_END_S;
  // Virtmem's state (definitions, the daemon's socket): owner-only. libvirt's guests need their
  // XML and disk images where libvirt's QEMU user can reach them: a 0755 folder of their own.
  const stateDir = await mkdtemp(join(tmpdir(), 'vmpr-'));
  const workDir = await mkdtemp('/var/tmp/vmpl-');
  await chmod(workDir, 0o755);
  const hosts: BenchHost[] = [];
  const cleanup = async (): Promise<void> => {
    for (const h of hosts.splice(0)) await h.cleanup().catch((e: Error) => log(`cleanup of ${h.label}: ${e.message}`));
    await rm(stateDir, { recursive: true, force: true });
    await rm(workDir, { recursive: true, force: true });
  };
  const onSignal = (): void => { void cleanup().finally(() => process.exit(130)); };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    // The cache guest's disk: data it reads once into page cache (clean, droppable), read-only.
    const cacheDisk = argv.includes('--no-cache') ? null : join(workDir, 'cache.img');
    if (cacheDisk) { await writeCacheDisk(cacheDisk, CACHE_MIB); await chmod(cacheDisk, 0o644); }
    log(`state dir ${stateDir}, libvirt files in ${workDir}; load average ${loads()}`);
    for (const set of sets) {
      const started = Date.now();
      const startLoad = loads();
      const these: BenchHost[] = set === 'native' ? [nativeHost(stateDir, BUDGET_KIB)]
        : set === 'libvirt' ? [systemLibvirtHost(workDir, BUDGET_KIB)]
        : [systemLibvirtHost(workDir, BUDGET_KIB), await remoteLibvirtHost(workDir, REMOTE_BUDGET_KIB)];
      hosts.push(...these);
      for (const h of these) await h.define(cacheDisk);
      const rows: RealRow[] = [];
      for (const e of engines) rows.push(...await runRow(stateDir, e, these, k, cacheDisk !== null));
      for (const h of these) { await h.cleanup(); hosts.splice(hosts.indexOf(h), 1); }
      process.stdout.write(formatRealTable(TITLES[set], rows, k, (Date.now() - started) / 60_000, `${startLoad} at start, ${loads()} at end`) + '\n');
      process.stdout.write(`JSON ${JSON.stringify({ set, seconds: endS, rows })}\n\n`);
    }
  } finally {
    await cleanup();
  }
}
