/**
 * The dashboard serves a libvirt host's guest like virtmem's own, in a real browser (Debian's
 * Chromium, headless) against the real daemon started with `--hosts` naming this machine's
 * libvirtd (qemu:///system): a TCG guest defined and started there (balloon with statistics
 * every second, a virtio-mem device) gets its card under its host's group, beside a guest of
 * virtmem's own with the same name; its chart follows a `virsh setmem` made outside the page; a
 * resize from its card's form reaches the target (virsh dominfo agrees) while the same-named
 * local guest stays as it was. Its history and policy come from the host's paths.
 * Screenshots go to $VIRTMEM_SCREENSHOTS (docs/ holds the committed ones), or to a temporary
 * folder (see screenshotDir).
 * Needs root, a running libvirtd and the built-in guest (CI: scripts/setup.sh --dev).
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { sandbox, parseDominfo } from '../helpers/cli.js';
import { startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { browserMissing, launchBrowser, screenshotDir, type Browser } from '../helpers/browser.js';
import { resizeFromCard } from '../helpers/dashboard.js';
import { libvirtGuestXml } from '../helpers/libvirt-guest.js';
import { removeDomains, virsh } from '../helpers/virsh.js';
import { skipUnlessCi, notRoot, libvirtdMissing, builtInGuestMissing } from '../helpers/skip.js';

const U = 'qemu:///system';
const skip = skipUnlessCi(libvirtdMissing(), notRoot(),
  builtInGuestMissing(), await browserMissing());

const SHOTS = screenshotDir();
const MiB = 1024 * 1024;
/** One name for both guests: the libvirt one in qemu:///system, virtmem's own in the sandbox. */
const NAME = `vmdash-${randomBytes(3).toString('hex')}`;
/** The libvirt guest's hooks: its host is the first (index 0) of the hosts file. */
const LV = `${NAME}@0`;
const ENC = encodeURIComponent(U);

const sb = await sandbox();
const TOKEN = randomBytes(24).toString('hex');
let daemon: RunningDaemon | null = null;
let browser: Browser | null = null;
let defined = false;
after(async () => {
  await browser?.close();
  await daemon?.stop();
  if (defined) {
    const left = await removeDomains(U, [NAME]);
    assert.deepEqual(left, [], `domain ${NAME} still defined in ${U}`);
  }
  await sb.cleanup();
});

/** Used memory (KiB) as libvirt's own virsh reports it for the libvirt guest. */
const virshUsedKiB = async (): Promise<number> => {
  const r = await virsh(U, 'dominfo', NAME);
  assert.equal(r.code, 0, r.stderr);
  return Number(/^Used memory: +(\d+) KiB$/m.exec(r.stdout)?.[1]);
};

/** The chart legend's layers of card `id` (boot in guest, virtio-mem, balloon-held), bytes joined by spaces. */
const layers = (id: string): Promise<string> => browser!.page.evaluate((cid) => ['boot', 'virtio-mem', 'balloon-held']
  .map((k) => document.querySelector(`[data-testid="chart-${cid}-legend-${k}"]`)?.getAttribute('data-bytes')).join(' '), id);

/** Waits (bounded) until card `id`'s chart shows `want` (as `layers`), failing with what it shows. */
async function layersReach(id: string, want: string, what: string): Promise<void> {
  await browser!.page.waitForFunction(([cid, w]) => ['boot', 'virtio-mem', 'balloon-held']
    .map((k) => document.querySelector(`[data-testid="chart-${cid}-legend-${k}"]`)?.getAttribute('data-bytes')).join(' ') === w, [id, want] as const, { timeout: 120_000 })
    .catch(async (err: unknown) => { throw new Error(`${what}: chart layers (boot, virtio-mem, balloon-held) ${await layers(id)}, expected ${want}`, { cause: err }); });
}

describe('dashboard: a libvirt host\'s guest', { skip }, () => {
  let url = '';
  /** Every API path the page asked for. */
  const requests: string[] = [];

  before(async () => {
    // virtmem's own guest first (its boot under TCG overlaps libvirt's define).
    await sb.ok('new', NAME, '--accel', 'tcg', '--memory', '256M', '--max-memory', '512M');
    await sb.ok('start', NAME);
    const xml = join(sb.stateDir, 'libvirt-guest.xml');
    await writeFile(xml, libvirtGuestXml(NAME, { memoryKiB: 262144, currentKiB: 262144, virtioMemKiB: 262144, cmdline: 'memhp_default_state=online_movable' }));
    defined = true; // from here on after() removes it, also when define fails half-way
    const def = await virsh(U, 'define', xml);
    assert.equal(def.code, 0, def.stderr);
    const start = await virsh(U, 'start', NAME);
    assert.equal(start.code, 0, start.stderr);
    const hosts = join(sb.stateDir, 'hosts');
    await writeFile(hosts, `${U}\n`);
    const tokenFile = join(sb.stateDir, 'token');
    await writeFile(tokenFile, TOKEN + '\n', { mode: 0o600 });
    // --policy off: this libvirtd runs other tests' guests; this daemon must never resize them.
    daemon = await startDaemon(sb.stateDir, ['--hosts', hosts, '--listen', 'tcp:127.0.0.1:0', '--token-file', tokenFile, '--policy', 'off']);
    assert.ok(daemon.port, 'the daemon listens on TCP');
    url = `http://127.0.0.1:${daemon.port}`;
    browser = await launchBrowser({ width: 1280, height: 1400 });
    browser.page.on('request', (r) => { const p = new URL(r.url()).pathname; if (p.startsWith('/api/')) requests.push(p); });
  });

  test('its card is under its host, beside the same-named guest of virtmem\'s own, with its chart, form and policy', { timeout: 300_000 }, async () => {
    const page = browser!.page;
    await page.goto(`${url}/?token=${TOKEN}`, { timeout: 60_000 });
    const group = page.getByTestId('libvirt-host-0');
    await group.waitFor({ timeout: 60_000 });
    assert.equal(await group.getAttribute('data-uri'), U);
    await page.waitForFunction(() => document.querySelector('[data-testid="libvirt-host-state-0"]')?.textContent === 'up', undefined, { timeout: 60_000 });
    // Two cards, one name: the libvirt guest's in its host's group, virtmem's own with the host card.
    const card = group.getByTestId(`guest-${LV}`);
    await card.waitFor({ timeout: 60_000 });
    await page.getByTestId('guests').getByTestId(`guest-${NAME}`).waitFor({ timeout: 60_000 });
    assert.equal(await card.locator('h2').textContent(), NAME);
    assert.equal(await page.getByTestId(`on-host-${LV}`).textContent(), `on ${U}`);
    assert.equal(await page.getByTestId(`on-host-${NAME}`).isVisible(), false, 'virtmem\'s own guest names no host');
    assert.equal(await page.getByTestId(`state-${LV}`).textContent(), 'running');
    // Its chart: 256 MiB of boot RAM in the guest, nothing plugged, nothing held back.
    await layersReach(LV, `${256 * MiB} 0 0`, 'boot');
    assert.equal(await page.getByTestId(`max-${LV}`).getAttribute('data-bytes'), String(512 * MiB));
    // The guest's own statistics (balloon period 1 s, through libvirt) and QEMU's RSS as libvirt reports them.
    await page.waitForFunction((id) => Number(document.querySelector(`[data-testid="available-${id}"]`)?.getAttribute('data-bytes')) > 0
      && Number(document.querySelector(`[data-testid="rss-${id}"]`)?.getAttribute('data-bytes')) > 0, LV, { timeout: 120_000 });
    // Translation reads guest RAM through virtmem's own QEMU: not on a libvirt guest's card.
    assert.equal(await page.getByTestId(`translate-form-${LV}`).count(), 0);
    assert.equal(await page.getByTestId(`translate-form-${NAME}`).count(), 1);
    // Its policy section, from its host's path (this daemon runs no policy).
    await page.waitForFunction((id) => document.querySelector(`[data-testid="policy-state-${id}"]`)?.getAttribute('data-state') === 'off', LV, { timeout: 60_000 });
    assert.match((await page.getByTestId(`policy-state-${LV}`).textContent()) ?? '', /daemon runs no policy/);
    const own = `/api/v1/hosts/${ENC}/domains/${NAME}`;
    assert.ok(requests.includes(`${own}/history`), `history from the host's path: ${requests.join(' ')}`);
    assert.ok(requests.includes(`${own}/policy`), `policy from the host's path: ${requests.join(' ')}`);
    assert.ok(requests.includes(`/api/v1/domains/${NAME}/history`), 'and the local guest\'s from its own');
    assert.deepEqual(browser!.problems, []);
  });

  test('its chart follows a virsh setmem made outside the page', { timeout: 300_000 }, async () => {
    const r = await virsh(U, 'setmem', NAME, '192M', '--live');
    assert.equal(r.code, 0, r.stderr);
    // The balloon takes 64 MiB back (the guest's driver needs a moment: bounded wait).
    await layersReach(LV, `${192 * MiB} 0 ${64 * MiB}`, 'after virsh setmem 192M');
    await browser!.page.waitForFunction((id) => document.querySelector(`[data-testid="total-${id}"]`)?.getAttribute('data-bytes') === String(192 * 1024 * 1024), LV, { timeout: 60_000 });
    assert.equal(await virshUsedKiB(), 192 * 1024);
  });

  test('a resize from its card reaches the target through balloon and virtio-mem; the same-named local guest stays', { timeout: 600_000 }, async () => {
    const page = browser!.page;
    const end = await resizeFromCard(page, LV, 384);
    assert.equal(end.state, 'succeeded', end.text);
    const bar = page.getByTestId(`setmem-progress-${LV}`);
    assert.equal(await bar.evaluate((e) => (e as HTMLProgressElement).value === (e as HTMLProgressElement).max), true);
    assert.equal(await bar.getAttribute('data-actual-bytes'), String(384 * MiB));
    assert.ok(requests.includes(`/api/v1/hosts/${ENC}/domains/${NAME}/memory`), 'the resize went to the host\'s path');
    assert.equal(await virshUsedKiB(), 384 * 1024, 'virsh dominfo agrees');
    // All boot RAM back in the guest, 128 MiB plugged through virtio-mem.
    await layersReach(LV, `${256 * MiB} ${128 * MiB} 0`, 'after the resize to 384 MiB');
    assert.equal(await page.getByTestId(`total-${LV}`).getAttribute('data-bytes'), String(384 * MiB));
    // virtmem's own guest of the same name did not move.
    assert.equal(await page.getByTestId(`total-${NAME}`).getAttribute('data-bytes'), String(256 * MiB));
    assert.equal(await page.getByTestId(`setmem-status-${NAME}`).isVisible(), false, 'its form did nothing');
    assert.equal(parseDominfo(await sb.ok('dominfo', NAME)).get('Used memory'), `${256 * 1024} KiB`);
    await page.screenshot({ path: join(SHOTS, 'dashboard-libvirt.png'), fullPage: true });
    assert.deepEqual(browser!.problems, []);
  });
});
