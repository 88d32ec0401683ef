import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { VirtError } from '../../src/domain/errors.js';
import { MAX_KIB, formatKiB, parseScaledKiB, parseXmlMemoryKiB, unitBytes } from '../../src/domain/size.js';

const KiB = 1;
const MiB = 1024;
const GiB = 1024 * 1024;

/** Asserts `fn` throws a VirtError with `code` whose message contains every one of `parts`. */
function assertVirtError(fn: () => unknown, code: string, ...parts: string[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof VirtError, `expected VirtError, got ${String(err)}`);
    assert.equal(err.code, code);
    for (const p of parts) assert.ok(err.message.includes(p), `'${err.message}' should mention '${p}'`);
    return true;
  });
}

describe('unitBytes (virScaleInteger unit table)', () => {
  const table: Array<[string, bigint | undefined]> = [
    ['b', 1n], ['B', 1n], ['byte', 1n], ['bytes', 1n], ['BYTES', 1n], ['Byte', 1n],
    ['k', 1024n], ['K', 1024n], ['KiB', 1024n], ['kib', 1024n], ['KIB', 1024n], ['kIb', 1024n],
    ['KB', 1000n], ['kb', 1000n], ['kB', 1000n],
    ['M', 1024n ** 2n], ['MiB', 1024n ** 2n], ['MB', 1000n ** 2n],
    ['G', 1024n ** 3n], ['GiB', 1024n ** 3n], ['GB', 1000n ** 3n],
    ['T', 1024n ** 4n], ['TiB', 1024n ** 4n], ['TB', 1000n ** 4n],
    ['P', 1024n ** 5n], ['PiB', 1024n ** 5n], ['PB', 1000n ** 5n],
    ['E', 1024n ** 6n], ['EiB', 1024n ** 6n], ['EB', 1000n ** 6n],
    ['', undefined], ['X', undefined], ['XB', undefined], ['Ki', undefined], ['KiBs', undefined],
    ['bytess', undefined], ['Z', undefined], ['ZiB', undefined], ['iB', undefined], ['GBB', undefined],
  ];
  for (const [unit, bytes] of table) {
    it(`'${unit}' -> ${bytes === undefined ? 'unknown' : String(bytes)}`, () => assert.equal(unitBytes(unit), bytes));
  }
});

describe('parseScaledKiB accepts', () => {
  const table: Array<[string, number]> = [
    ['1', 1],
    ['1024', 1024],
    ['1048576', GiB],
    ['1b', 1], // rounded up to a whole KiB, like VIR_DIV_UP
    ['1000b', 1],
    ['1024b', 1],
    ['1025b', 2],
    ['2048bytes', 2],
    ['1byte', 1],
    ['1B', 1],
    ['1k', 1 * KiB],
    ['1K', 1],
    ['1KiB', 1],
    ['1kib', 1],
    ['1KB', 1], // 1000 bytes
    ['2KB', 2], // 2000 bytes -> 1.95 KiB -> 2
    ['512M', 512 * MiB],
    ['512MiB', 512 * MiB],
    ['512m', 512 * MiB],
    ['1MB', 977], // 10^6 bytes = 976.56 KiB
    ['1G', GiB],
    ['1g', GiB],
    ['1GiB', GiB],
    ['1GB', 976563], // 10^9 / 1024 = 976562.5
    ['1T', 1024 * GiB],
    ['1TB', 976562500],
    ['1P', 1024 ** 4],
    ['1PB', 976562500000],
    ['1E', 1024 ** 5],
    ['1EB', 976562500000000],
    ['7E', 7 * 1024 ** 5],
    ['8191P', 8191 * 1024 ** 4],
    [String(MAX_KIB), MAX_KIB],
    ['0G', 0], // with minKiB 0 below
  ];
  for (const [text, kib] of table) {
    it(`'${text}' -> ${kib} KiB`, () => assert.equal(parseScaledKiB(text, 'size', { minKiB: 0 }), kib));
  }
  it('uses defaultUnit for bare numbers', () => {
    assert.equal(parseScaledKiB('2048', 'size', { defaultUnit: 'b' }), 2);
    assert.equal(parseScaledKiB('2', 'size', { defaultUnit: 'MiB' }), 2 * MiB);
    assert.equal(parseScaledKiB('2G', 'size', { defaultUnit: 'b' }), 2 * GiB, 'an explicit suffix wins');
  });
  it('accepts exactly the minimum and the maximum', () => {
    assert.equal(parseScaledKiB('64M', 'size', { minKiB: 64 * MiB }), 64 * MiB);
    assert.equal(parseScaledKiB('1G', 'size', { maxKiB: GiB }), GiB);
  });
});

describe('parseScaledKiB rejects with INVALID_ARG naming value and purpose', () => {
  const table: Array<[string, string]> = [
    ['', 'empty'],
    [' 1', 'whitespace'],
    ['1 ', 'whitespace'],
    ['1 G', 'whitespace'],
    ['1\n', 'whitespace'],
    ['\t1', 'whitespace'],
    ['-1', 'negative'],
    ['-0', 'negative'],
    ['+1', "'+'"],
    ['0x10', 'hexadecimal'],
    ['0X10', 'hexadecimal'],
    ['010', 'leading zeros'],
    ['00', 'leading zeros'],
    ['1.5G', 'fractions'],
    ['1,5G', 'fractions'],
    ['.5G', 'fractions'],
    ['1.0', 'fractions'],
    ['12XB', "unknown unit 'XB'"],
    ['1Gi', "unknown unit 'Gi'"],
    ['1GiBs', "unknown unit"],
    ['1ZiB', "unknown unit"],
    ['G', 'whole number'],
    ['abc', 'whole number'],
    ['1e3', 'whole number'],
    ['1_000', 'whole number'],
    ['\uff11\uff12', 'whole number'], // full-width digits
    ['1\u0000', 'whole number'],
    ['8E', 'too large'],
    ['8192P', 'too large'],
    ['16E', 'too large'],
    [String(MAX_KIB + 1), 'too large'],
    ['99999999999999999999999999999999999999', 'too large'],
    ['0', 'below the minimum of 1 KiB'],
  ];
  for (const [text, reason] of table) {
    it(`${JSON.stringify(text)}: ${reason}`, () => {
      const shown = text.replace(/\n/g, '\\x0a').replace(/\t/g, '\\x09').replace(/\u0000/g, '\\x00');
      assertVirtError(() => parseScaledKiB(text, 'memory size'), 'INVALID_ARG', 'memory size', `'${shown}'`, reason);
    });
  }
  it('names the minimum in binary units', () => {
    assertVirtError(
      () => parseScaledKiB('63M', 'memory size', { minKiB: 64 * MiB }),
      'INVALID_ARG',
      "'63M'",
      'below the minimum of 64 MiB',
    );
  });
  it('names a caller-chosen maximum', () => {
    assertVirtError(() => parseScaledKiB('2G', '--size', { maxKiB: GiB }), 'INVALID_ARG', '--size', 'at most 1 GiB');
  });
  it('treats a bad default unit as a caller bug (INTERNAL)', () => {
    assertVirtError(() => parseScaledKiB('1', 'size', { defaultUnit: 'XB' }), 'INTERNAL');
  });
  it('caps the echoed value so a huge argument does not flood the terminal', () => {
    assert.throws(
      () => parseScaledKiB('x'.repeat(10_000), 'size'),
      (err: unknown) => err instanceof VirtError && err.message.length < 300,
    );
  });
});

describe('parseXmlMemoryKiB', () => {
  const table: Array<[string, string | undefined, number]> = [
    ['512', undefined, 512],
    ['512', '', 512], // libvirt treats an empty unit as the default
    ['512', 'KiB', 512],
    ['512', 'k', 512],
    ['512', 'KB', 500], // 512000 bytes
    [' 512\n', 'MiB', 512 * MiB],
    ['0', 'KiB', 0],
    ['0100', 'KiB', 100], // libvirt reads leading zeros as decimal
    ['1000000', 'b', 977],
    ['1', 'bytes', 1],
    ['2', 'byte', 1],
    ['4', 'GiB', 4 * GiB],
    ['4', 'G', 4 * GiB],
    ['4', 'gb', 3906250],
    ['2', 'EiB', 2 * 1024 ** 5],
    ['1', 'T', 1024 * GiB],
  ];
  for (const [value, unit, kib] of table) {
    it(`'${value}' unit=${unit === undefined ? '(none)' : `'${unit}'`} -> ${kib} KiB`, () => {
      assert.equal(parseXmlMemoryKiB(value, unit), kib);
    });
  }
  const bad: Array<[string, string | undefined, string]> = [
    ['-1', undefined, 'not a non-negative decimal integer'],
    ['1.5', 'GiB', 'not a non-negative decimal integer'],
    ['', undefined, 'not a non-negative decimal integer'],
    ['0x10', undefined, 'not a non-negative decimal integer'],
    ['1', 'XB', "unknown unit 'XB'"],
    ['1', 'Ki', "unknown unit 'Ki'"],
    [String(MAX_KIB + 1), 'KiB', 'too large'],
    ['8', 'EiB', 'too large'],
  ];
  for (const [value, unit, reason] of bad) {
    it(`rejects '${value}' unit=${String(unit)} with XML_ERROR (${reason})`, () => {
      assertVirtError(() => parseXmlMemoryKiB(value, unit, '<memory>'), 'XML_ERROR', '<memory>', reason);
    });
  }
});

describe('formatKiB', () => {
  const table: Array<[number, string]> = [
    [0, '0 KiB'],
    [1, '1 KiB'],
    [1536, '1536 KiB'],
    [65536, '64 MiB'],
    [1572864, '1536 MiB'],
    [GiB, '1 GiB'],
    [1024 ** 5, '1 EiB'],
    [MAX_KIB, `${MAX_KIB} KiB`],
  ];
  for (const [kib, text] of table) it(`${kib} -> ${text}`, () => assert.equal(formatKiB(kib), text));
  it('round-trips through parseScaledKiB', () => {
    for (const kib of [1, 1536, 65536, GiB, 3 * GiB]) {
      assert.equal(parseScaledKiB(formatKiB(kib).replace(' ', ''), 'size'), kib);
    }
  });
});
