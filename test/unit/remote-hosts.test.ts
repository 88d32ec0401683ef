/**
 * The pure parts of `daemon --hosts`: the hosts file, libvirt's bulk statistics to a guest's
 * live view and the /metrics families (the dashboard's view of GET /api/v1/hosts: dashboard-model.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseHostsFile } from '../../src/daemon/hosts-file.js';
import { applyBulk, sentTargetHolds, viewFromLibvirt } from '../../src/driver/libvirt/watch.js';
import { memoryLayoutFromXml } from '../../src/driver/libvirt/domain-xml.js';
import { libvirtHostDocument, type LibvirtHostDocument as HostDocument } from '../../src/daemon/documents.js';
import { totalBytes } from '../../src/driver/view.js';
import { formatMetrics } from '../../src/http/metrics.js';
import { VirtError } from '../../src/domain/errors.js';

test('hosts file: URIs one per line, comments and blank lines skipped', () => {
  assert.deepEqual(parseHostsFile('# hosts\n\nqemu+tcp://10.0.0.2/system   # rack 1\n  test:///default budget=4G\nqemu+ssh://root@h:22/system?keyfile=/k\n', 'f'),
    [{ uri: 'qemu+tcp://10.0.0.2/system', budgetBytes: null }, { uri: 'test:///default', budgetBytes: 4 * 1024 ** 3 }, { uri: 'qemu+ssh://root@h:22/system?keyfile=/k', budgetBytes: null }]);
});

test('hosts file: a bad line is refused naming the file and line', () => {
  const refused = (text: string, re: RegExp): void => {
    assert.throws(() => parseHostsFile(text, '/etc/virtmem/hosts'), (e: unknown) => e instanceof VirtError && e.code === 'INVALID_ARG' && re.test(e.message));
  };
  refused('test:///default\n# x\nqemu+bogus://h/system\n', /^\/etc\/virtmem\/hosts line 3: unsupported transport 'bogus'/);
  refused('not-a-uri\n', /line 1: invalid connection URI 'not-a-uri'/);
  refused('qemu+tcp:///system\n', /line 1: .*needs a host/);
  refused('test:///default\ntest:///default\n', /line 2: 'test:\/\/\/default' is listed twice/);
  refused('virtmem:///system\n', /line 1: .*virtmem's own driver/);
  refused('# nothing\n\n', /lists no libvirt URI/);
  refused('test:///default budget=lots\n', /line 1: .*lots/);
  refused('test:///default speed=1\n', /line 1: unknown option 'speed=1' \(known: budget=SIZE\)/);
});

const XML = `<domain type='qemu'><name>a</name><memory unit='KiB'>2097152</memory><currentMemory unit='KiB'>1048576</currentMemory>
  <devices><memballoon model='virtio' autodeflate='on'><stats period='1'/></memballoon>
  <memory model='virtio-mem'><target><size unit='KiB'>1048576</size><block unit='KiB'>2048</block><requested unit='KiB'>0</requested><current unit='KiB'>0</current></target><alias name='virtiomem0'/></memory></devices></domain>`;

test('libvirt bulk statistics to a live view: KiB to bytes, the balloon is boot RAM only, statistics as reported', () => {
  const rec = { name: 'a', uuid: 'u', id: 3, stats: { 'state.state': 3, 'balloon.current': 786432, 'balloon.maximum': 2097152, 'balloon.rss': 10, 'balloon.available': 900, 'balloon.last-update': 77 } };
  const v = viewFromLibvirt(rec, memoryLayoutFromXml(XML), 1);
  assert.deepEqual([v.bootBytes, v.maxMemoryBytes, v.targetBytes, v.statsPeriodS, v.balloonAutodeflate], [1048576 * 1024, 2097152 * 1024, 1048576 * 1024, 1, true]);
  assert.deepEqual(v.devices, [{ id: 'virtiomem0', model: 'virtio-mem', sizeBytes: 1048576 * 1024, requestedBytes: 0, pluggedBytes: 0 }]);
  assert.equal(applyBulk(v, rec, 2), true);
  assert.deepEqual([v.state, v.id, v.balloonBytes, totalBytes(v), v.rssBytes], ['paused', 3, 786432 * 1024, 786432 * 1024, 10240]);
  assert.deepEqual(v.stats, { availableBytes: 921600, lastUpdateS: 77 });
  assert.equal(applyBulk(v, rec, 3), false, 'the same record changes nothing');
  // Just after the driver read QEMU's balloon itself, libvirt's (its last event) is older: the
  // view keeps the balloon, and takes the rest of the record.
  const later = { ...rec, stats: { ...rec.stats, 'state.state': 1, 'balloon.current': 900000 } };
  assert.equal(applyBulk(v, later, 4, undefined, true), true);
  assert.deepEqual([v.state, v.balloonBytes], ['running', 786432 * 1024]);
  assert.equal(applyBulk(v, later, 5), true);
  assert.equal(v.balloonBytes, 900000 * 1024);
});

test('libvirt view: the target virtmem sent, not the size in the XML, while the XML still has the devices as sent', () => {
  const rec = { name: 'a', uuid: 'u', id: 3, stats: {} };
  // Shrinking from 1 GiB (the XML's current memory: what the guest has) to 600 MiB: no virtio-mem, the balloon at 600 MiB.
  const sent = { uuid: 'u', targetKiB: 614400, balloonKiB: 614400, requestedKiB: [0] };
  const layout = memoryLayoutFromXml(XML);
  assert.equal(sentTargetHolds(sent, 'u', layout), true);
  const v = viewFromLibvirt(rec, layout, 1, sent);
  assert.deepEqual([v.targetBytes, v.balloonTargetBytes, v.balloonBytes], [614400 * 1024, 614400 * 1024, 1048576 * 1024]);
  // Without one, the guest heads where it is.
  assert.deepEqual([viewFromLibvirt(rec, layout, 1).targetBytes, viewFromLibvirt(rec, layout, 1).balloonTargetBytes], [1048576 * 1024, 1048576 * 1024]);
  // A device someone else resized since, or another guest of the same name: the XML wins.
  const grown = memoryLayoutFromXml(XML.replace("<requested unit='KiB'>0</requested>", "<requested unit='KiB'>262144</requested>"));
  assert.equal(sentTargetHolds(sent, 'u', grown), false);
  assert.equal(viewFromLibvirt(rec, grown, 1, sent).targetBytes, 1048576 * 1024);
  assert.equal(sentTargetHolds(sent, 'other', layout), false);
});

const host = { memTotalBytes: 100, memAvailableBytes: 50, swapTotalBytes: null, swapFreeBytes: null, psi: null, sampledAtS: 1 };
const daemon = { startedAtS: 1, operationsStarted: 0, sseClients: 0, httpRequests: 3 };

test('/metrics: hosts up/down and their domains with host, domain and kind labels; nothing without --hosts', () => {
  const view = viewFromLibvirt({ name: 'a', uuid: 'u', id: 1, stats: {} }, memoryLayoutFromXml(XML), 1);
  applyBulk(view, { name: 'a', uuid: 'u', id: 1, stats: { 'state.state': 1, 'balloon.current': 1024 } }, 1);
  const watch = (state: 'up' | 'down', guests: typeof view[]): Parameters<typeof libvirtHostDocument>[0]['watch'] => ({
    state, reason: state === 'up' ? null : 'gone', lastUpdateS: 1, host: () => ({ memTotalBytes: null, memAvailableBytes: null }), guests: () => guests,
  });
  const hosts: HostDocument[] = [
    libvirtHostDocument({ uri: 'qemu+tcp://h"1/system', budgetBytes: null, watch: watch('up', [view]) }),
    libvirtHostDocument({ uri: 'test:///default', budgetBytes: null, watch: watch('down', []) }),
  ];
  const text = formatMetrics({ guests: [], host, daemon, nowS: 2, remoteHosts: hosts });
  assert.match(text, /^virtmem_host_up\{host="qemu\+tcp:\/\/h\\"1\/system"\} 1$/m);
  assert.match(text, /^virtmem_host_up\{host="test:\/\/\/default"\} 0$/m);
  assert.match(text, /^virtmem_host_domain_memory_bytes\{host="qemu\+tcp:\/\/h\\"1\/system",domain="a",kind="current"\} 1048576$/m);
  assert.match(text, /^virtmem_host_domain_memory_bytes\{host="qemu\+tcp:\/\/h\\"1\/system",domain="a",kind="max"\} 2147483648$/m);
  assert.doesNotMatch(text, /kind="rss"/, 'a statistic never reported is absent');
  const without = formatMetrics({ guests: [], host, daemon, nowS: 2 });
  assert.doesNotMatch(without, /virtmem_host_up|virtmem_host_domain_memory_bytes/);
});
