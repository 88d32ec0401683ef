/**
 * Event registrations shared on one libvirt connection, against a scripted fake daemon: libvirt
 * refuses a second registration of the same event id on a connection ("event callback already
 * tracked"), which is what a daemon's watch and a `setmem --wait` on the same connection both
 * ask for. The client sends the first registration only, libvirt hears of the last
 * deregistration only, a caller that gives up does not take the others with it, and a failed
 * registration is asked for again by the next caller.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type net from 'node:net';
import { LibvirtClient } from '../../src/libvirt/client.js';
import { LibvirtError } from '../../src/libvirt/errors.js';
import { Proc, writeError } from '../../src/libvirt/protocol.js';
import { XdrWriter } from '../../src/libvirt/xdr.js';
import { bounded } from './fake-qmp.js';
import { fakeDaemon, packet, reply, type Call } from './fake-libvirtd.js';

const REG = Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY;
const DEREG = Proc.CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY;
const BALLOON = 13;
const DEVICE_SIZE = 26;

/** A fake daemon that holds every (de)registration until the test answers it. */
async function holdingDaemon() {
  const held: Array<[Call, net.Socket]> = [];
  const d = await fakeDaemon((c, s) => { held.push([c, s]); });
  const of = (proc: number): Call[] => d.calls.filter((c) => c.proc === proc);
  /** Waits (bounded) until `n` calls of `proc` have come. */
  const calls = (proc: number, n: number): Promise<void> =>
    bounded((async () => { while (of(proc).length < n) await new Promise((r) => setTimeout(r, 5)); })(), 10_000, `${n} calls of ${proc}`);
  /** Answers the oldest held call of `proc`: a callback id, or an error. */
  const answer = (proc: number, with_: { id?: number; error?: string }): void => {
    const i = held.findIndex(([c]) => c.proc === proc);
    assert.ok(i >= 0, `a held call of ${proc}`);
    const [[c, s]] = held.splice(i, 1) as [[Call, net.Socket]];
    if (with_.error) {
      const w = new XdrWriter();
      writeError(w, { code: 8, domain: 0, message: with_.error, level: 2, str1: null, str2: null, str3: null, int1: -1, int2: -1 });
      s.write(packet(c.prog, c.proc, 1, c.serial, 1, w.finish()));
    } else {
      s.write(reply(c, with_.id === undefined ? Buffer.alloc(0) : new XdrWriter().int(with_.id).finish()));
    }
  };
  return { d, of, calls, answer };
}

test('two callers of one event id share one registration; libvirt hears of the last deregistration only', async () => {
  const { d, of, calls, answer } = await holdingDaemon();
  try {
    const cl = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    const watch = cl.registerEvent(BALLOON);
    const setmem = cl.registerEvent(BALLOON);
    const other = cl.registerEvent(DEVICE_SIZE);
    await calls(REG, 2);
    answer(REG, { id: 7 });
    answer(REG, { id: 8 });
    assert.deepEqual(await Promise.all([watch, setmem, other]), [7, 7, 8]);
    assert.equal(of(REG).length, 2, 'one registration per event id');
    // A third caller while it is registered: nothing sent.
    assert.equal(await cl.registerEvent(BALLOON), 7);
    assert.equal(of(REG).length, 2);
    await cl.deregisterEvent(7);
    await cl.deregisterEvent(7);
    assert.equal(of(DEREG).length, 0, 'still used by one caller');
    const last = cl.deregisterEvent(7);
    await calls(DEREG, 1);
    // A new caller while the deregistration is under way waits for it (libvirt runs a client's
    // calls in parallel: a registration overtaking it would be refused as already tracked).
    const again = cl.registerEvent(BALLOON);
    await new Promise((r) => setImmediate(r));
    assert.equal(of(REG).length, 2, 'not sent before the deregistration is answered');
    answer(DEREG, {});
    await last;
    await calls(REG, 3);
    answer(REG, { id: 9 });
    assert.equal(await again, 9);
    cl.destroy();
  } finally { await d.close(); }
});

test('a caller that gives up does not end the registration of the others; when all give up it is dropped', async () => {
  const { d, of, calls, answer } = await holdingDaemon();
  try {
    const cl = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    const quitter = new AbortController();
    const a = cl.registerEvent(BALLOON, { signal: quitter.signal });
    const b = cl.registerEvent(BALLOON);
    await calls(REG, 1);
    quitter.abort();
    await assert.rejects(a, (e: unknown) => e instanceof LibvirtError && e.kind === 'aborted');
    answer(REG, { id: 7 });
    assert.equal(await b, 7);
    assert.equal(of(DEREG).length, 0, 'b still holds it');
    // Everyone gives up before libvirt answers: the registration it then makes is dropped.
    const c1 = new AbortController();
    const c = cl.registerEvent(DEVICE_SIZE, { signal: c1.signal });
    await calls(REG, 2);
    c1.abort();
    await assert.rejects(c, (e: unknown) => e instanceof LibvirtError && e.kind === 'aborted');
    answer(REG, { id: 8 });
    await calls(DEREG, 1);
    assert.equal(d.calls.filter((x) => x.proc === DEREG)[0]!.payload.readInt32BE(0), 8);
    answer(DEREG, {});
    cl.destroy();
  } finally { await d.close(); }
});

test('a registration libvirt refuses fails every caller waiting for it, and the next caller asks again', async () => {
  const { d, of, calls, answer } = await holdingDaemon();
  try {
    const cl = await LibvirtClient.connect(d.uri, { keepaliveIntervalMs: 0 });
    const a = cl.registerEvent(BALLOON);
    const b = cl.registerEvent(BALLOON);
    await calls(REG, 1);
    answer(REG, { error: 'operation failed: no events here' });
    for (const p of [a, b]) await assert.rejects(p, (e: unknown) => e instanceof LibvirtError && e.kind === 'remote' && /no events here/.test(e.message));
    const c = cl.registerEvent(BALLOON);
    await calls(REG, 2);
    answer(REG, { id: 5 });
    assert.equal(await c, 5);
    assert.equal(of(REG).length, 2);
    cl.destroy();
  } finally { await d.close(); }
});
