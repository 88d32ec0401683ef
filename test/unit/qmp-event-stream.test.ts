import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { QmpAbortedError, QmpDisconnectedError, QmpStateError, QmpTimeoutError } from '../../src/qmp/errors.js';
import { QmpEventStream } from '../../src/qmp/event-stream.js';
import type { QmpEvent } from '../../src/qmp/messages.js';

const ev = (event: string, n = 0): QmpEvent => ({ event, data: { n }, timestamp: { seconds: 1, microseconds: n } });

describe('QmpEventStream', () => {
  it('keeps only the named events', async () => {
    const s = new QmpEventStream({ names: ['SHUTDOWN'] });
    s.deliver(ev('STOP'));
    s.deliver(ev('SHUTDOWN', 1));
    assert.equal(s.size, 1);
    assert.deepEqual(await s.nextEvent({ timeoutMs: 100 }), ev('SHUTDOWN', 1));
  });

  it('wakes a waiting nextEvent', async () => {
    const s = new QmpEventStream();
    const p = s.nextEvent({ timeoutMs: 1000 });
    s.deliver(ev('RESUME'));
    assert.deepEqual(await p, ev('RESUME'));
  });

  it('drops the oldest event when the queue is full and counts it', async () => {
    const s = new QmpEventStream({ maxQueue: 2 });
    for (let n = 1; n <= 5; n++) s.deliver(ev('BALLOON_CHANGE', n));
    assert.equal(s.dropped, 3);
    assert.deepEqual((await s.nextEvent()).data, { n: 4 });
    assert.deepEqual((await s.nextEvent()).data, { n: 5 });
  });

  it('nextEvent times out with QmpTimeoutError and leaves no waiter behind', async () => {
    const s = new QmpEventStream({ names: ['SHUTDOWN'] });
    await assert.rejects(s.nextEvent({ timeoutMs: 10 }), (e: unknown) => e instanceof QmpTimeoutError && /SHUTDOWN/.test(e.message));
    s.deliver(ev('SHUTDOWN'));
    assert.equal(s.size, 1, 'the event was queued, not handed to the expired waiter');
  });

  it('nextEvent rejects with QmpAbortedError on abort', async () => {
    const s = new QmpEventStream();
    const ac = new AbortController();
    const p = s.nextEvent({ signal: ac.signal, timeoutMs: 5000 });
    ac.abort(new Error('user'));
    await assert.rejects(p, QmpAbortedError);
    await assert.rejects(s.nextEvent({ signal: AbortSignal.abort() }), QmpAbortedError);
  });

  it('delivers queued events after end, then rejects with the end reason', async () => {
    const s = new QmpEventStream();
    s.deliver(ev('STOP'));
    s.end(new QmpDisconnectedError('QMP connection closed'));
    s.deliver(ev('LATE'));
    assert.deepEqual(await s.nextEvent(), ev('STOP'));
    await assert.rejects(s.nextEvent(), QmpDisconnectedError);
  });

  it('end() rejects a pending nextEvent and finishes a pending iteration', async () => {
    const s = new QmpEventStream();
    const waiting = s.nextEvent({ timeoutMs: 5000 });
    const iter = s[Symbol.asyncIterator]();
    const step = iter.next();
    s.end(new QmpDisconnectedError('gone'));
    await assert.rejects(waiting, QmpDisconnectedError);
    assert.deepEqual(await step, { value: undefined, done: true });
  });

  it('for-await yields events and ends when the stream is closed; close() runs onClose once', async () => {
    let closedCalls = 0;
    const s = new QmpEventStream({}, () => closedCalls++);
    s.deliver(ev('A'));
    s.deliver(ev('B'));
    const seen: string[] = [];
    setImmediate(() => {
      s.deliver(ev('C'));
      s.close();
    });
    for await (const e of s) seen.push(e.event);
    assert.deepEqual(seen, ['A', 'B', 'C']);
    s.close();
    assert.equal(closedCalls, 1);
    await assert.rejects(s.nextEvent(), QmpStateError);
  });

  it('breaking out of for-await closes the stream', async () => {
    const s = new QmpEventStream();
    s.deliver(ev('A'));
    s.deliver(ev('B'));
    for await (const e of s) {
      assert.equal(e.event, 'A');
      break;
    }
    assert.equal(s.ended, true);
  });

  it('an aborted signal closes the stream', () => {
    const ac = new AbortController();
    const s = new QmpEventStream({ signal: ac.signal });
    assert.equal(s.ended, false);
    ac.abort();
    assert.equal(s.ended, true);
    assert.equal(new QmpEventStream({ signal: AbortSignal.abort() }).ended, true);
  });
});
