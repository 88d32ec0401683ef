/**
 * libvirt RPC packet framing, pure. A packet is a 4-byte big-endian length (counting itself),
 * a 24-byte header {prog, vers, proc, type, serial, status} and an XDR payload.
 * `FrameDecoder` reassembles packets from arbitrary stream chunks.
 */
import { XdrError, XdrReader, XdrWriter } from './xdr.js';
import { LengthFrames, LENGTH_WORD_BYTES } from '../util/length-frames.js';

/** virNetMessageType. */
export const MessageType = { CALL: 0, REPLY: 1, MESSAGE: 2, STREAM: 3, CALL_WITH_FDS: 4, REPLY_WITH_FDS: 5 } as const;
/** virNetMessageStatus. */
export const MessageStatus = { OK: 0, ERROR: 1, CONTINUE: 2 } as const;

export const LEN_BYTES = LENGTH_WORD_BYTES;
export const HEADER_BYTES = 24;
/**
 * VIR_NET_MESSAGE_MAX (virnetprotocol.x): the largest packet libvirt sends or accepts, length
 * word excluded. 32 MiB: a smaller bound would refuse large replies libvirt legitimately sends
 * (all-domain statistics of a big host) as protocol errors.
 */
export const MESSAGE_MAX_BYTES = 32 * 1024 * 1024;

export interface PacketHeader {
  prog: number;
  vers: number;
  proc: number;
  type: number;
  serial: number;
  status: number;
}

export interface Packet {
  header: PacketHeader;
  /** The XDR payload after the header. */
  payload: Buffer;
}

/** Encode one packet: length word, header, payload. */
export function encodePacket(header: PacketHeader, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const total = LEN_BYTES + HEADER_BYTES + payload.length;
  if (total - LEN_BYTES > MESSAGE_MAX_BYTES) throw new XdrError(`packet of ${total} bytes exceeds libvirt's limit of ${MESSAGE_MAX_BYTES}`);
  const w = new XdrWriter(total);
  w.uint(total).uint(header.prog).uint(header.vers).int(header.proc).int(header.type).uint(header.serial).int(header.status);
  const out = Buffer.allocUnsafe(total);
  w.finish().copy(out, 0);
  out.set(payload, LEN_BYTES + HEADER_BYTES);
  return out;
}

/**
 * Fill in the length word and header of `packet`, whose first 28 bytes were reserved for them
 * (callers that build the payload in place avoid a copy).
 */
export function writeHeader(packet: Buffer, header: PacketHeader): void {
  packet.writeUInt32BE(packet.length, 0);
  packet.writeUInt32BE(header.prog >>> 0, 4);
  packet.writeUInt32BE(header.vers >>> 0, 8);
  packet.writeInt32BE(header.proc, 12);
  packet.writeInt32BE(header.type, 16);
  packet.writeUInt32BE(header.serial >>> 0, 20);
  packet.writeInt32BE(header.status, 24);
}

/** Decode one complete packet (length word included). */
export function decodePacket(frame: Buffer): Packet {
  const r = new XdrReader(frame);
  const len = r.uint();
  if (len !== frame.length) throw new XdrError(`packet length word says ${len} bytes, frame has ${frame.length}`);
  const header: PacketHeader = { prog: r.uint(), vers: r.uint(), proc: r.int(), type: r.int(), serial: r.uint(), status: r.int() };
  return { header, payload: frame.subarray(LEN_BYTES + HEADER_BYTES) };
}

/**
 * Reassembles packets from stream chunks split anywhere. A length word that cannot be a packet
 * (shorter than a header, longer than libvirt's maximum) is a protocol error: the stream can no
 * longer be trusted, so `push` throws and the caller closes the connection.
 */
export class FrameDecoder {
  readonly #frames = new LengthFrames({
    minBytes: LEN_BYTES + HEADER_BYTES,
    maxBytes: LEN_BYTES + MESSAGE_MAX_BYTES,
    outOfBounds: (len, tooShort) => new XdrError(tooShort ? `packet length ${len} is shorter than a header` : `packet length ${len} exceeds libvirt's limit of ${MESSAGE_MAX_BYTES}`),
  });

  push(chunk: Buffer): Packet[] {
    return this.#frames.push(chunk).map(decodePacket);
  }

  /** Bytes of an incomplete packet held back. */
  get pendingBytes(): number {
    return this.#frames.pendingBytes;
  }
}
