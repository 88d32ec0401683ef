import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { VirtError } from '../../src/domain/errors.js';
import { MAX_DOMAIN_NAME_LENGTH, isUuid, newUuid, normalizeUuid, printable, validateDomainName } from '../../src/domain/name.js';

function assertInvalid(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof VirtError);
    assert.equal(err.code, 'INVALID_ARG');
    for (const p of parts) assert.ok(err.message.includes(p), `'${err.message}' should mention '${p}'`);
    return true;
  });
}

describe('validateDomainName', () => {
  const good = ['a', 'vm1', 'fedora-39', 'my_vm.test', 'a+b', 'A.B-C_D+E', 'x'.repeat(MAX_DOMAIN_NAME_LENGTH), '0', 'a..b', 'trailing.'];
  for (const name of good) {
    it(`accepts '${name}'`, () => assert.equal(validateDomainName(name), name));
  }
  const bad: Array<[string, string]> = [
    ['', 'empty'],
    ['x'.repeat(MAX_DOMAIN_NAME_LENGTH + 1), 'longer than 64'],
    ['.', 'reserved'],
    ['..', 'reserved'],
    ['a/b', "'/'"],
    ['../etc', "'/'"],
    ['.hidden', "start with '.'"],
    ['-rf', "start with '-'"],
    ['a b', 'whitespace'],
    [' a', 'whitespace'],
    ['a\u00a0b', 'whitespace'],
    ['a\tb', 'control'],
    ['a\nb', 'control'],
    ['a\u0000b', 'control'],
    ['a\u007fb', 'control'],
    ['a\u0085b', 'control'],
    ['caf\u00e9', 'only letters'],
    ['vm:1', 'only letters'],
    ['vm;rm', 'only letters'],
    ['$(id)', 'only letters'],
    ['vm*', 'only letters'],
    ['a\\b', 'only letters'],
    ['\u0430dmin', 'only letters'], // Cyrillic 'а' look-alike
  ];
  for (const [name, reason] of bad) {
    it(`rejects ${JSON.stringify(name)} (${reason})`, () => assertInvalid(() => validateDomainName(name), 'invalid domain name', reason));
  }
  it('shows control characters escaped in the message', () => {
    assertInvalid(() => validateDomainName('a\nb'), "'a\\x0ab'");
  });
});

describe('UUIDs', () => {
  const canonical = '6b1e3c1a-2f0b-4e2a-9d3c-1234567890ab';
  it('isUuid accepts dashed and bare forms, any case', () => {
    for (const u of [canonical, canonical.toUpperCase(), canonical.replace(/-/g, ''), '00000000-0000-0000-0000-000000000000']) {
      assert.equal(isUuid(u), true, u);
    }
  });
  it('isUuid rejects everything else', () => {
    for (const u of ['', 'vm1', `${canonical}0`, canonical.slice(1), ` ${canonical}`, canonical.replace('6', 'g'), '6b1e3c1a2f0b-4e2a-9d3c-1234567890ab', `{${canonical}}`]) {
      assert.equal(isUuid(u), false, u);
    }
  });
  it('normalizeUuid returns lower-case 8-4-4-4-12', () => {
    assert.equal(normalizeUuid(canonical.toUpperCase()), canonical);
    assert.equal(normalizeUuid(canonical.replace(/-/g, '')), canonical);
    assert.equal(normalizeUuid(canonical), canonical);
  });
  it('normalizeUuid throws INVALID_ARG naming the input', () => {
    assertInvalid(() => normalizeUuid('not-a-uuid'), "'not-a-uuid'");
  });
  it('newUuid is canonical, version 4 and fresh', () => {
    const a = newUuid();
    assert.equal(normalizeUuid(a), a);
    assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.notEqual(newUuid(), a);
  });
});

describe('printable', () => {
  it('caps length and escapes control characters', () => {
    assert.equal(printable('a\u0001b'), 'a\\x01b');
    assert.equal(printable('x'.repeat(100)), `${'x'.repeat(64)}...`);
  });
});
