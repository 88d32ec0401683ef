/** QMP failures become driver errors that say what happened: gone, busy, slow. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { monitorError } from '../../src/driver/native/monitor.js';
import { QmpConnectError, QmpTimeoutError } from '../../src/qmp/index.js';

const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(code), { code });

test('a missing or refusing monitor socket means the domain is not running', () => {
  for (const code of ['ENOENT', 'ECONNREFUSED']) {
    const e = monitorError('vm', new QmpConnectError('cannot connect', { cause: errno(code) }));
    assert.equal(e.code, 'OPERATION_INVALID');
    assert.match(e.message, /domain is not running/);
  }
});

test('a monitor whose queue of waiting clients is full is busy, not gone', () => {
  const e = monitorError('vm', new QmpConnectError('cannot connect to QMP socket /x: EAGAIN', { cause: errno('EAGAIN') }));
  assert.equal(e.code, 'TIMEOUT');
  assert.match(e.message, /the monitor of domain 'vm' is busy with other clients/);
});

test('a monitor that does not answer in time is a time-out', () => {
  const e = monitorError('vm', new QmpTimeoutError('no greeting'));
  assert.equal(e.code, 'TIMEOUT');
});
