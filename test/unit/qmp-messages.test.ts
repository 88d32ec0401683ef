import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { QmpProtocolError } from '../../src/qmp/errors.js';
import { parseEvent, parseGreeting, parseReply, parseServerMessage } from '../../src/qmp/messages.js';

// Captured from QEMU 7.2 on this machine.
const REAL_GREETING = {
  QMP: { version: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'Debian 1:7.2+dfsg-7+deb12u18+b3' }, capabilities: ['oob'] },
};

const isProtocolError = (pattern: RegExp) => (err: unknown) =>
  err instanceof QmpProtocolError && err.code === 'QMP_PROTOCOL' && pattern.test(err.message);

describe('parseGreeting', () => {
  it('reads version and capabilities', () => {
    assert.deepEqual(parseGreeting(REAL_GREETING), {
      version: { qemu: { major: 7, minor: 2, micro: 22 }, package: 'Debian 1:7.2+dfsg-7+deb12u18+b3' },
      capabilities: ['oob'],
    });
  });

  it('rejects something that is not a greeting, hinting at the wrong socket', () => {
    assert.throws(() => parseGreeting({ return: {} }), isProtocolError(/expected a QMP greeting.*QMP monitor socket/));
    assert.throws(() => parseGreeting('hello'), isProtocolError(/expected a JSON object/));
    assert.throws(() => parseGreeting(null), QmpProtocolError);
  });

  it('names the bad member', () => {
    const bad = structuredClone(REAL_GREETING) as { QMP: { version: { qemu: Record<string, unknown> } } };
    bad.QMP.version.qemu.major = '7';
    assert.throws(() => parseGreeting(bad), isProtocolError(/greeting\.QMP\.version\.qemu\.major: expected a number, got string/));
    assert.throws(() => parseGreeting({ QMP: { ...REAL_GREETING.QMP, capabilities: [1] } }), isProtocolError(/capabilities\[0\]/));
  });
});

describe('parseReply', () => {
  it('reads success replies with any return value and any id', () => {
    assert.deepEqual(parseReply({ return: {}, id: 1 }), { return: {}, id: 1 });
    assert.deepEqual(parseReply({ return: 'text\r\n', id: 'x' }), { return: 'text\r\n', id: 'x' });
    assert.deepEqual(parseReply({ return: [1, 2], id: { a: [1] } }), { return: [1, 2], id: { a: [1] } });
    assert.deepEqual(parseReply({ return: null, id: 3 }), { return: null, id: 3 });
  });

  it('keeps "no id" distinct from "id: null"', () => {
    assert.equal('id' in parseReply({ return: {} }), false);
    assert.deepEqual(parseReply({ return: {}, id: null }), { return: {}, id: null });
  });

  it('reads error replies', () => {
    assert.deepEqual(parseReply({ id: 7, error: { class: 'CommandNotFound', desc: 'The command nope has not been found' } }), {
      id: 7,
      error: { class: 'CommandNotFound', desc: 'The command nope has not been found' },
    });
  });

  it('ignores extra members (spec 5: newer QEMUs may add keys)', () => {
    assert.deepEqual(parseReply({ return: 1, id: 1, extra: true }), { return: 1, id: 1 });
  });

  it('rejects wrong shapes', () => {
    assert.throws(() => parseReply({ id: 1 }), isProtocolError(/neither "return" nor "error"/));
    assert.throws(() => parseReply({ return: 1, error: { class: 'a', desc: 'b' }, id: 1 }), isProtocolError(/both/));
    assert.throws(() => parseReply({ error: 'boom', id: 1 }), isProtocolError(/reply\.error: expected a JSON object/));
    assert.throws(() => parseReply({ error: { class: 'GenericError' }, id: 1 }), isProtocolError(/reply\.error\.desc/));
    assert.throws(() => parseReply([1]), isProtocolError(/got an array/));
  });
});

describe('parseEvent', () => {
  it('reads an event with data', () => {
    assert.deepEqual(
      parseEvent({ timestamp: { seconds: 1795767951, microseconds: 195034 }, event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' } }),
      { event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' }, timestamp: { seconds: 1795767951, microseconds: 195034 } },
    );
  });

  it('gives data {} when QEMU omits it, and accepts the -1 timestamp of spec 2.5', () => {
    assert.deepEqual(parseEvent({ timestamp: { seconds: -1, microseconds: -1 }, event: 'STOP' }), {
      event: 'STOP',
      data: {},
      timestamp: { seconds: -1, microseconds: -1 },
    });
  });

  it('rejects wrong shapes', () => {
    assert.throws(() => parseEvent({ event: 'STOP' }), isProtocolError(/event\.timestamp/));
    assert.throws(() => parseEvent({ event: 5, timestamp: { seconds: 1, microseconds: 1 } }), isProtocolError(/event\.event/));
    assert.throws(() => parseEvent({ event: 'X', data: [], timestamp: { seconds: 1, microseconds: 1 } }), isProtocolError(/event\.data/));
    assert.throws(() => parseEvent({ event: 'X', timestamp: { seconds: '1', microseconds: 1 } }), isProtocolError(/seconds/));
  });
});

describe('parseServerMessage', () => {
  it('classifies each kind', () => {
    const g = parseServerMessage(REAL_GREETING);
    assert.ok('QMP' in g);
    const e = parseServerMessage({ timestamp: { seconds: 1, microseconds: 2 }, event: 'RESUME' });
    assert.ok('event' in e && e.event === 'RESUME');
    const r = parseServerMessage({ return: {}, id: 1 });
    assert.ok('return' in r);
    const x = parseServerMessage({ error: { class: 'GenericError', desc: 'd' } });
    assert.ok('error' in x && x.error.class === 'GenericError');
  });

  it('rejects non-objects and unknown shapes', () => {
    assert.throws(() => parseServerMessage(42), QmpProtocolError);
    assert.throws(() => parseServerMessage({ hello: 'world' }), QmpProtocolError);
  });
});
