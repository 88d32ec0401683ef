/**
 * QMP wire framing: pure, no I/O.
 *
 * QMP spec (docs/interop/qmp-spec, 2.1.1): every message the server sends is one JSON object
 * terminated by CRLF. A JSON text never contains a raw newline (newlines inside strings are
 * escaped), so splitting on the LF byte is exact. We split on *bytes*, not characters: 0x0A
 * never occurs inside a multi-byte UTF-8 sequence, so a character split across two chunks is
 * only decoded once its whole line has arrived.
 */

import { QmpProtocolError } from './errors.js';

/** Default cap on one line; QEMU's own replies (e.g. `query-qmp-schema`) stay far below it. */
export const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;

const LF = 0x0a;

/** Result of {@link QmpLineDecoder.feed}: the messages before any bad line, and that line's error. */
export interface DecodeResult {
  messages: unknown[];
  error?: QmpProtocolError;
}

/**
 * Splits a QMP byte stream into parsed JSON messages. Keeps the incomplete tail between calls.
 *
 * A protocol error is final: QMP has no way to resynchronise a stream (the 0xFF sentinel of
 * spec 2.6 is guest-agent only), so after one the decoder refuses further input.
 */
export class QmpLineDecoder {
  readonly maxLineBytes: number;
  #parts: Buffer[] = [];
  #partBytes = 0;
  #failed: QmpProtocolError | undefined;

  constructor(opts: { maxLineBytes?: number } = {}) {
    this.maxLineBytes = opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  }

  /**
   * Adds a chunk and returns every message it completes.
   * @throws {QmpProtocolError} on an unparsable line, a line over `maxLineBytes`, or any call
   *   after an earlier protocol error. Messages before the bad line in the same chunk are lost;
   *   use {@link feed} to keep them.
   */
  push(chunk: Buffer | string): unknown[] {
    const { messages, error } = this.feed(chunk);
    if (error) throw error;
    return messages;
  }

  /**
   * Like {@link push} but never throws: returns the messages that precede a bad line together
   * with the error, so a client can still settle replies that arrived before the garbage.
   */
  feed(chunk: Buffer | string): DecodeResult {
    if (this.#failed) {
      return { messages: [], error: new QmpProtocolError('QMP stream already broken by an earlier protocol error', { cause: this.#failed }) };
    }
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    const messages: unknown[] = [];
    let start = 0;
    while (start < buf.length) {
      const lf = buf.indexOf(LF, start);
      if (lf === -1) {
        const tail = buf.subarray(start);
        this.#parts.push(tail);
        this.#partBytes += tail.length;
        if (this.#partBytes > this.maxLineBytes) {
          return { messages, error: this.#fail(`QMP line exceeds ${this.maxLineBytes} bytes without a line end`) };
        }
        break;
      }
      const piece = buf.subarray(start, lf);
      start = lf + 1;
      const line = this.#parts.length === 0 ? piece : Buffer.concat([...this.#parts, piece]);
      this.#parts = [];
      this.#partBytes = 0;
      if (line.length > this.maxLineBytes) {
        return { messages, error: this.#fail(`QMP line of ${line.length} bytes exceeds ${this.maxLineBytes} bytes`) };
      }
      const text = line.toString('utf8').trim(); // drops the CR of CRLF
      if (text === '') continue;
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch (err) {
        return { messages, error: this.#fail(`unparsable QMP line: ${JSON.stringify(snippet(text))}`, err) };
      }
      messages.push(parsed);
    }
    return { messages };
  }

  /** Bytes held for an incomplete line. */
  get pendingBytes(): number {
    return this.#partBytes;
  }

  #fail(message: string, cause?: unknown): QmpProtocolError {
    this.#parts = [];
    this.#partBytes = 0;
    this.#failed = new QmpProtocolError(message, { cause });
    return this.#failed;
  }
}

/**
 * Serialises one client message (`{"execute", "arguments", "id"}`) as a CRLF-terminated line.
 * @throws {TypeError} if `msg` is not JSON-serialisable (cycle, BigInt) — a programming error.
 */
export function encodeCommand(msg: object): string {
  // JSON.stringify never emits a raw newline, so the line stays one frame.
  return `${JSON.stringify(msg)}\r\n`;
}

function snippet(text: string): string {
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}
