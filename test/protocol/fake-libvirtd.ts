/**
 * A scripted fake libvirt daemon on a unix socket, for the protocol tests: it answers the
 * connect handshake itself and hands every other call to the test's handler. Packets are
 * framed by hand (independent of src/libvirt/framing.ts) so a framing bug cannot hide itself.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Proc } from '../../src/libvirt/protocol.js';
import { XdrWriter } from '../../src/libvirt/xdr.js';

export interface Call { prog: number; proc: number; type: number; serial: number; payload: Buffer }
export type Handler = (call: Call, sock: net.Socket) => void;

export function packet(prog: number, proc: number, type: number, serial: number, status: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(28 + payload.length);
  b.writeUInt32BE(b.length, 0); b.writeUInt32BE(prog, 4); b.writeUInt32BE(1, 8); b.writeInt32BE(proc, 12);
  b.writeInt32BE(type, 16); b.writeUInt32BE(serial, 20); b.writeInt32BE(status, 24); b.set(payload, 28);
  return b;
}
export const reply = (c: Call, payload: Uint8Array = Buffer.alloc(0)): Buffer => packet(c.prog, c.proc, 1, c.serial, 0, payload);

/** A fake daemon: answers the connect handshake, then hands calls to `handler`. */
export async function fakeDaemon(handler: Handler, authTypes: number[] = [0]): Promise<{ uri: string; calls: Call[]; sockets: net.Socket[]; close(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'vm-fakelv-'));
  const sockPath = path.join(dir, 'sock');
  const calls: Call[] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((sock) => {
    sockets.push(sock);
    let buf = Buffer.alloc(0);
    sock.on('error', () => undefined);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4 && buf.length >= buf.readUInt32BE(0)) {
        const len = buf.readUInt32BE(0);
        const c: Call = { prog: buf.readUInt32BE(4), proc: buf.readInt32BE(12), type: buf.readInt32BE(16), serial: buf.readUInt32BE(20), payload: buf.subarray(28, len) };
        buf = buf.subarray(len);
        calls.push(c);
        if (c.prog === 0x20008086 && c.proc === Proc.AUTH_LIST) sock.write(reply(c, new XdrWriter().array(authTypes, (w, v) => w.int(v)).finish()));
        else if (c.prog === 0x20008086 && (c.proc === Proc.CONNECT_OPEN || c.proc === Proc.CONNECT_CLOSE)) sock.write(reply(c));
        else if (c.prog === 0x20008086 && c.proc === Proc.CONNECT_SUPPORTS_FEATURE) sock.write(reply(c, new XdrWriter().int(1).finish()));
        else handler(c, sock);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(sockPath, resolve));
  return {
    uri: `qemu+unix:///system?socket=${sockPath}`, calls, sockets,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

