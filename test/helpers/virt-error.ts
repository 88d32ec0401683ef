/** Assertions on virtmem's typed errors. */
import assert from 'node:assert/strict';
import { VirtError } from '../../src/domain/errors.js';

/** `fn` throws a VirtError with `code` whose message mentions every one of `parts`. */
export function assertVirtError(fn: () => unknown, code: string, ...parts: string[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof VirtError, `expected VirtError, got ${String(err)}`);
    assert.equal(err.code, code, `code for: ${err.message}`);
    for (const p of parts) assert.ok(err.message.includes(p), `'${err.message}' should mention '${p}'`);
    return true;
  });
}
