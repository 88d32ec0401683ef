import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { QmpProtocolError } from '../../src/qmp/errors.js';
import { QmpLineDecoder, encodeCommand } from '../../src/qmp/framing.js';

// Real-looking traffic: greeting, replies, events, and strings with raw multi-byte UTF-8
// (2-, 3- and 4-byte sequences) plus QEMU-style \u escapes and an escaped CRLF inside a string.
const MESSAGES: unknown[] = [
  { QMP: { version: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'Debian 1:7.2+dfsg-7+deb12u18+b3' }, capabilities: ['oob'] } },
  { return: {}, id: 1 },
  { return: { status: 'prelaunch', singlestep: false, running: false }, id: 2 },
  { timestamp: { seconds: 1795767951, microseconds: 190693 }, event: 'RESUME' },
  { return: 'balloon: actual=640\r\n', id: 3 },
  { return: "unknown command: 'é€😀'\r\n", id: 4 },
  { id: 5, error: { class: 'CommandNotFound', desc: 'The command nope has not been found' } },
  { timestamp: { seconds: 1795767951, microseconds: 195034 }, event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' } },
  { return: [{ type: 'virtio-mem', data: { memaddr: 4294967296, 'block-size': 2097152, id: 'vm0' } }], id: 'ünïcödé-id' },
];

// How QEMU writes them: one object per line, CRLF-terminated (qmp-spec 2.1.1).
const WIRE = Buffer.from(MESSAGES.map((m) => `${JSON.stringify(m)}\r\n`).join(''), 'utf8');

function decodeChunks(chunks: Buffer[]): unknown[] {
  const decoder = new QmpLineDecoder();
  const out: unknown[] = [];
  for (const c of chunks) out.push(...decoder.push(c));
  assert.equal(decoder.pendingBytes, 0, 'nothing left over after the final CRLF');
  return out;
}

describe('QmpLineDecoder', () => {
  it('contains raw multi-byte UTF-8, so splitting can land inside a character', () => {
    assert.ok(WIRE.length > WIRE.toString('utf8').length);
    assert.ok(WIRE.includes(Buffer.from('😀', 'utf8')));
  });

  it('decodes the whole stream in one chunk', () => {
    assert.deepEqual(decodeChunks([WIRE]), MESSAGES);
  });

  it('decodes the same messages when split into two at every byte boundary', () => {
    for (let i = 0; i <= WIRE.length; i++) {
      const got = decodeChunks([WIRE.subarray(0, i), WIRE.subarray(i)]);
      assert.deepEqual(got, MESSAGES, `split at byte ${i}`);
    }
  });

  it('decodes the same messages when split into three at every pair of boundaries near a multi-byte character', () => {
    const emoji = WIRE.indexOf(Buffer.from('😀', 'utf8'));
    for (let i = emoji - 2; i <= emoji + 5; i++) {
      for (let j = i; j <= emoji + 6; j++) {
        const got = decodeChunks([WIRE.subarray(0, i), WIRE.subarray(i, j), WIRE.subarray(j)]);
        assert.deepEqual(got, MESSAGES, `split at ${i},${j}`);
      }
    }
  });

  it('decodes the same messages fed one byte at a time', () => {
    const chunks = Array.from({ length: WIRE.length }, (_, i) => WIRE.subarray(i, i + 1));
    assert.deepEqual(decodeChunks(chunks), MESSAGES);
  });

  it('returns messages only once their line is complete', () => {
    const decoder = new QmpLineDecoder();
    const line = Buffer.from('{"return": {}, "id": 1}\r\n');
    assert.deepEqual(decoder.push(line.subarray(0, line.length - 2)), []);
    assert.deepEqual(decoder.push(line.subarray(line.length - 2, line.length - 1)), []); // the CR alone
    assert.deepEqual(decoder.push(line.subarray(line.length - 1)), [{ return: {}, id: 1 }]);
  });

  it('accepts string chunks and bare LF line ends, skips blank lines', () => {
    const decoder = new QmpLineDecoder();
    assert.deepEqual(decoder.push('\r\n{"return": 1, "id": 1}\n\n{"return": "é", "id": 2}\r\n'), [
      { return: 1, id: 1 },
      { return: 'é', id: 2 },
    ]);
  });

  it('throws QmpProtocolError on an unparsable line', () => {
    const decoder = new QmpLineDecoder();
    assert.throws(
      () => decoder.push('this is not json\r\n'),
      (err: unknown) => err instanceof QmpProtocolError && err.code === 'QMP_PROTOCOL' && /unparsable QMP line/.test(err.message) && err.cause instanceof SyntaxError,
    );
  });

  it('stays broken after a protocol error (QMP cannot resynchronise)', () => {
    const decoder = new QmpLineDecoder();
    assert.throws(() => decoder.push('{"return": \r\n'), QmpProtocolError);
    assert.throws(() => decoder.push('{"return": {}, "id": 1}\r\n'), QmpProtocolError);
  });

  it('feed() keeps the messages before a bad line and reports the error', () => {
    const decoder = new QmpLineDecoder();
    const { messages, error } = decoder.feed('{"return": {}, "id": 1}\r\n}garbage{\r\n{"return": {}, "id": 2}\r\n');
    assert.deepEqual(messages, [{ return: {}, id: 1 }]);
    assert.ok(error instanceof QmpProtocolError);
  });

  it('throws when a complete line exceeds maxLineBytes', () => {
    const decoder = new QmpLineDecoder({ maxLineBytes: 64 });
    const long = `{"return": "${'x'.repeat(100)}", "id": 1}\r\n`;
    assert.throws(() => decoder.push(long), (err: unknown) => err instanceof QmpProtocolError && /exceeds 64 bytes/.test(err.message));
  });

  it('throws as soon as an unterminated line grows past maxLineBytes, without buffering more', () => {
    const decoder = new QmpLineDecoder({ maxLineBytes: 64 });
    assert.deepEqual(decoder.push('{"return": "'), []);
    assert.throws(() => {
      for (let i = 0; i < 100; i++) decoder.push('xxxxxxxx');
    }, QmpProtocolError);
    assert.equal(decoder.pendingBytes, 0);
  });

  it('accepts a line of exactly maxLineBytes', () => {
    const body = `{"return": "${'y'.repeat(40)}", "id": 1}`;
    const decoder = new QmpLineDecoder({ maxLineBytes: body.length + 1 }); // + the CR
    assert.deepEqual(decoder.push(`${body}\r\n`), [{ return: 'y'.repeat(40), id: 1 }]);
  });

  it('defaults to a 16 MiB line limit', () => {
    assert.equal(new QmpLineDecoder().maxLineBytes, 16 * 1024 * 1024);
  });
});

describe('encodeCommand', () => {
  it('writes one CRLF-terminated JSON line that round-trips through the decoder', () => {
    const cmd = { execute: 'human-monitor-command', arguments: { 'command-line': 'info balloon\nsecond line é' }, id: 7 };
    const line = encodeCommand(cmd);
    assert.ok(line.endsWith('\r\n'));
    assert.equal(line.indexOf('\n'), line.length - 1, 'no raw newline before the terminator');
    assert.deepEqual(new QmpLineDecoder().push(line), [cmd]);
  });
});
