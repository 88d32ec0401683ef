import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseProcStat, isProcessAlive, readProcStat } from '../../src/driver/native/host-process.js';

test('parseProcStat copes with spaces and parentheses in the command name', () => {
  const line = '1234 (qemu (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 98765 100000 200 18446744073709551615';
  assert.deepEqual(parseProcStat(line), { state: 'S', cpuTicks: 300, startTicks: 98765 });
  assert.equal(parseProcStat('garbage'), null);
});

test('liveness checks the start time, so a reused pid is not mistaken for our QEMU', async () => {
  const me = await readProcStat(process.pid);
  assert.ok(me);
  assert.equal(await isProcessAlive(process.pid, me.startTicks), true);
  assert.equal(await isProcessAlive(process.pid, me.startTicks + 1), false);
  assert.equal(await isProcessAlive(2 ** 22 + 7), false);
});
