/**
 * The virtmem side of the API measurements, in its own long-lived Node process (as a program
 * using virtmem's library would be): `node dist/bench/virtmem-worker.js '<json>'` prints one
 * JSON object with the samples (ms) and its own peak resident memory.
 *
 *   {"mode":"api","stateDir":S,"domain":D,"calls":N,"sizesKiB":[a,b]}
 *     info() x N, setMemory(live) x N alternating sizes, then the raw QMP floor: query-balloon x N
 *     on one connection to the domain's monitor.
 *   {"mode":"scale","stateDir":S,"reps":R}
 *     R x (list() + info() of every domain), R x (list() + memoryStats() of every running domain),
 *     each sweep concurrent, as a program would write it.
 */
import { readFile } from 'node:fs/promises';
import { timed } from './stats.js';
import { performance } from 'node:perf_hooks';
import { NativeDriver as Driver } from '../src/index.js';
import { QmpClient, queryBalloon } from '../src/qmp/index.js';

type Job =
  | { mode: 'api'; stateDir: string; domain: string; calls: number; sizesKiB: [number, number] }
  | { mode: 'scale'; stateDir: string; reps: number };


/** Peak and current resident set of this process, MiB. */
async function memory(): Promise<{ hwmMiB: number; rssMiB: number }> {
  const status = await readFile('/proc/self/status', 'utf8');
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { hwmMiB: kib('VmHWM') / 1024, rssMiB: kib('VmRSS') / 1024 };
}

async function api(job: Extract<Job, { mode: 'api' }>): Promise<Record<string, unknown>> {
  const driver = new Driver({ stateDir: job.stateDir });
  await driver.info(job.domain); // first call loads lazily imported modules
  const info = await timed(job.calls, () => driver.info(job.domain));
  const setmem = await timed(job.calls, (i) => driver.setMemory(job.domain, job.sizesKiB[i % 2]!, { live: true }));
  const client = await QmpClient.connect(driver.paths.run(job.domain).qmp);
  let qmp: number[];
  try {
    await queryBalloon(client);
    qmp = await timed(job.calls, () => queryBalloon(client));
  } finally {
    await client.close();
  }
  return { info, setmem, qmp, ...(await memory()) };
}

async function scale(job: Extract<Job, { mode: 'scale' }>): Promise<Record<string, unknown>> {
  const driver = new Driver({ stateDir: job.stateDir });
  const memlist = await timed(job.reps, async () => {
    const doms = await driver.list();
    return Promise.all(doms.map((d) => driver.info(d.name)));
  });
  let domains = 0;
  const sweep = await timed(job.reps, async () => {
    const doms = (await driver.list()).filter((d) => d.state !== 'shutoff');
    domains = doms.length;
    return Promise.all(doms.map((d) => driver.memoryStats(d.name)));
  });
  return { memlist, sweep, domains, ...(await memory()) };
}

const job = JSON.parse(process.argv[2] ?? '{}') as Job;
const result = job.mode === 'api' ? await api(job) : await scale(job);
process.stdout.write(JSON.stringify(result) + '\n');
