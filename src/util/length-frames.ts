/**
 * Length-prefixed frames on a byte stream, pure: each frame starts with a 4-byte big-endian
 * length that counts itself (libvirt's RPC packets; virtmemd's RPC socket). `LengthFrames`
 * reassembles frames from chunks split anywhere; a length word outside the bounds means the
 * stream can no longer be trusted: `push` throws, and the caller closes the connection.
 */

export const LENGTH_WORD_BYTES = 4;

export interface LengthFrameBounds {
  /** The shortest frame, length word included. */
  minBytes: number;
  /** The longest frame, length word included. */
  maxBytes: number;
  /** The error for a length word out of bounds (what the protocol calls it). */
  outOfBounds(length: number, tooShort: boolean): Error;
}

export class LengthFrames {
  #chunks: Buffer[] = [];
  #buffered = 0;

  constructor(private readonly bounds: LengthFrameBounds) {}

  /** The whole frames completed by `chunk` (length word included), in order. @throws bounds.outOfBounds */
  push(chunk: Buffer): Buffer[] {
    if (this.#buffered === 0) {
      // Common case: the chunk starts at a frame boundary; slice frames without copying.
      const out: Buffer[] = [];
      let off = 0;
      while (chunk.length - off >= LENGTH_WORD_BYTES) {
        const len = this.#check(chunk.readUInt32BE(off));
        if (chunk.length - off < len) break;
        out.push(chunk.subarray(off, off + len));
        off += len;
      }
      if (off === chunk.length) return out;
      this.#chunks.push(chunk.subarray(off));
      this.#buffered = chunk.length - off;
      return out.concat(this.#drain());
    }
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    return this.#drain();
  }

  /** Bytes of an incomplete frame held back. */
  get pendingBytes(): number {
    return this.#buffered;
  }

  #check(len: number): number {
    if (len < this.bounds.minBytes) throw this.bounds.outOfBounds(len, true);
    if (len > this.bounds.maxBytes) throw this.bounds.outOfBounds(len, false);
    return len;
  }

  #drain(): Buffer[] {
    const out: Buffer[] = [];
    while (this.#buffered >= LENGTH_WORD_BYTES) {
      const head = this.#chunks[0]!.length >= LENGTH_WORD_BYTES ? this.#chunks[0]! : Buffer.concat(this.#chunks);
      const len = this.#check(head.readUInt32BE(0));
      if (this.#buffered < len) break;
      const all = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks);
      out.push(all.subarray(0, len));
      const rest = all.subarray(len);
      this.#chunks = rest.length ? [rest] : [];
      this.#buffered = rest.length;
    }
    return out;
  }
}

/** `payload` (bytes, or text as UTF-8) as one frame: its length word (counting itself) and the bytes. */
export function lengthFrame(payload: Buffer | string): Buffer {
  const n = typeof payload === 'string' ? Buffer.byteLength(payload, 'utf8') : payload.length;
  const out = Buffer.allocUnsafe(LENGTH_WORD_BYTES + n);
  out.writeUInt32BE(out.length, 0);
  if (typeof payload === 'string') out.write(payload, LENGTH_WORD_BYTES, 'utf8');
  else payload.copy(out, LENGTH_WORD_BYTES);
  return out;
}
