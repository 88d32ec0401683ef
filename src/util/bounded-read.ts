/**
 * Reading input virtmem does not control (a file or stdin named by the user, a definition in
 * the state directory, a request body) with a byte bound enforced *while* reading: an endless
 * input (`/dev/zero`, `yes |`, a client that never stops sending) is cut at the bound, so the
 * process never holds more than the bound plus one chunk. The one place every such reader uses.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { LoosePermissionsError, looseSecretReason } from './private-files.js';

/** Bytes read from a file per step: also the most an input can overshoot its bound by. */
const CHUNK_BYTES = 64 * 1024;

/** Root of the errors of reading bounded input; `code` tells them apart. */
export class InputError extends Error {
  constructor(readonly code: 'INPUT_TOO_LARGE' | 'NOT_REGULAR_FILE', message: string) {
    super(message);
    this.name = 'InputError';
  }
}

/** The input is longer than its bound; nothing of it was used. */
export class InputTooLargeError extends InputError {
  constructor(readonly source: string, readonly maxBytes: number, what: string) {
    super('INPUT_TOO_LARGE', `${source} is over the ${maxBytes}-byte limit for ${what}; nothing was read past it`);
    this.name = 'InputTooLargeError';
  }
}

/** A file virtmem keeps for itself is not a plain file (a symbolic link, a FIFO, a device). */
export class NotRegularFileError extends InputError {
  constructor(readonly source: string, readonly kind: string) {
    super('NOT_REGULAR_FILE', `${source} is ${kind}, not a regular file; virtmem does not follow links or read special files in its state directory`);
    this.name = 'NotRegularFileError';
  }
}

export interface ReadBoundedOptions {
  /** What the input is, for the error ("domain XML", "a token file"). */
  what: string;
  /**
   * A file of virtmem's own state: refuse a symbolic link (O_NOFOLLOW, so a link swapped in
   * after a check is refused too) and anything but a regular file (a FIFO would block forever).
   */
  ownFile?: boolean;
  /** A secret (a token): refuse a file everyone may read or others may write (private-files.ts). */
  secret?: boolean;
}

/**
 * The bytes of `stream`, at most `maxBytes`. Once the bound is passed (or reading fails) the
 * stream is destroyed, so an endless source stops being read; with `drainOnOverflow` it is
 * drained instead (its data read and dropped), for a caller that still answers on the same
 * connection (an HTTP 413) and then closes it.
 * @throws InputTooLargeError past `maxBytes`; the stream's own error when reading fails.
 */
export function readStreamBounded(stream: Readable, maxBytes: number, source: string, what: string, opts: { drainOnOverflow?: boolean } = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = (): void => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.on('error', () => {}); // what follows a settled read (a reset) is nobody's to report
    };
    const onData = (chunk: Buffer | string): void => {
      const b = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
      size += b.length;
      if (size > maxBytes) {
        stop();
        if (opts.drainOnOverflow) stream.resume();
        else stream.destroy();
        reject(new InputTooLargeError(source, maxBytes, what));
        return;
      }
      chunks.push(b);
    };
    const onEnd = (): void => { stop(); resolve(Buffer.concat(chunks, size)); };
    const onError = (err: Error): void => { stop(); stream.destroy(); reject(err); };
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('error', onError);
  });
}

/**
 * The bytes of the file `path`, at most `maxBytes`, read a chunk at a time (a regular file, a
 * device such as /dev/zero, a pipe such as /dev/stdin alike).
 * @throws InputTooLargeError past `maxBytes`; NotRegularFileError (ownFile); LoosePermissionsError
 *   (secret); the fs error
 *   (ENOENT, EACCES, EISDIR, and ELOOP for a link with ownFile) when it cannot be opened or read.
 */
export async function readFileBounded(path: string, maxBytes: number, opts: ReadBoundedOptions): Promise<Buffer> {
  const flags = constants.O_RDONLY | (opts.ownFile ? constants.O_NOFOLLOW | constants.O_NONBLOCK : 0);
  let fh;
  try {
    fh = await open(path, flags);
  } catch (err) {
    if (opts.ownFile && (err as NodeJS.ErrnoException).code === 'ELOOP') throw new NotRegularFileError(path, 'a symbolic link');
    throw err;
  }
  try {
    if (opts.ownFile || opts.secret) {
      // Checked on the open file, so it is the file read that passed.
      const st = await fh.stat();
      if (opts.ownFile && !st.isFile()) throw new NotRegularFileError(path, st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO' : 'a special file');
      const loose = opts.secret ? looseSecretReason(path, st) : null;
      if (loose) throw new LoosePermissionsError(`refusing to use ${opts.what}: ${loose}`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for (;;) {
      const buf = Buffer.allocUnsafe(CHUNK_BYTES);
      const { bytesRead } = await fh.read(buf, 0, CHUNK_BYTES, null);
      if (bytesRead === 0) break;
      size += bytesRead;
      if (size > maxBytes) throw new InputTooLargeError(path, maxBytes, opts.what);
      chunks.push(buf.subarray(0, bytesRead));
    }
    return Buffer.concat(chunks, size);
  } finally {
    await fh.close();
  }
}

/**
 * A user's input argument: `-` is standard input, anything else a file path.
 * @throws what readFileBounded / readStreamBounded throw.
 */
export function readInputBounded(arg: string, maxBytes: number, what: string, stdin: Readable = process.stdin): Promise<Buffer> {
  return arg === '-' ? readStreamBounded(stdin, maxBytes, 'standard input', what) : readFileBounded(arg, maxBytes, { what });
}
