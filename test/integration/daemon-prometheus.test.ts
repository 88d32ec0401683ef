/**
 * Debian's real Prometheus server scrapes virtmemd's /metrics on loopback TCP (with the token)
 * and a guest's memory is read back through Prometheus's query API (issue 9, part 4). Without
 * the `prometheus` binary this test fails: `scripts/setup.sh --dev` installs it.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sandbox } from '../helpers/cli.js';
import { startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { daemonRequest, closeDaemonClients } from '../../src/driver/remote/http-client.js';

const MiB = 1024 * 1024;
const sb = await sandbox();
let d: RunningDaemon | null = null;
let prom: ChildProcess | null = null;
let promDir = '';
after(async () => {
  closeDaemonClients();
  if (prom && prom.exitCode === null) {
    const exited = new Promise((r) => prom!.once('exit', r));
    prom.kill('SIGTERM');
    const t = setTimeout(() => prom!.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(t);
  }
  await d?.stop();
  await sb.cleanup();
  if (promDir) await rm(promDir, { recursive: true, force: true });
});

/** A free loopback port (closed again before Prometheus takes it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

before(async () => {
  await sb.ok('new', 'pm', '--accel', 'tcg', '--memory', '512M');
  await sb.ok('start', 'pm');
  d = await startDaemon(sb.stateDir, ['--listen', 'tcp:127.0.0.1:0']);
});

test('Prometheus scrapes /metrics and answers a query for a guest metric', async () => {
  const port = await freePort();
  promDir = await mkdtemp(join(tmpdir(), 'prom-'));
  const tokenFile = join(sb.stateDir, 'virtmemd.token');
  const config = [
    'global:',
    '  scrape_interval: 1s',
    '  scrape_timeout: 1s',
    'scrape_configs:',
    '  - job_name: virtmem',
    '    authorization:',
    `      credentials_file: ${tokenFile}`,
    '    static_configs:',
    `      - targets: ['127.0.0.1:${d!.port}']`,
    '',
  ].join('\n');
  await writeFile(join(promDir, 'prometheus.yml'), config);
  let log = '';
  // spawn fails with ENOENT when Prometheus is missing: the test fails, it does not skip.
  prom = spawn('prometheus', [
    `--config.file=${join(promDir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(promDir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  const spawnError = new Promise<never>((_, reject) => prom!.once('error', (err) => reject(new Error(`cannot run prometheus (apt-get install prometheus; scripts/setup.sh --dev): ${err.message}`))));
  spawnError.catch(() => {});
  prom.stderr!.setEncoding('utf8').on('data', (c: string) => { log += c; });

  const prometheus = { host: '127.0.0.1', port };
  const deadline = Date.now() + 180_000;
  let value: number | null = null;
  let last = '';
  while (value === null) {
    assert.ok(Date.now() < deadline, `no virtmem_guest_memory_bytes from Prometheus within 180 s; last answer: ${last}\nprometheus log:\n${log.slice(-3000)}`);
    assert.equal(prom.exitCode, null, `prometheus exited: ${log.slice(-3000)}`);
    await Promise.race([new Promise((r) => setTimeout(r, 500)), spawnError]);
    const r = await daemonRequest(prometheus, 'GET', `/api/v1/query?query=${encodeURIComponent('virtmem_guest_memory_bytes{domain="pm"}')}`).catch((err: Error) => ({ status: 0, text: err.message, body: null }));
    last = r.text;
    const result = (r.body as { data?: { result?: Array<{ metric: Record<string, string>; value: [number, string] }> } } | null)?.data?.result;
    if (r.status === 200 && result && result.length) {
      assert.equal(result.length, 1);
      assert.equal(result[0]!.metric.job, 'virtmem');
      assert.equal(result[0]!.metric.domain, 'pm');
      value = Number(result[0]!.value[1]);
    }
  }
  assert.equal(value, 512 * MiB);
  // The scrape target is healthy (the token and Host check let Prometheus in).
  const targets = await daemonRequest(prometheus, 'GET', '/api/v1/targets');
  const active = (targets.body as { data: { activeTargets: Array<{ health: string; lastError: string }> } }).data.activeTargets;
  assert.equal(active[0]!.health, 'up', active[0]!.lastError);
  // And Prometheus sees what the daemon serves: the page itself names the same number.
  const token = (await readFile(tokenFile, 'utf8')).trim();
  const page = await daemonRequest({ host: '127.0.0.1', port: d!.port!, token }, 'GET', '/metrics');
  assert.match(String(page.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  assert.match(page.text, /^virtmem_guest_memory_bytes\{domain="pm"\} 536870912$/m);
});
