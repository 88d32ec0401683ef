/** The daemon's pure core: guest model and events, history ring, operations, host parsers, and the OpenAPI checker itself. */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { viewFromDefinition as modelFromDefinition, setMonitor, totalBytes } from '../../src/driver/view.js';
import { applyEvent, applyDevices, applyGuestStats } from '../../src/driver/native/qmp-view.js';
import { guestDocument } from '../../src/daemon/documents.js';
import { HistoryRing } from '../../src/daemon/history.js';
import { OperationRegistry, operationDocument } from '../../src/daemon/operations.js';
import { parseMeminfo, parsePressure } from '../../src/driver/memory/host-memory.js';
import { validate, assertConforms } from '../helpers/openapi.js';
import type { DomainDef } from '../../src/domain/definition.js';

const MiB = 1024 * 1024;
const DEF = {
  schemaVersion: 1, name: 'g1', uuid: '00000000-0000-0000-0000-000000000001', vcpus: 1,
  memory: { maxKiB: 1048576, currentKiB: 524288 },
  memoryDevices: [{ model: 'virtio-mem', sizeKiB: 524288, blockKiB: 2048, requestedKiB: 0 }],
  os: {}, disks: [], balloon: { model: 'virtio', autodeflate: true, freePageReporting: true, statsPeriodS: 0 },
} as unknown as DomainDef;

describe('guest model', () => {
  test('from the definition, then QEMU events', () => {
    const m = modelFromDefinition(DEF, { id: 3, state: 'running', pid: 9 }, 10);
    assert.equal(m.bootBytes, 512 * MiB);
    assert.equal(totalBytes(m), 512 * MiB);
    assert.equal(applyEvent(m, 'BALLOON_CHANGE', { actual: 256 * MiB }, 11), true);
    assert.equal(applyEvent(m, 'BALLOON_CHANGE', { actual: 256 * MiB }, 12), false, 'same value: no change');
    assert.equal(m.counters.balloonChanges, 2);
    assert.equal(applyEvent(m, 'MEMORY_DEVICE_SIZE_CHANGE', { id: 'vmem0', size: 128 * MiB, 'qom-path': 'x' }, 13), true);
    assert.equal(totalBytes(m), 384 * MiB);
    assert.equal(applyEvent(m, 'MEMORY_DEVICE_SIZE_CHANGE', { id: 'other', size: 1 }, 13), false);
    assert.equal(applyEvent(m, 'STOP', {}, 14), true);
    assert.equal(m.state, 'paused');
    assert.equal(applyEvent(m, 'SHUTDOWN', { guest: true }, 15), true);
    assert.equal(m.state, 'shutoff');
  });
  test('devices and guest stats from query answers; -1 stays absent', () => {
    const m = modelFromDefinition(DEF, { id: 3, state: 'running', pid: 9 }, 10);
    applyDevices(m, [{ type: 'virtio-mem', id: 'vmem0', memaddr: 0, requestedSizeBytes: 64 * MiB, sizeBytes: 32 * MiB, maxSizeBytes: 512 * MiB, blockSizeBytes: 2 * MiB, node: 0, memdev: '/objects/m' }], 11);
    assert.equal(m.devices[0]!.pluggedBytes, 32 * MiB);
    applyGuestStats(m, { stats: { 'stat-available-memory': 100, 'stat-free-memory': -1 }, lastUpdate: 0 }, 12);
    assert.deepEqual(m.stats, { usableBytes: 100 });
    setMonitor(m, 'connected', 12);
    const doc = guestDocument(m, 20);
    assertConforms('GET', '/domains/{name}', 200, doc);
    assert.equal((doc.stats as Record<string, unknown>).ageS, null, 'never reported: age unknown');
    assert.equal('unusedBytes' in (doc.stats as object), false);
  });
  test("a report's time: QEMU's whole second, or the finer time of a report seen arriving, kept within that second", () => {
    const m = modelFromDefinition(DEF, { id: 3, state: 'running', pid: 9 }, 10);
    const report = (usable: number, at: number): { stats: Record<string, number>; lastUpdate: number } => ({ stats: { 'stat-available-memory': usable }, lastUpdate: at });
    applyGuestStats(m, report(100, 1000), 1000.9);
    assert.equal(m.stats.lastUpdateS, 1000);
    applyGuestStats(m, report(90, 1001), 1001.4, 1001.38);
    assert.equal(m.stats.lastUpdateS, 1001.38, 'seen arriving');
    assertConforms('GET', '/domains/{name}', 200, guestDocument(m, 1002));
    applyGuestStats(m, report(90, 1001), 1001.9);
    assert.equal(m.stats.lastUpdateS, 1001.38, 'read again in the same second');
    applyGuestStats(m, report(80, 1002), 1002.2, 1003.1);
    assert.equal(m.stats.lastUpdateS, 1002, 'a time outside the report\'s second is not taken');
  });
  test('stale marks when the monitor stopped being current', () => {
    const m = modelFromDefinition(DEF, { id: 3, state: 'running', pid: 9 }, 10);
    setMonitor(m, 'connected', 11);
    setMonitor(m, 'stale', 12);
    assert.equal(m.staleSinceS, 12);
    assert.equal(guestDocument(m, 13).stale, true);
    setMonitor(m, 'connected', 14);
    assert.equal(m.staleSinceS, null);
  });
});

describe('history ring', () => {
  test('keeps the newest, oldest first, filters by time', () => {
    const r = new HistoryRing(3);
    for (let i = 1; i <= 5; i++) r.push({ tS: i, totalBytes: i, balloonBytes: i, pluggedBytes: 0 });
    assert.deepEqual(r.samples().map((s) => s.tS), [3, 4, 5]);
    assert.deepEqual(r.samples(3).map((s) => s.tS), [4, 5]);
    assert.throws(() => new HistoryRing(0), RangeError);
  });
});

describe('operations', () => {
  test('progress, stuck with a reason, success; documents conform', () => {
    const reg = new OperationRegistry({ keepMs: 1000, stuckAfterMs: 5000, maxKept: 10 });
    const seen: string[] = [];
    reg.onChange((op) => seen.push(`${op.id}:${op.state}:${op.stuck}`));
    const op = reg.start('g1', 200, 100, 0);
    reg.progress(op, 150, 1);
    assert.equal(operationDocument(op, 1).fractionDone, 0.5);
    reg.checkStuck(() => 'the balloon is stuck', 3);
    assert.equal(op.stuck, false);
    reg.checkStuck(() => 'the balloon is stuck', 6.5);
    assert.equal(op.stuck, true);
    assert.equal(op.message, 'the balloon is stuck');
    reg.progress(op, 180, 7);
    assert.equal(op.stuck, false, 'moving again');
    reg.succeed(op, 200, 8);
    assertConforms('GET', '/operations/{id}', 200, { operation: operationDocument(op, 9) });
    assert.deepEqual(seen, ['op-1:running:false', 'op-1:running:false', 'op-1:running:true', 'op-1:running:false', 'op-1:succeeded:false']);
  });
  test('a new target supersedes the running one and aborts its wait', () => {
    const reg = new OperationRegistry();
    const a = reg.start('g1', 200, 100);
    const b = reg.start('g1', 300, 100);
    const c = reg.start('g2', 300, 100);
    assert.equal(a.state, 'failed');
    assert.match(a.message!, /superseded by op-2/);
    assert.equal(a.abort.signal.aborted, true);
    assert.equal(b.state, 'running');
    assert.equal(c.state, 'running');
  });
});

describe('host memory parsers', () => {
  test('/proc/meminfo in bytes', () => {
    const m = parseMeminfo('MemTotal:       24683372 kB\nMemAvailable:   23000000 kB\nHugePages_Total:       0\n');
    assert.equal(m.get('MemTotal'), 24683372 * 1024);
    assert.equal(m.get('HugePages_Total'), 0);
  });
  test('/proc/pressure/memory', () => {
    const p = parsePressure('some avg10=1.50 avg60=0.20 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=99\n');
    assert.deepEqual(p, { some: { avg10: 1.5, avg60: 0.2, avg300: 0, totalUs: 12345 }, full: { avg10: 0, avg60: 0, avg300: 0, totalUs: 99 } });
    assert.equal(parsePressure('some avg10=1 avg60=2 avg300=3 total=4\n'), null, 'no full line: no PSI');
  });
});

describe('the OpenAPI checker catches what it must', () => {
  test('type, required, unknown property, enum, nullable', () => {
    const schema = { type: 'object', additionalProperties: false, required: ['a'], properties: { a: { type: 'integer' }, s: { type: 'string', enum: ['x'] }, n: { type: 'integer', nullable: true } } };
    assert.deepEqual(validate({ a: 1, n: null }, schema), []);
    assert.equal(validate({ a: 1.5 }, schema).length, 1);
    assert.equal(validate({}, schema).length, 1);
    assert.equal(validate({ a: 1, b: 2 }, schema).length, 1);
    assert.equal(validate({ a: 1, s: 'y' }, schema).length, 1);
    assert.equal(validate({ a: null }, schema).length, 1);
    assert.throws(() => assertConforms('GET', '/domains', 200, { domains: [{ name: 'x' }] }), /missing required/);
  });
});
