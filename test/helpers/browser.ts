/**
 * Test harness: Debian's Chromium, headless, driven by playwright-core (which never downloads a
 * browser). A fresh profile per launch, nothing that reaches the network on its own, and the
 * page's errors collected so a test can assert there were none.
 */
import { mkdtempSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { access } from 'node:fs/promises';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { skipUnlessCi } from './skip.js';

export const CHROMIUM = process.env.VIRTMEM_CHROMIUM ?? '/usr/bin/chromium';

export interface Browser {
  page: Page;
  /** Uncaught page errors, failed requests and console errors, in order. */
  problems: string[];
  close(): Promise<void>;
}

/** Why the browser tests cannot run here (no Chromium), or false. */
export async function browserMissing(): Promise<string | false> {
  try {
    await access(CHROMIUM);
    return false;
  } catch {
    return `${CHROMIUM} not found (install Debian's chromium: bash scripts/setup.sh --dev)`;
  }
}

/**
 * Why a browser test must skip here (no Chromium), or false.
 * @throws Error under CI, which installs everything these tests need: a skip there would hide a broken setup.
 */
export async function browserSkip(): Promise<string | false> {
  return skipUnlessCi(await browserMissing());
}

/**
 * Where a test's screenshots go: $VIRTMEM_SCREENSHOTS (docs/ holds the committed ones), or a
 * new temporary folder, so a test run never rewrites tracked files.
 */
export function screenshotDir(): string {
  return process.env.VIRTMEM_SCREENSHOTS ?? mkdtempSync(join(tmpdir(), 'vm-shots-'));
}

/** Launches Chromium with a new profile and opens one page of `width`x`height`. */
export async function launchBrowser(opts: { width?: number; height?: number } = {}): Promise<Browser> {
  const profile = await mkdtemp(join(tmpdir(), 'vm-chromium-'));
  let ctx: BrowserContext;
  try {
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 120_000,
      viewport: { width: opts.width ?? 1280, height: opts.height ?? 900 },
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  } catch (err) {
    await rm(profile, { recursive: true, force: true });
    throw err;
  }
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
  // The page abandons a refresh when a newer one starts (ERR_ABORTED): that is not a problem.
  page.on('requestfailed', (r) => {
    const why = r.failure()?.errorText ?? '';
    if (why !== 'net::ERR_ABORTED') problems.push(`request failed: ${r.url()} ${why}`);
  });
  return {
    page,
    problems,
    async close() {
      await ctx.close().catch(() => undefined);
      await rm(profile, { recursive: true, force: true });
    },
  };
}
