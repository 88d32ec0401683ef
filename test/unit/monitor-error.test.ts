/** QMP failures become driver errors that say what happened: gone, busy, slow. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { monitorError } from '../../src/driver/native/monitor.js';
import { QmpAbortedError, QmpConnectError, QmpTimeoutError } from '../../src/qmp/index.js';
import { BoundReached } from '../../src/driver/bounds.js';

const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(code), { code });

test('a missing or refusing monitor socket means the domain is not running', () => {
  for (const code of ['ENOENT', 'ECONNREFUSED']) {
    const e = monitorError('vm', new QmpConnectError('cannot connect', { cause: errno(code) }));
    assert.equal(e.code, 'OPERATION_INVALID');
    assert.match(e.message, /domain is not running/);
  }
});

test('a monitor whose queue of waiting connections stayed full is a time-out naming the monitor and the bound, not gone', () => {
  const e = monitorError('vm', new QmpTimeoutError('queue full', { stage: 'busy', boundMs: 10_000 }));
  assert.equal(e.code, 'TIMEOUT');
  assert.match(e.message, /the monitor of domain 'vm' did not answer within 10 s: it took no new connection \(its queue of waiting connections stayed full\)/);
});

test('no greeting is the monitor not answering within its bound, not "busy with another client"', () => {
  const e = monitorError('vm', new QmpTimeoutError('no greeting', { stage: 'greeting', boundMs: 3_000 }));
  assert.equal(e.code, 'TIMEOUT');
  assert.match(e.message, /^Timed out during operation: the monitor of domain 'vm' did not answer within 3 s: connected, but QEMU sent no greeting$/);
});

test('no reply to a command names the monitor, the bound and the command', () => {
  const e = monitorError('vm', new QmpTimeoutError("no reply to 'query-balloon' within 3000 ms", { stage: 'reply', boundMs: 3_000 }));
  assert.equal(e.code, 'TIMEOUT');
  assert.match(e.message, /the monitor of domain 'vm' did not answer within 3 s \(no reply to 'query-balloon'/);
});

test('a wait that the caller\'s bound ended is a time-out naming that bound; another abort is an abort', () => {
  const timedOut = monitorError('vm', new QmpAbortedError('aborted', { cause: new BoundReached('virtmemd answers a request within 10 s') }));
  assert.equal(timedOut.code, 'TIMEOUT');
  assert.match(timedOut.message, /the monitor of domain 'vm' did not answer \(virtmemd answers a request within 10 s\)/);
  assert.equal(monitorError('vm', new QmpAbortedError('aborted', { cause: new Error('Ctrl-C') })).code, 'ABORTED');
});
