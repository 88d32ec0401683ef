/** The dashboard's pure parts: stacking for the chart, operation progress, size input, byte formatting, cards of every host. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cardId, cardKey, chartColumns, fractionDone, groupByHost, guestUsedBytes, historySamples, toGuestView, toHostView, toLibvirtHostView, toLibvirtHostsView, toOperationView, type GuestSample, type OperationView } from '../../src/dashboard/web/model.js';
import { formatBytes, parseSizeInput } from '../../src/dashboard/web/format.js';
import { assertConforms } from '../helpers/openapi.js';

const MiB = 1024 * 1024;
const sample = (over: Partial<GuestSample>): GuestSample => ({
  tS: 1, bootInGuestBytes: null, virtioMemBytes: null, balloonHeldBytes: null, guestUsedBytes: null, guestAvailableBytes: null, hostRssBytes: null, ...over,
});

test('stacked layers are cumulative, lines are not', () => {
  const s = [
    sample({ bootInGuestBytes: 400 * MiB, virtioMemBytes: 0, balloonHeldBytes: 112 * MiB, guestUsedBytes: 50 * MiB, hostRssBytes: 300 * MiB }),
    sample({ tS: 2, bootInGuestBytes: 512 * MiB, virtioMemBytes: 256 * MiB, balloonHeldBytes: 0, guestUsedBytes: 60 * MiB, hostRssBytes: 310 * MiB }),
  ];
  const cols = chartColumns(s, ['bootInGuestBytes', 'virtioMemBytes', 'balloonHeldBytes', 'guestUsedBytes', 'hostRssBytes']);
  assert.deepEqual(cols, [
    [400 * MiB, 512 * MiB],
    [400 * MiB, 768 * MiB],
    [512 * MiB, 768 * MiB],
    [50 * MiB, 60 * MiB],
    [300 * MiB, 310 * MiB],
  ]);
});

test('an unknown layer counts as nothing in the stack; an unknown line stays unknown', () => {
  const cols = chartColumns([sample({ bootInGuestBytes: 512 * MiB, virtioMemBytes: null, balloonHeldBytes: 0 })], ['virtioMemBytes', 'balloonHeldBytes', 'guestUsedBytes']);
  assert.deepEqual(cols, [[512 * MiB], [512 * MiB], [null]]);
});

test('progress goes from the starting size to the target, both ways, and never past the ends', () => {
  const op = (o: Partial<OperationView>): OperationView => ({ id: 'op-1', state: 'running', startBytes: 512 * MiB, targetBytes: 1024 * MiB, actualBytes: 512 * MiB, message: null, stuck: false, serverFraction: null, ...o });
  assert.equal(fractionDone(op({})), 0);
  assert.equal(fractionDone(op({ actualBytes: 768 * MiB })), 0.5);
  assert.equal(fractionDone(op({ actualBytes: 2048 * MiB })), 1);
  assert.equal(fractionDone(op({ startBytes: 1024 * MiB, targetBytes: 512 * MiB, actualBytes: 896 * MiB })), 0.25);
  assert.equal(fractionDone(op({ actualBytes: null })), 0);
  assert.equal(fractionDone(op({ state: 'succeeded', actualBytes: null })), 1);
  assert.equal(fractionDone(op({ startBytes: 1024 * MiB, actualBytes: 1024 * MiB })), 1, 'already there');
  assert.equal(fractionDone(op({ serverFraction: 0.75 })), 0.75, "the daemon's own figure wins");
});

test('sizes typed in the form', () => {
  assert.deepEqual(parseSizeInput('1.5', 'GiB'), { bytes: 1536 * MiB });
  assert.deepEqual(parseSizeInput(' 768 ', 'MiB'), { bytes: 768 * MiB });
  assert.match((parseSizeInput('lots', 'MiB') as { error: string }).error, /'lots' is not a size/);
  assert.match((parseSizeInput('-1', 'MiB') as { error: string }).error, /not a size/);
  assert.match((parseSizeInput('0', 'MiB') as { error: string }).error, /above zero/);
  assert.match((parseSizeInput('1', 'TB') as { error: string }).error, /unknown unit 'TB'/);
});

test('bytes are shown in binary units', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(512 * MiB), '512 MiB');
  assert.equal(formatBytes(1536 * MiB), '1.50 GiB');
  assert.equal(formatBytes(24 * 1024 * MiB), '24.0 GiB');
  assert.equal(formatBytes(null), '—');
});

test('guest used leaves out balloon pages when the guest counts them in MemTotal (deflate-on-OOM)', () => {
  // 512 MiB boot RAM, 128 MiB in the balloon: MemTotal stays ~490 MiB, MemAvailable ~332 MiB.
  assert.equal(guestUsedBytes(490 * MiB, 332 * MiB, 384 * MiB, 128 * MiB), 30 * MiB);
  // Without deflate-on-OOM MemTotal shrinks with the balloon: nothing to take out.
  assert.equal(guestUsedBytes(362 * MiB, 332 * MiB, 384 * MiB, 128 * MiB), 30 * MiB);
  assert.equal(guestUsedBytes(490 * MiB, 460 * MiB, 512 * MiB, 0), 30 * MiB);
  assert.equal(guestUsedBytes(null, 460 * MiB, 512 * MiB, 0), null, 'no statistics yet');
});

// The documents below are the examples of docs/openapi.json (the daemon's contract).
test('guest document -> layers', () => {
  const doc = {
    name: 'web1', uuid: 'u', id: 1, state: 'running', monitor: 'connected', stale: false, staleSinceS: null, maxMemoryBytes: 1073741824,
    memory: { totalBytes: 805306368, targetBytes: 805306368, bootBytes: 536870912, balloonBytes: 402653184, balloonTargetBytes: 402653184, dimmBytes: 0, pluggedBytes: 402653184, requestedBytes: 402653184, hotplugSizeBytes: 536870912 },
    stats: { periodS: 2, ageS: 1.2, lastUpdateS: 1796280000, availableBytes: 900 * MiB, usableBytes: 700 * MiB, unusedBytes: 410000000, rssBytes: 120000000 },
    updatedAtS: 1796280001.5, qemuPid: 4242,
  };
  const g = toGuestView(doc, 1796280002);
  assert.equal(g.name, 'web1');
  assert.equal(g.totalBytes, 768 * MiB);
  assert.equal(g.maxBytes, 1024 * MiB);
  assert.equal(g.statsAgeS, 1.2);
  assert.deepEqual(g.sample, {
    tS: 1796280002, bootInGuestBytes: 384 * MiB, virtioMemBytes: 384 * MiB, balloonHeldBytes: 128 * MiB,
    guestUsedBytes: 200 * MiB - 128 * MiB, guestAvailableBytes: 700 * MiB, hostRssBytes: 120000000,
  });
});

test('a guest that has not reported statistics yet has no used/available, not zero', () => {
  const g = toGuestView({ name: 'a', state: 'running', maxMemoryBytes: 1, memory: { totalBytes: 512 * MiB, bootBytes: 512 * MiB, balloonBytes: 512 * MiB, pluggedBytes: 0 }, stats: { periodS: 0, ageS: null } }, 1);
  assert.equal(g.sample.guestUsedBytes, null);
  assert.equal(g.sample.guestAvailableBytes, null);
  assert.equal(g.sample.hostRssBytes, null);
  assert.equal(g.sample.balloonHeldBytes, 0);
});

test('history samples take boot RAM from the guest document', () => {
  const h = { domain: 'web1', intervalS: 1, samples: [{ tS: 1796280000, totalBytes: 536870912, balloonBytes: 536870912, pluggedBytes: 0, usableBytes: 430000000, availableBytes: 500000000, rssBytes: 120000000 }, { bogus: true }] };
  const [s, ...rest] = historySamples(h, 512 * MiB);
  assert.equal(rest.length, 0, 'a sample without a time is dropped');
  assert.deepEqual(s, { tS: 1796280000, bootInGuestBytes: 512 * MiB, virtioMemBytes: 0, balloonHeldBytes: 0, guestUsedBytes: 70000000, guestAvailableBytes: 430000000, hostRssBytes: 120000000 });
  assert.deepEqual(historySamples({ error: {} }, 0), []);
});

test('host and operation documents', () => {
  assert.deepEqual(toHostView({ memTotalBytes: 25769803776, memAvailableBytes: 20000000000, psi: { some: { avg10: 1.5, avg60: 0, avg300: 0, totalUs: 1234 }, full: { avg10: 0.25, avg60: 0, avg300: 0, totalUs: 1000 } }, sampledAtS: 1, guests: 1 }),
    { memTotalBytes: 25769803776, memAvailableBytes: 20000000000, psiSomeAvg10: 1.5, psiFullAvg10: 0.25 });
  assert.equal(toHostView({ memTotalBytes: 1, memAvailableBytes: 1, psi: null }).psiSomeAvg10, null, 'no PSI in the kernel');
  const op = toOperationView({ operation: { id: 'op-1', kind: 'set-memory', domain: 'web1', state: 'running', startBytes: 536870912, targetBytes: 268435456, actualBytes: 402653184, fractionDone: 0.5, message: null, stuck: false, createdAtS: 1, updatedAtS: 1, elapsedMs: 500 } });
  assert.deepEqual(op, { id: 'op-1', state: 'running', startBytes: 536870912, targetBytes: 268435456, actualBytes: 402653184, message: null, stuck: false, serverFraction: 0.5 });
  assert.equal(toOperationView({ operation: { id: 'op-1', state: 'paused', targetBytes: 1 } }), null, 'an unknown state is not guessed at');
  assert.equal(toOperationView({ error: { code: 'X', message: 'no' } }), null);
});

// A running guest of libvirt host qemu:///system as GET /stats sends it (docs/openapi.json's Guest, with host).
const LIBVIRT_GUEST = {
  name: 'web1', uuid: 'u2', id: 7, state: 'running', monitor: 'connected', stale: false, staleSinceS: null, maxMemoryBytes: 768 * MiB,
  memory: { totalBytes: 384 * MiB, targetBytes: 384 * MiB, bootBytes: 256 * MiB, balloonBytes: 256 * MiB, balloonTargetBytes: 256 * MiB, dimmBytes: 0, pluggedBytes: 128 * MiB, requestedBytes: 128 * MiB, hotplugSizeBytes: 512 * MiB, devices: [] },
  stats: { periodS: 1, ageS: 0.4, lastUpdateS: 1796280000, availableBytes: 360 * MiB, usableBytes: 300 * MiB, rssBytes: 200 * MiB },
  updatedAtS: 1796280001, qemuPid: null, host: 'qemu:///system',
};
const HOSTS_DOC = { hosts: [
  { uri: 'qemu:///system', state: 'up', reason: null, lastUpdateS: 1796280001, memTotalBytes: 24 * 1024 * MiB, memAvailableBytes: 20 * 1024 * MiB, budgetBytes: 2048 * MiB, domains: [] },
  { uri: 'qemu+tcp://10.0.0.5/system', state: 'down', reason: 'no answer within 5 s', lastUpdateS: null, memTotalBytes: null, memAvailableBytes: null, budgetBytes: null, domains: [] },
] };

test('the test documents are what the API promises', () => {
  assertConforms('GET', '/stats', 200, { guests: [LIBVIRT_GUEST, { ...LIBVIRT_GUEST, host: undefined, uuid: 'u1' }].map((g) => JSON.parse(JSON.stringify(g)) as unknown) });
  assertConforms('GET', '/hosts', 200, HOSTS_DOC);
});

test('a libvirt host\'s guest document -> the same view, naming its host; virtmem\'s own guests name none', () => {
  const g = toGuestView(LIBVIRT_GUEST, 1796280002);
  assert.equal(g.host, 'qemu:///system');
  assert.equal(g.name, 'web1');
  assert.equal(g.stale, false);
  assert.deepEqual(g.sample, {
    tS: 1796280002, bootInGuestBytes: 256 * MiB, virtioMemBytes: 128 * MiB, balloonHeldBytes: 0,
    guestUsedBytes: 60 * MiB, guestAvailableBytes: 300 * MiB, hostRssBytes: 200 * MiB,
  });
  const { host: _, ...own } = LIBVIRT_GUEST;
  assert.equal(toGuestView(own, 1).host, null);
  assert.equal(toGuestView({ ...LIBVIRT_GUEST, stale: true, monitor: 'down' }, 1).stale, true, 'a guest of a host that went down');
});

test('cards are keyed by host and name: the same name on two hosts and here is three cards', () => {
  const keys = [cardKey(null, 'web1'), cardKey('qemu:///system', 'web1'), cardKey('qemu+tcp://h/system', 'web1')];
  assert.equal(new Set(keys).size, 3);
  assert.equal(cardKey(null, 'web1'), 'web1');
  // A host ending where a name begins cannot make two guests one key.
  assert.notEqual(cardKey('test:///a', 'b'), cardKey('test:///', 'ab'));
});

test('card hooks: the name made safe, and @N for a guest of the libvirt host with index N', () => {
  assert.equal(cardId('web1', null), 'web1');
  assert.equal(cardId('web.1 x', null), 'web_1_x');
  assert.equal(cardId('web1', 0), 'web1@0');
  assert.equal(cardId('web.1', 2), 'web_1@2');
  assert.notEqual(cardId('a@0', null), cardId('a', 0), 'a local name cannot take a libvirt guest\'s hooks');
});

test('libvirt host documents -> views (up or down and why, memory, budget, guests); what the page cannot use is left out', () => {
  assert.deepEqual(toLibvirtHostsView(HOSTS_DOC), [
    { uri: 'qemu:///system', up: true, reason: null, memTotalBytes: 24 * 1024 * MiB, memAvailableBytes: 20 * 1024 * MiB, budgetBytes: 2048 * MiB, guests: 0 },
    { uri: 'qemu+tcp://10.0.0.5/system', up: false, reason: 'no answer within 5 s', memTotalBytes: null, memAvailableBytes: null, budgetBytes: null, guests: 0 },
  ]);
  assert.equal(toLibvirtHostView({ ...HOSTS_DOC.hosts[0], domains: [{ name: 'a' }, { name: 'b' }] })?.guests, 2);
  assert.deepEqual(toLibvirtHostsView({ hosts: [{ state: 'down' }, 'junk', { uri: 'test:///default', state: 'up', domains: 'junk' }] }),
    [{ uri: 'test:///default', up: true, reason: null, memTotalBytes: null, memAvailableBytes: null, budgetBytes: null, guests: 0 }]);
  assert.deepEqual(toLibvirtHostsView(null), []);
  // The local host's SSE `host` event (GET /host's document) is not a libvirt host's.
  assert.equal(toLibvirtHostView({ memTotalBytes: 1, memAvailableBytes: 1, psi: null, sampledAtS: 1, guests: 0 }), null);
});

test('groups: virtmem\'s own guests first, then each libvirt host in the daemon\'s order, with its guests only', () => {
  const hosts = toLibvirtHostsView(HOSTS_DOC);
  const own = toGuestView({ ...LIBVIRT_GUEST, host: undefined }, 1);
  const there = toGuestView(LIBVIRT_GUEST, 1);
  const other = toGuestView({ ...LIBVIRT_GUEST, name: 'db', host: 'qemu:///system' }, 1);
  const stray = toGuestView({ ...LIBVIRT_GUEST, host: 'test:///default' }, 1);
  const groups = groupByHost([there, own, stray, other], hosts);
  assert.deepEqual(groups.map((g) => [g.host?.uri ?? null, g.index, g.guests.map((x) => x.name)]), [
    [null, null, ['web1']],
    ['qemu:///system', 0, ['web1', 'db']],
    ['qemu+tcp://10.0.0.5/system', 1, []],
  ], 'a host without guests keeps its group; a guest of a host the page was not told of waits for the next refresh');
  assert.equal(groups[1]!.guests[0], there);
  assert.deepEqual(groupByHost([], []), [{ host: null, index: null, guests: [] }]);
});
