/**
 * libvirt packet framing: header layout, reassembly from chunks split at every byte and in
 * every two-packet split, and refusal of length words that cannot be packets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrameDecoder, MESSAGE_MAX_BYTES, decodePacket, encodePacket, type PacketHeader } from '../../src/libvirt/framing.js';
import { XdrError } from '../../src/libvirt/xdr.js';

const h = (serial: number, proc = 23): PacketHeader => ({ prog: 0x20008086, vers: 1, proc, type: 0, serial, status: 0 });

test('a packet is length (counting itself), six header words, payload', () => {
  const p = encodePacket(h(5), Buffer.from([0, 0, 0, 1]));
  assert.equal(p.toString('hex'), '00000020' + '20008086' + '00000001' + '00000017' + '00000000' + '00000005' + '00000000' + '00000001');
  assert.deepEqual(decodePacket(p), { header: h(5), payload: Buffer.from([0, 0, 0, 1]) });
  assert.throws(() => decodePacket(p.subarray(0, 30)), XdrError);
});

test('packets reassemble from any split: byte by byte, and every cut of a two-packet stream', () => {
  const a = encodePacket(h(1), Buffer.from('00000003616263ff', 'hex'));
  const b = encodePacket({ ...h(2, 16), type: 1, status: 1 }, Buffer.alloc(0));
  const stream = Buffer.concat([a, b]);
  const d1 = new FrameDecoder();
  const got = [...stream].flatMap((byte) => d1.push(Buffer.from([byte])));
  assert.deepEqual(got.map((p) => p.header.serial), [1, 2]);
  assert.equal(d1.pendingBytes, 0);
  for (let cut = 0; cut <= stream.length; cut++) {
    for (let cut2 = cut; cut2 <= stream.length; cut2 += 7) {
      const d = new FrameDecoder();
      const out = [...d.push(stream.subarray(0, cut)), ...d.push(stream.subarray(cut, cut2)), ...d.push(stream.subarray(cut2))];
      assert.deepEqual(out.map((p) => [p.header.serial, p.header.proc, p.header.status, p.payload.toString('hex')]),
        [[1, 23, 0, '00000003616263ff'], [2, 16, 1, '']], `cuts ${cut}/${cut2}`);
    }
  }
});

test('a length word shorter than a header or beyond libvirt\'s maximum is a protocol error', () => {
  assert.throws(() => new FrameDecoder().push(Buffer.from('0000001b', 'hex')), /shorter than a header/);
  const big = Buffer.alloc(4);
  big.writeUInt32BE(MESSAGE_MAX_BYTES + 5);
  assert.throws(() => new FrameDecoder().push(big), /exceeds/);
  assert.throws(() => encodePacket(h(1), Buffer.alloc(MESSAGE_MAX_BYTES)), XdrError);
  // Incomplete is not an error: it waits.
  assert.deepEqual(new FrameDecoder().push(Buffer.from('000000', 'hex')), []);
  // ... also for a big packet within VIR_NET_MESSAGE_MAX (32 MiB, virnetprotocol.x).
  const large = Buffer.alloc(4);
  large.writeUInt32BE(4 + 33554432);
  assert.deepEqual(new FrameDecoder().push(large), []);
});
