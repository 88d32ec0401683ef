/** The dashboard's pure parts: stacking for the chart, operation progress, size input, byte formatting. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chartColumns, fractionDone, guestUsedBytes, type GuestSample, type OperationView } from '../../src/dashboard/web/model.js';
import { formatBytes, parseSizeInput } from '../../src/dashboard/web/format.js';

const MiB = 1024 * 1024;
const sample = (over: Partial<GuestSample>): GuestSample => ({
  tS: 1, bootInGuestBytes: null, virtioMemBytes: null, balloonHeldBytes: null, guestUsedBytes: null, guestAvailableBytes: null, hostRssBytes: null, ...over,
});

test('stacked layers are cumulative, lines are not', () => {
  const s = [
    sample({ bootInGuestBytes: 400 * MiB, virtioMemBytes: 0, balloonHeldBytes: 112 * MiB, guestUsedBytes: 50 * MiB, hostRssBytes: 300 * MiB }),
    sample({ tS: 2, bootInGuestBytes: 512 * MiB, virtioMemBytes: 256 * MiB, balloonHeldBytes: 0, guestUsedBytes: 60 * MiB, hostRssBytes: 310 * MiB }),
  ];
  const cols = chartColumns(s, ['bootInGuestBytes', 'virtioMemBytes', 'balloonHeldBytes', 'guestUsedBytes', 'hostRssBytes']);
  assert.deepEqual(cols, [
    [400 * MiB, 512 * MiB],
    [400 * MiB, 768 * MiB],
    [512 * MiB, 768 * MiB],
    [50 * MiB, 60 * MiB],
    [300 * MiB, 310 * MiB],
  ]);
});

test('an unknown layer counts as nothing in the stack; an unknown line stays unknown', () => {
  const cols = chartColumns([sample({ bootInGuestBytes: 512 * MiB, virtioMemBytes: null, balloonHeldBytes: 0 })], ['virtioMemBytes', 'balloonHeldBytes', 'guestUsedBytes']);
  assert.deepEqual(cols, [[512 * MiB], [512 * MiB], [null]]);
});

test('progress goes from the starting size to the target, both ways, and never past the ends', () => {
  const op = (o: Partial<OperationView>): OperationView => ({ id: '1', state: 'running', startBytes: 512 * MiB, targetBytes: 1024 * MiB, actualBytes: 512 * MiB, message: null, ...o });
  assert.equal(fractionDone(op({})), 0);
  assert.equal(fractionDone(op({ actualBytes: 768 * MiB })), 0.5);
  assert.equal(fractionDone(op({ actualBytes: 2048 * MiB })), 1);
  assert.equal(fractionDone(op({ startBytes: 1024 * MiB, targetBytes: 512 * MiB, actualBytes: 896 * MiB })), 0.25);
  assert.equal(fractionDone(op({ actualBytes: null })), 0);
  assert.equal(fractionDone(op({ state: 'succeeded', actualBytes: null })), 1);
  assert.equal(fractionDone(op({ startBytes: 1024 * MiB, actualBytes: 1024 * MiB })), 1, 'already there');
});

test('sizes typed in the form', () => {
  assert.deepEqual(parseSizeInput('1.5', 'GiB'), { bytes: 1536 * MiB });
  assert.deepEqual(parseSizeInput(' 768 ', 'MiB'), { bytes: 768 * MiB });
  assert.match((parseSizeInput('lots', 'MiB') as { error: string }).error, /'lots' is not a size/);
  assert.match((parseSizeInput('-1', 'MiB') as { error: string }).error, /not a size/);
  assert.match((parseSizeInput('0', 'MiB') as { error: string }).error, /above zero/);
  assert.match((parseSizeInput('1', 'TB') as { error: string }).error, /unknown unit 'TB'/);
});

test('bytes are shown in binary units', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(512 * MiB), '512 MiB');
  assert.equal(formatBytes(1536 * MiB), '1.50 GiB');
  assert.equal(formatBytes(24 * 1024 * MiB), '24.0 GiB');
  assert.equal(formatBytes(null), '—');
});

test('guest used leaves out balloon pages when the guest counts them in MemTotal (deflate-on-OOM)', () => {
  // 512 MiB boot RAM, 128 MiB in the balloon: MemTotal stays ~490 MiB, MemAvailable ~332 MiB.
  assert.equal(guestUsedBytes(490 * MiB, 332 * MiB, 384 * MiB, 128 * MiB), 30 * MiB);
  // Without deflate-on-OOM MemTotal shrinks with the balloon: nothing to take out.
  assert.equal(guestUsedBytes(362 * MiB, 332 * MiB, 384 * MiB, 128 * MiB), 30 * MiB);
  assert.equal(guestUsedBytes(490 * MiB, 460 * MiB, 512 * MiB, 0), 30 * MiB);
  assert.equal(guestUsedBytes(null, 460 * MiB, 512 * MiB, 0), null, 'no statistics yet');
});
