/**
 * The XDR codec and libvirt's wire types: every type round-trips, the encoding is the RFC 4506
 * byte layout, and every truncation (cut at each byte) is an XdrError, never garbage or a crash.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { XdrError, XdrReader, XdrWriter } from '../../src/libvirt/xdr.js';
import {
  readDomain, readDomainInfo, readError, readTypedParam, writeDomain, writeError, writeTypedParam, decodeDomainEvent,
  readCharArray, uuidText, uuidBytes, Proc, PROC_EVENT_MEMORY_DEVICE_SIZE_CHANGE, type TypedParam, type WireError,
} from '../../src/libvirt/protocol.js';

/** Decoding every proper prefix of `bytes` throws XdrError; the whole decodes to `expected`. */
function everySplit<T>(bytes: Buffer, decode: (r: XdrReader) => T, expected: T): void {
  for (let cut = 0; cut < bytes.length; cut++) {
    assert.throws(() => { const r = new XdrReader(bytes.subarray(0, cut)); decode(r); r.end(); }, XdrError, `cut at ${cut} of ${bytes.length}`);
  }
  const r = new XdrReader(bytes);
  assert.deepEqual(decode(r), expected);
  r.end();
}

test('primitive encodings are RFC 4506 big-endian, 4-byte aligned', () => {
  const w = new XdrWriter(1);
  w.int(-2).uint(0xfffffffe).bool(true).hyper(-3).uhyper(2n ** 64n - 1n).string('abcde').fixedOpaque(Buffer.from([1, 2]), 2);
  assert.equal(w.finish().toString('hex'),
    'fffffffe' + 'fffffffe' + '00000001' + 'fffffffffffffffd' + 'ffffffffffffffff' + '00000005' + '6162636465000000' + '01020000');
});

test('every primitive round-trips and fails cleanly at every split', () => {
  const w = new XdrWriter();
  w.int(-7).uint(7).bool(false).hyper(-(2 ** 40)).uhyper(2 ** 52).double(1.5).string('héllo').opaque(Buffer.from([9, 8, 7]))
    .optional(null, (x, v: number) => x.int(v)).optional(5, (x, v) => x.int(v)).array([1, 2, 3], (x, v) => x.uint(v));
  everySplit(w.finish(), (r) => [r.int(), r.uint(), r.bool(), r.hyper(), r.uhyper(), r.double(), r.string(), [...r.opaque()],
    r.optional((x) => x.int()), r.optional((x) => x.int()), r.array((x) => x.uint())],
  [-7, 7, false, -(2 ** 40), 2 ** 52, 1.5, 'héllo', [9, 8, 7], null, 5, [1, 2, 3]]);
});

test('out-of-range values are refused when encoding', () => {
  const w = new XdrWriter();
  assert.throws(() => w.int(2 ** 31), XdrError);
  assert.throws(() => w.uint(-1), XdrError);
  assert.throws(() => w.uhyper(-1), XdrError);
  assert.throws(() => w.hyper(2 ** 63), XdrError);
  // Fractions and NaN are XdrErrors too (BigInt() alone would throw a bare RangeError).
  assert.throws(() => w.hyper(1.5), XdrError);
  assert.throws(() => w.uhyper(Number.NaN), XdrError);
  assert.throws(() => w.double('1' as unknown as number), XdrError);
  assert.throws(() => w.string('toolong', 3), XdrError);
  assert.throws(() => w.fixedOpaque(Buffer.alloc(3), 4), XdrError);
});

test('malformed input is refused: bad bool, bad optional flag, limits, huge counts, unsafe hypers', () => {
  assert.throws(() => new XdrReader(Buffer.from('00000002', 'hex')).bool(), XdrError);
  assert.throws(() => new XdrReader(Buffer.from('00000007', 'hex')).optional((r) => r.int()), XdrError);
  assert.throws(() => new XdrReader(Buffer.from('0000000a' + '00'.repeat(12), 'hex')).string(4), /limit/);
  assert.throws(() => new XdrReader(Buffer.from('7fffffff', 'hex')).array((r) => r.int()), /truncated/);
  assert.throws(() => new XdrReader(Buffer.from('0020000000000000', 'hex')).uhyper(), /safe integer/);
  assert.equal(new XdrReader(Buffer.from('0020000000000000', 'hex')).uhyperBig(), 2n ** 53n);
  assert.throws(() => { const r = new XdrReader(Buffer.alloc(8)); r.int(); r.end(); }, /trailing/);
});

const dom = { name: 'vm-1', uuid: Buffer.from('00112233445566778899aabbccddeeff', 'hex'), id: 3 };

test('remote_nonnull_domain round-trips at every split; UUID text form both ways', () => {
  const w = new XdrWriter();
  writeDomain(w, dom);
  everySplit(w.finish(), readDomain, dom);
  assert.equal(uuidText(dom.uuid), '00112233-4455-6677-8899-aabbccddeeff');
  assert.deepEqual(uuidBytes('00112233-4455-6677-8899-aabbccddeeff'), dom.uuid);
  assert.equal(uuidBytes('vm-1'), null);
});

test('remote_error round-trips at every split, with and without optional strings', () => {
  const e: WireError = { code: 42, domain: 10, message: "Domain not found: no domain with matching name 'x'", level: 2, str1: 'Domain not found: %s', str2: null, str3: 'x', int1: -1, int2: 0 };
  const w = new XdrWriter();
  writeError(w, e);
  everySplit(w.finish(), readError, e);
  const w2 = new XdrWriter();
  writeError(w2, { ...e, message: null, str1: null, str3: null });
  everySplit(w2.finish(), readError, { ...e, message: null, str1: null, str3: null });
});

test('typed parameters of every type round-trip at every split; an unknown type is refused', () => {
  const params: TypedParam[] = [
    { field: 'a', value: { type: 'int', value: -1 } }, { field: 'b', value: { type: 'uint', value: 7 } },
    { field: 'c', value: { type: 'llong', value: -(2n ** 62n) } }, { field: 'd', value: { type: 'ullong', value: 2n ** 63n } },
    { field: 'e', value: { type: 'double', value: 0.25 } }, { field: 'f', value: { type: 'boolean', value: true } },
    { field: 'state.state', value: { type: 'string', value: 'x' } },
  ];
  const w = new XdrWriter();
  w.array(params, writeTypedParam);
  everySplit(w.finish(), (r) => r.array(readTypedParam), params);
  const bad = new XdrWriter().string('z').int(9).int(0).finish();
  assert.throws(() => readTypedParam(new XdrReader(bad)), /unknown type 9/);
});

test('remote_domain_get_info_ret decodes (chars and shorts travel as 4-byte words)', () => {
  const w = new XdrWriter().uint(1).uhyper(1048576).uhyper(524288).uint(2).uhyper(123456789012n);
  everySplit(w.finish(), readDomainInfo, { state: 1, maxMemKiB: 1048576, memoryKiB: 524288, nrVirtCpu: 2, cpuTimeNs: 123456789012n });
});

test('char<N> arrays (security model) are 4-byte chars ending in NUL', () => {
  const w = new XdrWriter().array([...Buffer.from('none\0')], (x, c) => x.int(c));
  everySplit(w.finish(), (r) => readCharArray(r, 257), 'none');
});

test('events: lifecycle, balloon change and memory-device size change decode; others are null', () => {
  const lc = new XdrWriter().int(4);
  writeDomain(lc, dom);
  lc.int(5).int(1);
  const bytes = lc.finish();
  for (let cut = 0; cut < bytes.length; cut++) {
    assert.throws(() => decodeDomainEvent(Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE, bytes.subarray(0, cut)), XdrError, `cut at ${cut}`);
  }
  assert.deepEqual(decodeDomainEvent(Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE, bytes), { kind: 'lifecycle', callbackId: 4, dom, event: 5, detail: 1 });
  const bc = new XdrWriter().int(1);
  writeDomain(bc, dom);
  bc.uhyper(262144);
  assert.deepEqual(decodeDomainEvent(Proc.DOMAIN_EVENT_CALLBACK_BALLOON_CHANGE, bc.finish()), { kind: 'balloon-change', callbackId: 1, dom, actualKiB: 262144 });
  const md = new XdrWriter().int(2);
  writeDomain(md, dom);
  md.string('virtiomem0').uhyper(2048);
  assert.deepEqual(decodeDomainEvent(PROC_EVENT_MEMORY_DEVICE_SIZE_CHANGE, md.finish()), { kind: 'memory-device-size-change', callbackId: 2, dom, alias: 'virtiomem0', sizeKiB: 2048 });
  assert.equal(decodeDomainEvent(9999, Buffer.alloc(0)), null);
  // A truncated event is an error, not a half-filled event.
  assert.throws(() => decodeDomainEvent(Proc.DOMAIN_EVENT_CALLBACK_BALLOON_CHANGE, bc.finish().subarray(0, 10)), XdrError);
});
