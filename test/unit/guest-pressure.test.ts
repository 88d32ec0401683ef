/** The guest's memory-pressure feed: line parsing, stall share, and the reader against a socket. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestPressureFeed, parsePsiLine, stallPct } from '../../src/driver/native/guest-pressure.js';
import type { GuestPressure } from '../../src/driver/view.js';

const LINE = 'psi some avg10=1.50 avg60=0.20 avg300=0.05 total=250000 full avg10=0.00 avg60=0.00 avg300=0.00 total=1000';

test('a feed line gives the totals and the 10 s average; anything else is ignored', () => {
  assert.deepEqual(parsePsiLine(LINE), { someAvg10: 1.5, someTotalUs: 250000, fullTotalUs: 1000 });
  assert.deepEqual(parsePsiLine(`${LINE}\r`), { someAvg10: 1.5, someTotalUs: 250000, fullTotalUs: 1000 });
  for (const bad of ['', 'VIRTMEM-GUEST-READY', LINE.slice(0, 40), LINE.replace('total=250000', 'total=-1'), `x${LINE}`]) {
    assert.equal(parsePsiLine(bad), null, bad);
  }
});

test('stall share: stalled microseconds over wall time, 0 on a counter reset or no time passed', () => {
  assert.equal(stallPct({ totalUs: 0, atS: 10 }, { totalUs: 250_000, atS: 11 }), 25);
  assert.equal(stallPct({ totalUs: 0, atS: 10 }, { totalUs: 250_000, atS: 12 }), 12.5);
  assert.equal(stallPct({ totalUs: 900, atS: 10 }, { totalUs: 100, atS: 11 }), 0, 'guest rebooted');
  assert.equal(stallPct({ totalUs: 0, atS: 10 }, { totalUs: 100, atS: 10 }), 0);
  assert.equal(stallPct({ totalUs: 0, atS: 10 }, { totalUs: 5_000_000, atS: 11 }), 100, 'capped');
});

test('the reader follows a feed split at any byte, and comes back after the peer went away', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vmpsi-'));
  const path = join(dir, 'pressure.sock');
  const seen: GuestPressure[] = [];
  let conns = 0;
  const server = createServer((s) => {
    conns++;
    const text = `noise\n${LINE}\n${LINE.replace('total=250000', 'total=750000')}\n`;
    // Byte by byte: lines arrive torn.
    let i = 0;
    const t = setInterval(() => { if (i < text.length) s.write(text[i++]!); else { clearInterval(t); if (conns === 1) s.destroy(); } }, 0);
  });
  await new Promise<void>((r) => server.listen(path, r));
  const feed = new GuestPressureFeed(path, (p) => seen.push(p), 50);
  try {
    feed.start();
    const end = Date.now() + 10_000;
    while (seen.length < 4 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    assert.ok(seen.length >= 4, `reports after a reconnect: ${seen.length}`);
    assert.equal(conns, 2);
    assert.equal(seen[0]!.someAvg10, 1.5);
    assert.ok(seen.every((p) => p.somePct >= 0 && p.somePct <= 100));
  } finally {
    await feed.stop();
    await new Promise<void>((r) => server.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  }
});
