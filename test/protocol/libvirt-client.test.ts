/**
 * The libvirt RPC client against a scripted fake daemon, for faults a real libvirtd will not
 * produce on demand: error replies, garbage, a disconnect mid-reply, silence (keepalive loss),
 * late replies, pings from the daemon, events. The fake frames packets by hand (independent of
 * src/libvirt/framing.ts) so a framing bug cannot hide itself.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type net from 'node:net';
import { LibvirtClient } from '../../src/libvirt/client.js';
import { LibvirtError } from '../../src/libvirt/errors.js';
import { Proc, writeDomain, writeError } from '../../src/libvirt/protocol.js';
import { XdrWriter } from '../../src/libvirt/xdr.js';
import { bounded } from './fake-qmp.js';
import { fakeDaemon, packet, reply, type Call } from './fake-libvirtd.js';

const isLv = (kind: string, code?: string) => (e: unknown): boolean =>
  e instanceof LibvirtError && e.kind === kind && (code === undefined || e.code === code);

test('connect sends AUTH_LIST, CONNECT_OPEN with the name, then the keepalive feature; replies resolve by serial', async () => {
  const d = await fakeDaemon((c, s) => {
    if (c.proc === Proc.DOMAIN_GET_XML_DESC) setTimeout(() => s.write(reply(c, new XdrWriter().string(`xml-${c.serial}`).finish())), c.serial % 2 ? 20 : 1);
  });
  try {
    const cl = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    assert.deepEqual(d.calls.map((c) => c.proc), [Proc.AUTH_LIST, Proc.CONNECT_OPEN, Proc.CONNECT_SUPPORTS_FEATURE]);
    assert.equal(d.calls[1]!.payload.subarray(8, 8 + 14).toString(), 'qemu:///system');
    // VIR_DRV_FEATURE_PROGRAM_KEEPALIVE is 10 (libvirt_internal.h); any other number leaves the
    // daemon's pings off while looking like success.
    assert.equal(d.calls[2]!.payload.readInt32BE(0), 10);
    assert.equal(d.calls[2]!.payload.length, 4);
    // Out-of-order replies go to the right callers.
    const got = await Promise.all([1, 2, 3, 4].map(() => cl.call(Proc.DOMAIN_GET_XML_DESC, null).then((b) => b.subarray(4, 4 + b.readUInt32BE(0)).toString())));
    assert.deepEqual(got.map((s) => s.startsWith('xml-')), [true, true, true, true]);
    assert.equal(new Set(got).size, 4);
    await cl.close();
    assert.equal(d.calls.at(-1)!.proc, Proc.CONNECT_CLOSE);
  } finally { await d.close(); }
});

test('an error reply becomes a LibvirtError with libvirt\'s code, domain and message', async () => {
  const d = await fakeDaemon((c, s) => {
    const w = new XdrWriter();
    writeError(w, { code: 42, domain: 10, message: "Domain not found: no domain with matching name 'x'", level: 2, str1: null, str2: null, str3: null, int1: -1, int2: -1 });
    s.write(packet(c.prog, c.proc, 1, c.serial, 1, w.finish()));
  });
  try {
    const cl = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    await assert.rejects(cl.call(Proc.DOMAIN_LOOKUP_BY_NAME, (w) => w.string('x')), (e: unknown) =>
      isLv('remote', 'NO_DOMAIN')(e) && (e as LibvirtError).libvirtCode === 42 && (e as LibvirtError).libvirtDomain === 10 && /no domain with matching name 'x'/.test((e as Error).message));
    // The connection stays usable after a failed call.
    assert.equal(cl.connectionState, 'open');
    cl.destroy();
  } finally { await d.close(); }
});

test('garbage from the daemon fails every pending call with a protocol error and closes', async () => {
  const d = await fakeDaemon((_c, s) => { s.write(Buffer.from('00000003deadbeef', 'hex')); });
  try {
    const cl = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    const pending = [cl.call(Proc.DOMAIN_GET_INFO, null), cl.call(Proc.DOMAIN_GET_INFO, null)];
    for (const p of pending) await bounded(assert.rejects(p, isLv('protocol', 'INTERNAL')), 10_000, 'garbage');
    assert.equal(cl.connectionState, 'closed');
    await assert.rejects(cl.call(Proc.DOMAIN_GET_INFO, null), isLv('protocol'));
  } finally { await d.close(); }
});

test('a reply announced larger than libvirt\'s 32 MiB limit fails at its length word; nothing of it is buffered', async () => {
  let written = 0;
  const d = await fakeDaemon((c, s) => {
    // The header of a 2 GiB packet, then bytes without end for as long as the client reads.
    const head = packet(c.prog, c.proc, 1, c.serial, 0);
    head.writeUInt32BE(0x80000000, 0);
    s.write(head);
    const chunk = Buffer.alloc(1 << 20);
    const pump = (): void => {
      while (!s.destroyed && written < 256 << 20) {
        written += chunk.length;
        if (!s.write(chunk)) { s.once('drain', pump); return; }
      }
    };
    pump();
  });
  try {
    const cl = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    await bounded(assert.rejects(cl.call(Proc.DOMAIN_GET_INFO, null), (e: unknown) =>
      isLv('protocol', 'INTERNAL')(e) && /packet length 2147483648 exceeds libvirt's limit of 33554432/.test((e as Error).message)), 10_000, 'oversized');
    assert.equal(cl.connectionState, 'closed');
    assert.ok(written < 64 << 20, `the daemon got ${written} bytes out before the client hung up`);
  } finally { await d.close(); }
});

test('a reply whose procedure is not the one its serial called is a protocol error, not a wrong answer', async () => {
  const d = await fakeDaemon((c, s) => { s.write(packet(c.prog, Proc.DOMAIN_GET_XML_DESC, 1, c.serial, 0, new XdrWriter().string('<domain/>').finish())); });
  try {
    const cl = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    await bounded(assert.rejects(cl.call(Proc.DOMAIN_GET_INFO, null), (e: unknown) =>
      isLv('protocol', 'INTERNAL')(e) && /REMOTE_PROC_DOMAIN_GET_XML_DESC.*REMOTE_PROC_DOMAIN_GET_INFO/.test((e as Error).message)), 10_000, 'mismatch');
    assert.equal(cl.connectionState, 'closed');
  } finally { await d.close(); }
});

test('the daemon dying mid-reply rejects pending calls with a typed "closed" error', async () => {
  const d = await fakeDaemon((c, s) => { s.write(reply(c, Buffer.alloc(64)).subarray(0, 40)); setTimeout(() => s.destroy(), 10); });
  try {
    const cl = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    let closed: LibvirtError | null = null;
    cl.onClose((e) => { closed = e; });
    await bounded(assert.rejects(cl.call(Proc.DOMAIN_GET_INFO, null), isLv('closed')), 10_000, 'mid-reply');
    assert.ok(closed, 'close listeners hear about it');
  } finally { await d.close(); }
});

test('keepalive: a silent daemon fails the connection with a keepalive error within interval x (count + 1)', async () => {
  const d = await fakeDaemon(() => { /* never answers, never pongs */ });
  try {
    const cl = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 100, keepaliveCount: 3, callTimeoutMs: 60_000 });
    const started = Date.now();
    await bounded(assert.rejects(cl.call(Proc.DOMAIN_GET_INFO, null), isLv('keepalive', 'TIMEOUT')), 20_000, 'keepalive');
    const pings = d.calls.filter((c) => c.prog === 0x6b656570 && c.proc === 1);
    assert.equal(pings.length, 3, 'three unanswered pings, then give up');
    assert.ok(Date.now() - started < 20_000);
  } finally { await d.close(); }
});

test('keepalive: pings from the daemon are answered with pongs, and an answering daemon keeps the connection', async () => {
  const d = await fakeDaemon((c, s) => {
    if (c.prog === 0x6b656570 && c.proc === 1) s.write(packet(0x6b656570, 2, 2, 0, 0));
  });
  try {
    const cl = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 50, keepaliveCount: 2 });
    d.sockets[0]!.write(packet(0x6b656570, 1, 2, 0, 0));
    await bounded((async () => { while (!d.calls.some((c) => c.prog === 0x6b656570 && c.proc === 2)) await new Promise((r) => setTimeout(r, 10)); })(), 10_000, 'pong');
    // Several keepalive periods later the connection is still open (pongs count as life).
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(cl.connectionState, 'open');
    cl.destroy();
  } finally { await d.close(); }
});

test('call timeout and AbortSignal reject only that call; a late reply is dropped', async () => {
  const held: Array<[Call, net.Socket]> = [];
  const d = await fakeDaemon((c, s) => { held.push([c, s]); });
  try {
    const cl = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    await assert.rejects(cl.call(Proc.DOMAIN_GET_INFO, null, { timeoutMs: 50 }), isLv('timeout', 'TIMEOUT'));
    const ac = new AbortController();
    const p = cl.call(Proc.DOMAIN_GET_INFO, null, { signal: ac.signal });
    ac.abort();
    await assert.rejects(p, isLv('aborted', 'ABORTED'));
    for (const [c, s] of held) s.write(reply(c)); // late replies
    const ok = cl.call(Proc.DOMAIN_GET_INFO, null);
    await bounded((async () => { while (held.length < 3) await new Promise((r) => setTimeout(r, 5)); })(), 10_000, 'third call');
    held[2]![1].write(reply(held[2]![0], Buffer.from('00000001', 'hex')));
    assert.equal((await ok).readUInt32BE(0), 1);
    assert.equal(cl.connectionState, 'open');
    cl.destroy();
  } finally { await d.close(); }
});

test('events on the same connection reach listeners; unknown event procedures are counted, not fatal', async () => {
  const d = await fakeDaemon((c, s) => { if (c.proc === Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY) s.write(reply(c, new XdrWriter().int(7).finish())); });
  try {
    const cl = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    assert.equal(await cl.registerEvent(13), 7);
    const got: unknown[] = [];
    cl.onEvent((e) => got.push(e));
    const w = new XdrWriter().int(7);
    writeDomain(w, { name: 'vm', uuid: Buffer.alloc(16, 1), id: 2 });
    w.uhyper(1024);
    d.sockets[0]!.write(Buffer.concat([packet(0x20008086, 9999, 2, 0, 0), packet(0x20008086, Proc.DOMAIN_EVENT_CALLBACK_BALLOON_CHANGE, 2, 0, 0, w.finish())]));
    await bounded((async () => { while (got.length === 0) await new Promise((r) => setTimeout(r, 5)); })(), 10_000, 'event');
    assert.deepEqual(got, [{ kind: 'balloon-change', callbackId: 7, dom: { name: 'vm', uuid: Buffer.alloc(16, 1), id: 2 }, actualKiB: 1024 }]);
    assert.equal(cl.unknownEvents.get(9999), 1);
    cl.destroy();
  } finally { await d.close(); }
});

test('connecting to a socket nobody listens on is a typed connect error', async () => {
  await assert.rejects(LibvirtClient.connect('qemu:///system?socket=/nonexistent/sock', { timeoutMs: 5_000 }), isLv('connect'));
});

test('auth: polkit is asked for when the daemon lists only polkit; SASL-only daemons are a typed connect error naming SASL', async () => {
  const polkit = await fakeDaemon((c, s) => { if (c.proc === Proc.AUTH_POLKIT) s.write(reply(c, new XdrWriter().int(1).finish())); }, [2]);
  const sasl = await fakeDaemon(() => undefined, [1]);
  try {
    const cl = await LibvirtClient.connect(polkit.uri, { keepaliveIntervalMs: 0 });
    assert.deepEqual(polkit.calls.map((c) => c.proc), [Proc.AUTH_LIST, Proc.AUTH_POLKIT, Proc.CONNECT_OPEN, Proc.CONNECT_SUPPORTS_FEATURE]);
    await cl.close();
    await bounded(assert.rejects(LibvirtClient.connect(sasl.uri, { keepaliveIntervalMs: 0 }), (e: unknown) => isLv('connect')(e) && /SASL/.test((e as Error).message)), 10_000, 'sasl');
    assert.deepEqual(sasl.calls.map((c) => c.proc), [Proc.AUTH_LIST], 'nothing opened without authentication');
  } finally {
    await polkit.close();
    await sasl.close();
  }
});
