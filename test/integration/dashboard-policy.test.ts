/**
 * The dashboard explains the automatic memory policy, in a real browser (Debian's Chromium,
 * headless) against the real daemon running the policy on a real, idle guest: the guest's card
 * says the policy manages it and shows its floor, then the last decision with the reason the
 * API gives, and a later decision arrives on the open page through the event stream.
 * Screenshots go to $VIRTMEM_SCREENSHOTS (docs/ holds the committed ones), or to a temporary
 * folder (see screenshotDir).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { sandbox } from '../helpers/cli.js';
import { startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { browserSkip, launchBrowser, screenshotDir, type Browser } from '../helpers/browser.js';
import { until } from '../helpers/poll.js';

const SHOTS = screenshotDir();
const MiB = 1024 * 1024;
const DOM = 'dashpol';
const skip = await browserSkip();

const sb = await sandbox();
/** The daemon's token: TCP listeners need it (the page gets it as a cookie from /?token=...). */
const TOKEN = randomBytes(24).toString('hex');
let daemon: RunningDaemon | null = null;
let browser: Browser | null = null;
after(async () => {
  await browser?.close();
  await daemon?.stop();
  await sb.cleanup();
});

interface Decision { at: string; action: string; reason: string }

describe('dashboard: the policy section', { skip }, () => {
  let url = '';
  /** Every request the page made for the guest's policy document. */
  const policyFetches: string[] = [];

  /** What GET /api/v1/domains/DOM/policy says the policy did last (null: nothing yet). */
  async function apiLast(): Promise<Decision | null> {
    const res = await fetch(`${url}/api/v1/domains/${DOM}/policy`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: AbortSignal.timeout(10_000) });
    assert.equal(res.status, 200);
    return ((await res.json()) as { last: Decision | null }).last;
  }

  /** The last decision as the card shows it. */
  const cardLast = (): Promise<Decision> => browser!.page.evaluate((dom) => {
    const text = (hook: string): string => document.querySelector(`[data-testid="${hook}-${dom}"]`)?.textContent ?? '';
    const d = document.querySelector<HTMLElement>(`[data-testid="policy-decision-${dom}"]`);
    return { at: d?.dataset.at ?? '', action: d?.dataset.action ?? '', reason: text('policy-reason') };
  }, DOM);

  /** Waits (bounded) until the card shows the decision the API holds, and returns it. */
  const cardAgreesWithApi = (what: string, also: (d: Decision) => boolean): Promise<{ card: Decision; api: Decision | null }> =>
    until(what, async () => ({ card: await cardLast(), api: await apiLast() }),
      ({ card, api }) => api !== null && card.at === api.at && card.action === api.action && card.reason === api.reason && also(card), undefined, 180_000);

  before(async () => {
    await sb.ok('new', DOM, '--accel', 'tcg', '--memory', '512M', '--max-memory', '1G');
    await sb.ok('policy', 'set', DOM, '--enable', '--floor', '300M');
    await sb.ok('start', DOM);
    await sb.ok('dommemstat', DOM, '--period', '1');
    const tokenFile = join(sb.stateDir, 'token');
    await writeFile(tokenFile, TOKEN + '\n', { mode: 0o600 });
    daemon = await startDaemon(sb.stateDir, ['--listen', 'tcp:127.0.0.1:0', '--token-file', tokenFile, '--policy', 'per-guest']);
    assert.ok(daemon.port, `the daemon says where it listens: ${daemon.stderr()}`);
    url = `http://127.0.0.1:${daemon.port}`;
    browser = await launchBrowser({ width: 1280, height: 1000 });
    browser.page.on('request', (r) => { if (new URL(r.url()).pathname === `/api/v1/domains/${DOM}/policy`) policyFetches.push(r.url()); });
  });

  test('the card says the policy manages the guest, with its 300 MiB floor', async () => {
    const page = browser!.page;
    await page.goto(`${url}/?token=${TOKEN}`, { timeout: 60_000 });
    await page.getByTestId(`guest-${DOM}`).waitFor({ timeout: 60_000 });
    const state = page.getByTestId(`policy-state-${DOM}`);
    await page.waitForFunction((dom) => document.querySelector(`[data-testid="policy-state-${dom}"]`)?.getAttribute('data-state') !== 'loading', DOM, { timeout: 60_000 });
    assert.equal(await state.getAttribute('data-state'), 'on', (await state.textContent()) ?? '');
    assert.equal(await state.textContent(), 'on (per-guest, virtmem)');
    const bounds = page.getByTestId(`policy-bounds-${DOM}`);
    assert.equal(await bounds.getAttribute('data-floor-bytes'), String(300 * MiB));
    assert.match((await bounds.textContent()) ?? '', /^floor 300 MiB · ceiling /);
  });

  test('the last decision on the card is the one the API explains, reason and all', async () => {
    const page = browser!.page;
    // The idle guest is taken toward its floor: a reclaim, then holds within the band.
    const { card } = await cardAgreesWithApi('the card shows the API\'s last decision', (d) => /reclaim toward use|within band/.test(d.reason));
    const decision = (await page.getByTestId(`policy-decision-${DOM}`).textContent()) ?? '';
    assert.match(decision, card.action === 'hold' ? /^held$/ : /^(resize|failed) \d[\d.]* [KMG]iB → \d[\d.]* [KMG]iB$/);
    assert.match((await page.getByTestId(`policy-ago-${DOM}`).textContent()) ?? '', /^(just now|\d+ (s|min) ago)$/);
    // The reason is text, never markup.
    assert.equal(await page.getByTestId(`policy-reason-${DOM}`).evaluate((e) => e.childElementCount), 0);
    await page.getByTestId(`guest-${DOM}`).screenshot({ path: join(SHOTS, 'dashboard-policy.png') });
    assert.deepEqual(browser!.problems, []);
  });

  test('a later decision reaches the open page through the event stream', async () => {
    const before = await cardLast();
    // Give the guest its boot RAM back: the policy takes it toward the floor again, a new decision.
    await sb.ok('setmem', DOM, '512M');
    const { card } = await cardAgreesWithApi('a new decision on the card', (d) => d.at > before.at);
    assert.ok(card.reason.length > 10, card.reason);
    assert.equal(policyFetches.length, 1, 'the page read the policy document once, when the card appeared; the rest came from the events');
    assert.deepEqual(browser!.problems, []);
  });
});
