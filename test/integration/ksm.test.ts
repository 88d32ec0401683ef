/**
 * KSM sharing between two identical guests, as virtmem shows it: two built-in guests (the same
 * kernel and initramfs, so the same pages) with KSM turned on for the test (run=1, fast scanning;
 * the host's knobs are put back afterwards, also when the test fails). KSM's per-process
 * counters of each guest's QEMU (/proc/PID/ksm_stat) appear in dominfo ("KSM sharing:"), in
 * `dominfo --json`, in the daemon's guest document (conforming to docs/openapi.json), and in
 * /metrics as virtmem_guest_ksm_merging_pages, and on the dashboard card's "On the host" lines
 * (Chromium); and they are the kernel's own numbers.
 * Needs root (the KSM knobs), the built-in guest and Debian's Chromium.
 */
import { test, after, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sandbox } from '../helpers/cli.js';
import { notRoot, skipUnlessCi } from '../helpers/skip.js';
import { until } from '../helpers/poll.js';
import { startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { assertConforms } from '../helpers/openapi.js';
import { findDefaultGuest } from '../../src/guest/build.js';
import { daemonRequest, closeDaemonClients } from '../../src/driver/remote/http-client.js';
import { browserMissing, launchBrowser, screenshotDir, type Browser } from '../helpers/browser.js';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';

const KSM = '/sys/kernel/mm/ksm';
const guest = await findDefaultGuest();
const skip = skipUnlessCi(notRoot(), !guest && 'the built-in guest is not built (virtmem guest-build)', !existsSync(`${KSM}/run`) && 'the kernel has no KSM',
  !existsSync('/proc/self/ksm_stat') && !existsSync('/proc/self/ksm_merging_pages') && 'the kernel has no per-process KSM counters (5.19+)', await browserMissing());
const TOKEN = randomBytes(24).toString('hex');
let browser: Browser | null = null;

const KNOBS = ['run', 'pages_to_scan', 'sleep_millisecs'] as const;
const knobsBefore = existsSync(`${KSM}/run`) ? Object.fromEntries(KNOBS.map((k) => [k, readFileSync(`${KSM}/${k}`, 'utf8').trim()])) : {};
const sb = await sandbox();
let d: RunningDaemon | null = null;

after(async () => {
  await browser?.close();
  await d?.stop();
  await closeDaemonClients();
  for (const name of ['ksm-a', 'ksm-b']) await sb.run('destroy', name);
  // The host's KSM as it was: stopped again (its merged pages went with the guests).
  for (const k of KNOBS) if (knobsBefore[k] !== undefined && readFileSync(`${KSM}/${k}`, 'utf8').trim() !== knobsBefore[k]) writeFileSync(`${KSM}/${k}`, knobsBefore[k]!);
  await sb.cleanup();
});

/** The kernel's count for a process (ksm_merging_pages). */
async function mergingPages(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/ksm_stat`, 'utf8').catch(() => null);
  if (stat !== null) return Number(/^ksm_merging_pages (\d+)$/m.exec(stat)?.[1]);
  return Number((await readFile(`/proc/${pid}/ksm_merging_pages`, 'utf8')).trim());
}

describe('KSM merges two identical guests, and virtmem shows it per guest', { skip, timeout: 600_000 }, () => {
  const pids: Record<string, number> = {};
  before(async () => {
    for (const name of ['ksm-a', 'ksm-b']) {
      // Without free page reporting: the guest would hand its free pages back to the host, and the
      // merged pages among them (most are zero pages) would come and go with it.
      await sb.ok('new', name, '--memory', '256M', '--accel', 'tcg', '--no-free-page-reporting');
      await sb.ok('start', name);
      pids[name] = (JSON.parse(await readFile(join(sb.stateDir, 'run', name, 'status.json'), 'utf8')) as { pid: number }).pid;
    }
    const tokenFile = join(sb.stateDir, 'token');
    await writeFile(tokenFile, TOKEN + '\n', { mode: 0o600 });
    d = await startDaemon(sb.stateDir, ['--listen', 'tcp:127.0.0.1:0', '--token-file', tokenFile]);
    // Scan fast, so the two guests' pages merge within seconds.
    writeFileSync(`${KSM}/pages_to_scan`, '5000');
    writeFileSync(`${KSM}/sleep_millisecs`, '10');
    writeFileSync(`${KSM}/run`, '1');
  });

  test('each guest\u2019s QEMU has pages merged, and dominfo, --json, the API and /metrics say how many', async () => {
    for (const name of ['ksm-a', 'ksm-b']) {
      await until(`KSM merged pages of ${name}'s QEMU`, () => mergingPages(pids[name]!), (n) => n > 0, () => {}, 240_000);
    }
    for (const name of ['ksm-a', 'ksm-b']) {
      // dominfo answers from the daemon's view, which reads the kernel's counter once a tick: it
      // may still say 0 pages for a second after the kernel merged the first ones.
      const info = await until(`dominfo of ${name} shows KSM sharing`, () => sb.ok('dominfo', name), (t) => /^KSM sharing: +[1-9]\d* pages \(\d+ KiB\) merged$/m.test(t), () => {}, 60_000);
      const [, pages, kib] = /^KSM sharing: +(\d+) pages \((\d+) KiB\) merged$/m.exec(info)!;
      assert.equal(Number(kib), Number(pages) * 4);
      type Info = { hostMemory: { ksm: { mergingPages: number; mergingKiB: number }; backing: { mergeable: boolean } } };
      const json = await until(`dominfo --json of ${name} has KSM's pages`, async () => JSON.parse(await sb.ok('dominfo', name, '--json')) as Info,
        (j) => j.hostMemory.ksm.mergingPages > 0, () => {}, 60_000);
      assert.equal(json.hostMemory.ksm.mergingKiB, json.hostMemory.ksm.mergingPages * 4);
      assert.equal(json.hostMemory.backing.mergeable, true);
      // The daemon's view follows the kernel's counter (read every tick).
      const doc = await until(`the API's ${name} document has KSM's pages`, async () => (await daemonRequest({ socketPath: d!.socketPath }, 'GET', `/api/v1/domains/${name}`)).body as { hostMemory?: { ksm: { mergingPages: number; mergingBytes: number } | null } },
        (b) => (b.hostMemory?.ksm?.mergingPages ?? 0) > 0, () => {}, 30_000);
      assertConforms('GET', '/domains/{name}', 200, doc);
      assert.equal(doc.hostMemory!.ksm!.mergingBytes, doc.hostMemory!.ksm!.mergingPages * 4096);
      const kernel = await mergingPages(pids[name]!);
      assert.ok(Math.abs(doc.hostMemory!.ksm!.mergingPages - kernel) <= kernel, `the API (${doc.hostMemory!.ksm!.mergingPages}) and the kernel (${kernel}) agree within a scan's change`);
    }
    const metrics = (await daemonRequest({ socketPath: d!.socketPath }, 'GET', '/metrics')).text;
    for (const name of ['ksm-a', 'ksm-b']) {
      assert.match(metrics, new RegExp(`^virtmem_guest_ksm_merging_pages\\{domain="${name}"\\} [1-9]\\d*$`, 'm'));
      assert.match(metrics, new RegExp(`^virtmem_guest_memory_mergeable\\{domain="${name}"\\} 1$`, 'm'));
    }
    assert.match(metrics, /^# TYPE virtmem_guest_ksm_merging_bytes gauge$/m);
  });

  test('the dashboard card says what KSM merged of each guest, and how its memory is held', async () => {
    browser = await launchBrowser({ width: 1280, height: 1000 });
    const page = browser.page;
    await page.goto(`http://127.0.0.1:${d!.port}/?token=${TOKEN}`, { timeout: 60_000 });
    for (const name of ['ksm-a', 'ksm-b']) {
      await page.waitForFunction((n) => /^\d+ pages merged \(.+\)$/.test(document.querySelector(`[data-testid="hm-ksm-${n}"]`)?.textContent ?? ''), name, { timeout: 60_000 });
      assert.equal(await page.getByTestId(`hm-backing-${name}`).textContent(), 'base pages');
      assert.equal(await page.getByTestId(`hm-placement-${name}`).textContent(), "host's default");
      assert.equal(await page.getByTestId(`hm-cgroup-${name}`).textContent(), 'none of its own');
    }
    await page.screenshot({ path: join(screenshotDir(), 'dashboard-ksm.png'), fullPage: true });
    assert.deepEqual(browser.problems, []);
  });
});
