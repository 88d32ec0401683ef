/**
 * XDR (RFC 4506) encoding and decoding, pure: the data representation of libvirt's RPC
 * protocol. A writer appends big-endian 4-byte-aligned items to a growing buffer; a reader
 * walks a buffer and throws XdrError (never reads past the end, never allocates more than the
 * input can hold) on truncated or malformed input.
 */

/** Malformed or truncated XDR data, or a value that cannot be encoded. */
export class XdrError extends Error {
  readonly code = 'XDR' as const;
  constructor(message: string) {
    super(message);
    this.name = 'XdrError';
  }
}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;
const U32_MAX = 0xffff_ffff;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const U64_MAX = 2n ** 64n - 1n;

/** Appends XDR items; `finish()` returns the bytes written. */
export class XdrWriter {
  private buf: Buffer;
  private len = 0;

  constructor(initialBytes = 256) {
    this.buf = Buffer.allocUnsafe(initialBytes);
  }

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  int(v: number): this {
    if (!Number.isInteger(v) || v < -0x8000_0000 || v > 0x7fff_ffff) throw new XdrError(`int out of range: ${v}`);
    this.room(4); this.buf.writeInt32BE(v, this.len); this.len += 4;
    return this;
  }

  uint(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > U32_MAX) throw new XdrError(`unsigned int out of range: ${v}`);
    this.room(4); this.buf.writeUInt32BE(v, this.len); this.len += 4;
    return this;
  }

  bool(v: boolean): this {
    return this.int(v ? 1 : 0);
  }

  hyper(v: number | bigint): this {
    // Checked before BigInt(), which throws a bare RangeError for 1.5 or NaN.
    if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new XdrError(`hyper not a safe integer: ${v}`);
    const b = BigInt(v);
    if (b < I64_MIN || b > I64_MAX) throw new XdrError(`hyper out of range: ${v}`);
    this.room(8); this.buf.writeBigInt64BE(b, this.len); this.len += 8;
    return this;
  }

  uhyper(v: number | bigint): this {
    if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new XdrError(`unsigned hyper not a safe integer: ${v}`);
    const b = BigInt(v);
    if (b < 0n || b > U64_MAX) throw new XdrError(`unsigned hyper out of range: ${v}`);
    this.room(8); this.buf.writeBigUInt64BE(b, this.len); this.len += 8;
    return this;
  }

  double(v: number): this {
    if (typeof v !== 'number') throw new XdrError(`double must be a number, got ${typeof v}`);
    this.room(8); this.buf.writeDoubleBE(v, this.len); this.len += 8;
    return this;
  }

  /** Fixed-length opaque: exactly `size` bytes, padded to 4. */
  fixedOpaque(data: Uint8Array, size: number): this {
    if (data.length !== size) throw new XdrError(`fixed opaque needs ${size} bytes, got ${data.length}`);
    const p = pad4(size);
    this.room(size + p);
    this.buf.set(data, this.len); this.len += size;
    this.buf.fill(0, this.len, this.len + p); this.len += p;
    return this;
  }

  /** Variable-length opaque: length word, bytes, padding. */
  opaque(data: Uint8Array, max = U32_MAX): this {
    if (data.length > max) throw new XdrError(`opaque longer than its limit ${max}: ${data.length} bytes`);
    this.uint(data.length);
    return this.fixedOpaque(data, data.length);
  }

  /** A string as UTF-8 bytes. */
  string(s: string, maxBytes = U32_MAX): this {
    return this.opaque(Buffer.from(s, 'utf8'), maxBytes);
  }

  /** XDR optional-data (`type *name`): a boolean, then the value when present. */
  optional<T>(v: T | null | undefined, write: (w: this, v: T) => void): this {
    if (v === null || v === undefined) return this.int(0);
    this.int(1);
    write(this, v);
    return this;
  }

  /** Variable-length array: count, then each element. */
  array<T>(items: readonly T[], write: (w: this, v: T) => void, max = U32_MAX): this {
    if (items.length > max) throw new XdrError(`array longer than its limit ${max}: ${items.length}`);
    this.uint(items.length);
    for (const it of items) write(this, it);
    return this;
  }

  get length(): number {
    return this.len;
  }

  finish(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}

/** Reads XDR items from `buf` starting at `offset`. */
export class XdrReader {
  private pos: number;

  constructor(private readonly buf: Buffer, offset = 0) {
    this.pos = offset;
  }

  private need(n: number, what: string): void {
    if (this.pos + n > this.buf.length) {
      throw new XdrError(`truncated data: ${what} needs ${n} bytes at offset ${this.pos}, ${this.buf.length - this.pos} left`);
    }
  }

  int(): number {
    this.need(4, 'int');
    const v = this.buf.readInt32BE(this.pos); this.pos += 4;
    return v;
  }

  uint(): number {
    this.need(4, 'unsigned int');
    const v = this.buf.readUInt32BE(this.pos); this.pos += 4;
    return v;
  }

  bool(): boolean {
    const v = this.int();
    if (v !== 0 && v !== 1) throw new XdrError(`bool must be 0 or 1, got ${v}`);
    return v === 1;
  }

  hyperBig(): bigint {
    this.need(8, 'hyper');
    const v = this.buf.readBigInt64BE(this.pos); this.pos += 8;
    return v;
  }

  uhyperBig(): bigint {
    this.need(8, 'unsigned hyper');
    const v = this.buf.readBigUInt64BE(this.pos); this.pos += 8;
    return v;
  }

  /** A hyper as a number; throws when it is not a safe integer. */
  hyper(): number {
    const v = this.hyperBig();
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) throw new XdrError(`hyper ${v} does not fit a safe integer`);
    return Number(v);
  }

  /** An unsigned hyper as a number; throws when it is not a safe integer. */
  uhyper(): number {
    const v = this.uhyperBig();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new XdrError(`unsigned hyper ${v} does not fit a safe integer`);
    return Number(v);
  }

  double(): number {
    this.need(8, 'double');
    const v = this.buf.readDoubleBE(this.pos); this.pos += 8;
    return v;
  }

  fixedOpaque(size: number): Buffer {
    const p = pad4(size);
    this.need(size + p, 'opaque');
    const v = Buffer.from(this.buf.subarray(this.pos, this.pos + size));
    this.pos += size + p;
    return v;
  }

  opaque(max = U32_MAX): Buffer {
    const n = this.uint();
    if (n > max) throw new XdrError(`opaque length ${n} exceeds its limit ${max}`);
    return this.fixedOpaque(n);
  }

  string(max = U32_MAX): string {
    return this.opaque(max).toString('utf8');
  }

  optional<T>(read: (r: this) => T): T | null {
    const present = this.int();
    if (present === 0) return null;
    if (present !== 1) throw new XdrError(`optional-data flag must be 0 or 1, got ${present}`);
    return read(this);
  }

  array<T>(read: (r: this) => T, max = U32_MAX): T[] {
    const n = this.uint();
    if (n > max) throw new XdrError(`array length ${n} exceeds its limit ${max}`);
    // Each element takes at least 4 bytes: refuse counts the data cannot hold before looping.
    if (n * 4 > this.buf.length - this.pos) throw new XdrError(`truncated data: array of ${n} elements in ${this.buf.length - this.pos} bytes`);
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(read(this));
    return out;
  }

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  /** Throw unless every byte was consumed (a reply longer than its type is a protocol error). */
  end(): void {
    if (this.pos !== this.buf.length) throw new XdrError(`${this.buf.length - this.pos} unexpected trailing bytes`);
  }
}
