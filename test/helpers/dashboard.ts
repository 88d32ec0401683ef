/**
 * The dashboard's guest card as the browser tests drive it (hooks as src/dashboard/web/app.ts
 * sets them: `setmem-size-ID`, ...; ID is the guest's name, NAME@N on libvirt host N).
 */
import type { Page } from 'playwright-core';

/**
 * Types `sizeMiB` into card `id`'s set-memory form, submits it and waits (bounded by
 * `timeoutMs`) until the card says how the operation ended.
 * @returns the status's state ('succeeded' or 'failed') and its text
 * @throws Error (playwright's timeout) when the card says neither within the bound
 */
export async function resizeFromCard(page: Page, id: string, sizeMiB: number, timeoutMs = 300_000): Promise<{ state: string; text: string }> {
  await page.getByTestId(`setmem-size-${id}`).fill(String(sizeMiB));
  await page.getByTestId(`setmem-unit-${id}`).selectOption('MiB');
  await page.getByTestId(`setmem-submit-${id}`).click();
  await page.waitForFunction((cid) => {
    const s = document.querySelector(`[data-testid="setmem-status-${cid}"]`)?.getAttribute('data-state');
    return s === 'succeeded' || s === 'failed';
  }, id, { timeout: timeoutMs });
  const status = page.getByTestId(`setmem-status-${id}`);
  return { state: (await status.getAttribute('data-state')) ?? '', text: (await status.textContent()) ?? '' };
}
