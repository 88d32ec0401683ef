/**
 * The dashboard in a real browser (Debian's Chromium, headless, through playwright-core) against
 * the real daemon and a real guest: the page shows the guest; a `setmem` done from the CLI shows
 * up in the chart; a resize started from the page's form reaches its target (checked with the
 * CLI's dominfo too); the translation chain of a kernel address (the vCPU's RIP) renders.
 * Screenshots go to $VIRTMEM_SCREENSHOTS (docs/ holds the committed ones), or to a temporary
 * folder (see screenshotDir).
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sandbox, parseDominfo, BIN } from '../helpers/cli.js';
import { browserSkip, launchBrowser, screenshotDir, type Browser } from '../helpers/browser.js';
import { resizeFromCard } from '../helpers/dashboard.js';

const SHOTS = screenshotDir();
const MiB = 1024 * 1024;
const DOM = 'dash';
const skip = await browserSkip();

const sb = await sandbox();
let daemon: ChildProcess | null = null;
let browser: Browser | null = null;
after(async () => {
  await browser?.close();
  if (daemon && daemon.exitCode === null) {
    const exited = new Promise((r) => daemon!.once('exit', r));
    daemon.kill('SIGTERM');
    const t = setTimeout(() => daemon!.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  }
  await sb.cleanup();
});

/** The daemon's token: TCP listeners need it (the page gets it as a cookie from /?token=...). */
const TOKEN = randomBytes(24).toString('hex');

/** Starts `virtmem daemon` on a free loopback port; resolves with its base URL once it listens. */
async function startDaemon(): Promise<string> {
  const tokenFile = join(sb.stateDir, 'token');
  await writeFile(tokenFile, TOKEN + '\n', { mode: 0o600 });
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['--state-dir', sb.stateDir, 'daemon', '--listen', 'tcp:127.0.0.1:0', '--token-file', tokenFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    daemon = child;
    let out = '';
    const bound = setTimeout(() => { reject(new Error(`the daemon did not say where it listens within 60 s; output: ${out}`)); }, 60_000);
    const onData = (b: Buffer): void => {
      out += b.toString();
      const m = /http:\/\/127\.0\.0\.1:\d+/.exec(out);
      if (m) { clearTimeout(bound); resolve(m[0]); }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => { clearTimeout(bound); reject(new Error(`the daemon exited (${code}) before listening; output: ${out}`)); });
  });
}

const usedKiB = async (): Promise<number> => Number(/^(\d+) KiB$/.exec(parseDominfo(await sb.ok('dominfo', DOM)).get('Used memory') ?? '')?.[1]);

describe('dashboard', { skip }, () => {
  let url = '';
  before(async () => {
    await sb.ok('new', DOM, '--accel', 'tcg', '--memory', '512M', '--max-memory', '2G');
    await sb.ok('start', DOM);
    await sb.ok('dommemstat', DOM, '--period', '1');
    url = await startDaemon();
    browser = await launchBrowser({ width: 1280, height: 1000 });
  });

  test('the page loads and shows the host and the guest', async () => {
    const page = browser!.page;
    await page.goto(`${url}/?token=${TOKEN}`, { timeout: 60_000 });
    assert.equal(new URL(page.url()).search, '', 'the token does not stay in the address bar');
    await page.getByTestId(`guest-${DOM}`).waitFor({ timeout: 60_000 });
    assert.equal(await page.getByTestId(`guest-${DOM}`).locator('h2').textContent(), DOM);
    assert.equal(await page.getByTestId(`state-${DOM}`).textContent(), 'running');
    // The boot RAM layer of the chart's legend shows the guest's 512 MiB.
    await page.waitForFunction((dom) => document.querySelector(`[data-testid="chart-${dom}-legend-boot"]`)?.getAttribute('data-bytes') === String(512 * 1024 * 1024), DOM, { timeout: 60_000 });
    assert.match((await page.getByTestId('host-memavailable').textContent()) ?? '', /\d/);
    assert.deepEqual(browser!.problems, []);
  });

  test('a setmem from the CLI shows up in the chart', async () => {
    const page = browser!.page;
    await sb.ok('setmem', DOM, '1G', '--wait', '--timeout', '240');
    // Bounded wait for the page's next refresh to bring the new layers.
    await page.waitForFunction((dom) => document.querySelector(`[data-testid="chart-${dom}-legend-virtio-mem"]`)?.getAttribute('data-bytes') === String(512 * 1024 * 1024), DOM, { timeout: 60_000 });
    assert.equal(await page.getByTestId(`total-${DOM}`).getAttribute('data-bytes'), String(1024 * MiB));
    assert.equal(await page.getByTestId(`total-${DOM}`).textContent(), '1.00 GiB');
    await page.screenshot({ path: join(SHOTS, 'dashboard.png'), fullPage: true });
  });

  test('a resize started from the page reaches its target', async () => {
    const page = browser!.page;
    const end = await resizeFromCard(page, DOM, 1536);
    assert.equal(end.state, 'succeeded', end.text);
    const bar = page.getByTestId(`setmem-progress-${DOM}`);
    assert.equal(await bar.evaluate((e) => (e as HTMLProgressElement).value === (e as HTMLProgressElement).max), true);
    assert.equal(await bar.getAttribute('data-actual-bytes'), String(1536 * MiB));
    assert.equal(await usedKiB(), 1536 * 1024, 'dominfo agrees');
    await page.waitForFunction((dom) => document.querySelector(`[data-testid="total-${dom}"]`)?.getAttribute('data-bytes') === String(1536 * 1024 * 1024), DOM, { timeout: 60_000 });
    await page.screenshot({ path: join(SHOTS, 'dashboard-setmem.png'), fullPage: true });
  });

  test('the page refuses a size that is not a number, and nothing changes', async () => {
    const page = browser!.page;
    await page.getByTestId(`setmem-size-${DOM}`).fill('lots');
    await page.getByTestId(`setmem-submit-${DOM}`).click();
    assert.match((await page.getByTestId(`setmem-status-${DOM}`).textContent()) ?? '', /'lots' is not a size/);
    assert.equal(await page.getByTestId(`setmem-progress-${DOM}`).isVisible(), false, 'no progress bar for a refused input');
    assert.equal(await usedKiB(), 1536 * 1024);
  });

  test('the translation chain of the vCPU\'s RIP renders', async () => {
    const page = browser!.page;
    const regs = await sb.ok('qemu-monitor-command', DOM, '--hmp', 'info registers');
    const rip = /RIP=([0-9a-f]{16})/.exec(regs)?.[1];
    assert.ok(rip, `no RIP in: ${regs}`);
    await page.getByTestId(`translate-address-${DOM}`).fill(`0x${rip}`);
    await page.getByTestId(`translate-submit-${DOM}`).click();
    const chain = page.getByTestId(`translate-${DOM}-chain`);
    await chain.waitFor({ timeout: 120_000 });
    assert.equal(await page.getByTestId(`translate-${DOM}-gva`).locator('.step-main').textContent(), `0x${rip}`);
    // Every level from the top table to the leaf, then GPA, HVA and HPA (the tests run as root).
    const levels = await chain.locator('[data-testid^="translate-dash-level-"]').evaluateAll((els) => els.map((e) => e.getAttribute('data-testid')!.replace('translate-dash-level-', '')));
    assert.ok(levels.length >= 2 && ['PML5', 'PML4'].includes(levels[0]!), `levels: ${levels.join(' ')}`);
    assert.ok(['PT', 'PD', 'PDPT'].includes(levels[levels.length - 1]!), `levels: ${levels.join(' ')}`);
    const cli = JSON.parse(await sb.ok('translate', DOM, `0x${rip}`, '--json')) as { gpa: string; hva: string; hpa: string };
    assert.equal(await page.getByTestId(`translate-${DOM}-gpa`).locator('.step-main').textContent(), cli.gpa, 'the page shows the GPA the CLI finds');
    assert.match((await page.getByTestId(`translate-${DOM}-hva`).locator('.step-main').textContent()) ?? '', /^0x[0-9a-f]+$/);
    assert.match((await page.getByTestId(`translate-${DOM}-hpa`).locator('.step-main').textContent()) ?? '', /^0x[0-9a-f]+$/);
    await page.getByTestId(`guest-${DOM}`).screenshot({ path: join(SHOTS, 'dashboard-translate.png') });
    assert.deepEqual(browser!.problems, []);
  });
  test('a shrink below boot RAM from the page shows the balloon holding memory back', async () => {
    const page = browser!.page;
    const end = await resizeFromCard(page, DOM, 384);
    assert.equal(end.state, 'succeeded', end.text);
    assert.equal(await usedKiB(), 384 * 1024, 'dominfo agrees');
    // virtio-mem is unplugged first, then the balloon takes 128 MiB of the 512 MiB boot RAM. The
    // daemon's model follows QEMU's events (virtio-mem's are rate-limited to ~1/s), so wait
    // (bounded) for all three layers to show the end state.
    const layers = (): Promise<string> => page.evaluate((dom) => ['boot', 'virtio-mem', 'balloon-held']
      .map((k) => document.querySelector(`[data-testid="chart-${dom}-legend-${k}"]`)?.getAttribute('data-bytes')).join(' '), DOM);
    const want = `${384 * MiB} 0 ${128 * MiB}`;
    await page.waitForFunction(([dom, w]) => ['boot', 'virtio-mem', 'balloon-held']
      .map((k) => document.querySelector(`[data-testid="chart-${dom}-legend-${k}"]`)?.getAttribute('data-bytes')).join(' ') === w, [DOM, want] as const, { timeout: 60_000 })
      .catch(async (err: unknown) => { throw new Error(`chart layers (boot, virtio-mem, balloon-held): ${await layers()}, expected ${want}`, { cause: err }); });
    // The guest's own report catches up (bounded): what it has available fits in what it has.
    await page.waitForFunction((dom) => {
      const avail = Number(document.querySelector(`[data-testid="available-${dom}"]`)?.getAttribute('data-bytes'));
      return avail > 0 && avail <= 384 * 1024 * 1024;
    }, DOM, { timeout: 60_000 });
    await page.screenshot({ path: join(SHOTS, 'dashboard-shrink.png'), fullPage: true });
    assert.deepEqual(browser!.problems, []);
  });
});
