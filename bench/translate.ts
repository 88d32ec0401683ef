/**
 * Address translation: virtmem's own page-table walk (reading guest memory through the QEMU
 * process) against QEMU's monitor (`gva2gpa`, one HMP call per address), on one guest.
 *
 *   npx tsc -p . && node dist/bench/translate.js [--count N]
 *
 * Boots the built-in guest (512 MiB) in a temporary state directory, translates N (default
 * 10,000) kernel direct-map addresses spread over guest RAM both ways, checks that both give
 * the same guest-physical addresses, prints the times and the ratio, and removes the guest
 * (also on failure or Ctrl-C). Needs root (reading /proc/PID/mem of QEMU) and the built-in
 * guest.
 *
 * The guest is idle while measuring (its vCPU halts), which is the monitor's best case: the
 * monitor answers fastest when no vCPU competes for QEMU's big lock.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { NativeDriver as Driver } from '../src/driver/native/driver.js';
import { GuestAgent } from '../src/guest/agent.js';
import { findDefaultGuest } from '../src/guest/build.js';
import { Inspector, type TranslatorOptions } from '../src/inspect/inspector.js';
import { parseGva2gpa } from '../src/inspect/hmp-answers.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(ROOT, 'bin', 'virtmem');
const NAME = 'xlate';
const RAM_BYTES = 512 * 1024 * 1024;

function cli(stateDir: string, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(BIN, ['--state-dir', stateDir, ...args], { timeout: 180_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`virtmem ${args.join(' ')} failed: ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

/** Deterministic addresses: xorshift32, so runs compare. */
function addresses(base: bigint, count: number): bigint[] {
  let x = 0x9e3779b9;
  const out: bigint[] = [];
  for (let i = 0; i < count; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out.push(base + BigInt(x % RAM_BYTES));
  }
  return out;
}

const ms = (t: number): string => `${t.toFixed(1)} ms`;
const us = (t: number, n: number): string => `${((t * 1000) / n).toFixed(1)} µs`;

async function main(): Promise<void> {
  const countArg = process.argv.indexOf('--count');
  const count = countArg > 0 ? Number(process.argv[countArg + 1]) : 10_000;
  if (!Number.isInteger(count) || count <= 0) throw new Error('--count takes a positive whole number');
  const guest = await findDefaultGuest();
  if (!guest) throw new Error('the built-in guest is not built: run `virtmem guest-build` first');
  if (process.geteuid?.() !== 0) console.log('note: not root: virtmem falls back to reading through the monitor, which is what this compares against');

  const stateDir = await mkdtemp(join(tmpdir(), 'vm-xlate-'));
  const driver = new Driver({ stateDir });
  let started = false;
  const cleanup = async (): Promise<void> => {
    if (started) await driver.destroy(NAME).catch(() => {});
    await rm(stateDir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => { void cleanup().then(() => process.exit(130)); });
  try {
    await cli(stateDir, 'new', NAME, '--memory', '512M');
    await cli(stateDir, 'start', NAME);
    started = true;
    const agent = await GuestAgent.connect(join(stateDir, 'run', NAME, 'agent.sock'), { timeoutMs: 120_000 });
    const sym = /^([0-9a-f]{16}) D page_offset_base$/m.exec((await agent.run('grep -w page_offset_base /proc/kallsyms')).output)?.[1];
    agent.close();
    if (!sym) throw new Error('page_offset_base not found in the guest\'s /proc/kallsyms');

    console.log(`guest: ${NAME}, 512 MiB, ${guest.kernelVersion}, 5-level paging; ${count} kernel direct-map addresses over all of its RAM`);
    // Three ways: each walk reads its tables (as N separate `translate` calls would, minus the
    // process start), walks share a table cache, and the cache without host-side extras
    // (only GPA and HVA: what gva2gpa answers, plus the HVA).
    const variants: Array<{ label: string; opts: TranslatorOptions }> = [
      { label: 'no cache: every walk reads its tables; GPA, HVA, HPA, 16 bytes', opts: {} },
      { label: 'table cache; GPA, HVA, HPA, 16 bytes', opts: { cacheTables: true } },
      { label: 'table cache; GPA and HVA only', opts: { cacheTables: true, hostPhys: false, bytes: false } },
    ];
    const result = await Inspector.run(driver, NAME, async (insp) => {
      const pobT = await insp.translate(BigInt(`0x${sym}`));
      if (!pobT.target?.bytes) throw new Error('cannot read page_offset_base');
      const addrs = addresses(Buffer.from(pobT.target.bytes).readBigUInt64LE(0), count);
      // One unmeasured pass first, so the first variant does not also pay for cold host caches.
      const warm = await insp.translator({ cacheTables: true });
      for (const a of addrs) await warm(a);
      const runs = [];
      for (const v of variants) {
        const t0 = performance.now();
        const translate = await insp.translator(v.opts);
        const setupMs = performance.now() - t0;
        const t1 = performance.now();
        const gpas: Array<bigint | null> = [];
        for (const a of addrs) {
          const t = await translate(a);
          gpas.push(t.walk.kind === 'mapped' ? t.walk.gpa : null);
        }
        runs.push({ ...v, setupMs, walkMs: performance.now() - t1, gpas });
      }
      return { addrs, runs, via: pobT.readVia };
    });

    const monitor = await driver.withMonitor(NAME, async (c) => {
      const t0 = performance.now();
      const gpas: Array<bigint | null> = [];
      for (const a of result.addrs) {
        const r = parseGva2gpa(await c.hmp(`gva2gpa 0x${a.toString(16)}`));
        gpas.push('address' in r ? r.address : null);
      }
      return { ms: performance.now() - t0, gpas };
    });

    const cliSamples: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await cli(stateDir, 'translate', NAME, `0x${result.addrs[i]!.toString(16)}`, '--json');
      cliSamples.push(performance.now() - t0);
    }
    cliSamples.sort((a, b) => a - b);

    console.log('');
    console.log(`QEMU monitor, gva2gpa (one QMP session): ${ms(monitor.ms)} for ${count} calls, ${us(monitor.ms, count)} each (GPA only)`);
    console.log(`virtmem (${result.via}, one session):`);
    let worst = 0;
    for (const r of result.runs) {
      const mismatches = r.gpas.filter((g, i) => g !== monitor.gpas[i]).length;
      worst = Math.max(worst, mismatches);
      console.log(`  ${r.label}:`);
      console.log(`    ${ms(r.walkMs)}, ${us(r.walkMs, count)} each (+ ${ms(r.setupMs)} session setup)  ` +
        `ratio ${(monitor.ms / r.walkMs).toFixed(0)}x (${(monitor.ms / (r.walkMs + r.setupMs)).toFixed(0)}x with setup); ` +
        `same GPA as QEMU for ${count - mismatches}/${count}`);
    }
    console.log(`one \`virtmem translate\` CLI run (process start, monitor session, one address), median of 5: ${ms(cliSamples[2]!)}`);
    console.log('goal: at least 50x faster than the monitor');
    if (worst > 0) process.exitCode = 1;
  } finally {
    await cleanup();
  }
}

main().catch((e: unknown) => {
  console.error(`bench/translate: ${(e as Error).message}`);
  process.exitCode = 1;
});
