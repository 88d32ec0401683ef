/**
 * One memory brain for libvirt's guests too: `virtmem daemon --hosts FILE` serves a guest that
 * the machine's real libvirtd (qemu:///system) runs exactly as it serves its own. Through the
 * API under /api/v1/hosts/{host}/domains/{name}: the guest's live document, a resize with an
 * operation whose progress arrives on the event stream (balloon and virtio-mem through libvirt),
 * /metrics with the host label, policy settings kept in the domain's XML metadata (set from the
 * CLI with -c, seen by the daemon through libvirt's metadata event) and the policy shrinking an
 * idle guest and growing it for work. Then a second libvirtd, as a remote host, killed in the
 * middle of a resize: the operation fails with the reason within its bound, the host turns
 * down, and the local host's guest is untouched and still resizable.
 * Needs root, libvirtd and the built-in guest (CI: scripts/setup.sh --dev).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { sandbox, runCli } from '../helpers/cli.js';
import { openEvents, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { libvirtGuestXml, killQemuOf } from '../helpers/libvirt-guest.js';
import { startRemoteLibvirtd, type RemoteLibvirtd } from '../helpers/remote-libvirtd.js';
import { assertConforms } from '../helpers/openapi.js';
import { until } from '../helpers/poll.js';
import { skipUnlessCi, notRoot, libvirtdMissing } from '../helpers/skip.js';
import { virsh, removeDomains } from '../helpers/virsh.js';
import { daemonRequest, closeDaemonClients } from '../../src/driver/remote/http-client.js';
import { GuestAgent } from '../../src/guest/agent.js';
import { findDefaultGuest } from '../../src/guest/build.js';

const U = 'qemu:///system';
const H = encodeURIComponent(U);
const guest = await findDefaultGuest();
const skip = skipUnlessCi(libvirtdMissing(), notRoot(),
  !guest && 'the built-in guest is not built', guest && !guest.hasVmhelper && 'the built-in guest has no vmhelper');

const MiB = 1024 * 1024;
const NAME = `vmdl-${randomBytes(3).toString('hex')}`;
const AGENT = `/var/lib/libvirt/qemu/${NAME}.agent.sock`;
const FLOOR = 300 * MiB;

const sb = await sandbox();
let d: RunningDaemon | null = null;
let agent: GuestAgent | null = null;
let remote: RemoteLibvirtd | null = null;
const remoteName = `vmdr-${randomBytes(3).toString('hex')}`;

after(async () => {
  agent?.close();
  closeDaemonClients();
  await d?.stop();
  await removeDomains(U, [NAME]);
  if (remote) {
    await killQemuOf(remoteName);
    try { process.kill(remote.pid, 'SIGCONT'); } catch { /* gone */ }
    await remote.stop();
  }
  await sb.cleanup();
});

type Json = any; // the answers are checked against docs/openapi.json, then field by field

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; body: Json }> {
  const r = await daemonRequest({ socketPath: d!.socketPath }, method, `/api/v1${path}`, body === undefined ? {} : { body });
  return { status: r.status, body: r.body };
}

/** GET and check against the contract. */
async function get(template: string, path: string): Promise<Json> {
  const r = await api('GET', path);
  assertConforms('GET', template, r.status, r.body);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

const guestDoc = (): Promise<Json> => get('/hosts/{host}/domains/{name}', `/hosts/${H}/domains/${NAME}`);
const usedKiB = async (name: string, uri = U): Promise<number> => Number(/^Used memory: +(\d+) KiB$/m.exec((await virsh(uri, 'dominfo', name)).stdout)?.[1]);

/**
 * Work for the guest: 64 MiB allocations `gapS` seconds apart, 128 MiB more than it has
 * available, started in the guest (they keep running). What the guest used and had available
 * before, and how many were started.
 */
async function allocateBeyond(gapS: number): Promise<{ before: number; avail: number; n: number }> {
  const before = await usedKiB(NAME);
  const avail = (await guestDoc()).stats.usableBytes as number;
  const n = Math.ceil((avail + 128 * MiB) / (64 * MiB));
  await agent!.run(`i=0; while [ $i -lt ${n} ]; do (vmhelper alloc 64 >/dev/null 2>&1 &); sleep ${gapS}; i=$((i+1)); done; echo started`, { timeoutMs: 180_000 });
  return { before, avail, n };
}

before(async () => {
  if (skip) return;
  const xml = join(sb.stateDir, 'guest.xml');
  // Boot RAM 384 MiB (balloon), a 768 MiB virtio-mem region, statistics every second, the agent on ttyS1.
  await writeFile(xml, libvirtGuestXml(NAME, { memoryKiB: 384 * 1024, currentKiB: 384 * 1024, virtioMemKiB: 768 * 1024, cmdline: 'memhp_default_state=online_movable', agentSocket: AGENT }));
  assert.equal((await virsh(U, 'define', xml)).code, 0);
  const started = await virsh(U, 'start', NAME);
  assert.equal(started.code, 0, started.stderr);
  agent = await GuestAgent.connect(AGENT, { timeoutMs: 120_000 });
  const hosts = join(sb.stateDir, 'hosts');
  await writeFile(hosts, `${U} budget=2G\n`);
  d = await startDaemon(sb.stateDir, ['--hosts', hosts, '--policy', 'per-guest']);
});

test('a libvirt guest through the API: its document, a resize with progress on the event stream, /metrics with the host label', { skip, timeout: 300_000 }, async () => {
  await until('the guest watched through its host', () => guestDoc(), (g) => g.monitor === 'connected' && g.host === U && g.stats.lastUpdateS !== undefined);
  const g = await guestDoc();
  assert.equal(g.memory.bootBytes, 384 * MiB);
  assert.equal(g.memory.hotplugSizeBytes, 768 * MiB);
  assert.equal(g.memory.totalBytes, (await usedKiB(NAME)) * 1024);

  const sse = openEvents({ socketPath: d!.socketPath });
  await sse.ready;
  try {
    // Grow past boot RAM: virtio-mem plugs through libvirt's update-device.
    const put = await api('PUT', `/hosts/${H}/domains/${NAME}/memory`, { targetBytes: 640 * MiB });
    assertConforms('PUT', '/hosts/{host}/domains/{name}/memory', put.status, put.body);
    assert.ok(put.status === 200 || put.status === 202, JSON.stringify(put.body));
    const op = put.body.operation;
    assert.equal(op.host, U);
    const ended = await until('the operation ended', () => get('/operations/{id}', `/operations/${op.id}`), (x) => x.operation.state !== 'running');
    assert.equal(ended.operation.state, 'succeeded', ended.operation.message);
    assert.equal(await usedKiB(NAME), 640 * 1024, 'libvirt agrees');
    // The stream carried the operation to its end, and the guest's memory with its host named.
    const opEvents = sse.events.filter((e) => e.type === 'operation' && e.data.id === op.id);
    assert.ok(opEvents.some((e) => e.data.state === 'succeeded'), 'the operation ended on the stream');
    await until('a memory event for the guest', async () => sse.events.some((e) => e.type === 'memory' && e.data.name === NAME && e.data.host === U && e.data.memory.totalBytes === 640 * MiB), (x) => x);
  } finally {
    sse.stop();
  }
  const after = await until('the document at the target', () => guestDoc(), (x) => x.memory.totalBytes === 640 * MiB);
  assert.ok(after.memory.pluggedBytes > 0, 'virtio-mem carries memory above boot RAM');

  const metrics = String((await daemonRequest({ socketPath: d!.socketPath }, 'GET', '/metrics')).body);
  assert.match(metrics, new RegExp(`^virtmem_guest_memory_bytes\\{host="qemu:///system",domain="${NAME}"\\} ${640 * MiB}$`, 'm'));

  // Beyond its maximum: refused naming the field, nothing changed.
  const tooBig = await api('PUT', `/hosts/${H}/domains/${NAME}/memory`, { targetBytes: 4096 * MiB });
  assert.equal(tooBig.status, 400);
  assert.equal(tooBig.body.error.field, 'targetBytes');
  assert.match(tooBig.body.error.message, /cannot set memory higher than max memory/);
  assert.equal(await usedKiB(NAME), 640 * 1024);
  // A host that is not served is a 404 naming it.
  assert.equal((await api('GET', `/hosts/${encodeURIComponent('qemu+tcp://10.9.9.9/system')}/domains/${NAME}`)).status, 404);

  // A shrink answered before the guest is there: the document heads for the new target at
  // once (libvirt's XML has no balloon target and its current memory is the size the guest
  // has, so the target is the one the daemon sent), and keeps it after the XML is read again.
  const shrink = await api('PUT', `/hosts/${H}/domains/${NAME}/memory`, { targetBytes: 576 * MiB, waitMs: 0 });
  assert.ok(shrink.status === 200 || shrink.status === 202, JSON.stringify(shrink.body));
  const heading = await guestDoc();
  assert.equal(heading.memory.targetBytes, 576 * MiB, 'the target as sent, while the guest may still be on its way');
  assert.equal(heading.memory.balloonTargetBytes + heading.memory.requestedBytes, 576 * MiB, 'balloon and virtio-mem targets add up to it');
  const shrunk = await until('the shrink ended', () => get('/operations/{id}', `/operations/${shrink.body.operation.id}`), (x) => x.operation.state !== 'running');
  assert.equal(shrunk.operation.state, 'succeeded', shrunk.operation.message);
  const there = await guestDoc();
  assert.deepEqual([there.memory.targetBytes, there.memory.totalBytes], [576 * MiB, 576 * MiB]);
});

test('policy settings of a libvirt guest live in its XML metadata; the daemon takes them and shrinks the idle guest, then grows it for work', { skip, timeout: 600_000 }, async () => {
  // Set from the CLI on the libvirt connection: libvirt keeps them in the domain's metadata.
  const set = await runCli(['-c', U, 'policy', 'set', NAME, '--enable', '--floor', '300M']);
  assert.equal(set.code, 0, set.stderr);
  assert.match((await virsh(U, 'dumpxml', NAME, '--inactive')).stdout, /<virtmem:policy xmlns:virtmem="https:\/\/virtmem\.dev\/xmlns\/policy\/1" enabled="yes" floor="307200" unit="KiB"\/>/);
  assert.match((await runCli(['-c', U, 'policy', 'show', NAME])).stdout, /^Policy: +on\nFloor: +307200 KiB\n/);
  // The daemon follows (libvirt's metadata event): the idle guest goes down, never below its floor.
  const doc = await until('the policy on for the guest', () => get('/hosts/{host}/domains/{name}/policy', `/hosts/${H}/domains/${NAME}/policy`), (x) => x.settings.enabled && x.settings.floorBytes === FLOOR);
  assert.equal(doc.host, U);
  let lowest = Infinity;
  await until('the idle guest shrunk', () => usedKiB(NAME), (kib) => kib <= 520 * 1024, (kib) => { lowest = Math.min(lowest, kib); });
  assert.ok(lowest * 1024 >= FLOOR, `never below the floor (lowest ${lowest} KiB)`);
  const shrunk = await get('/hosts/{host}/domains/{name}/policy', `/hosts/${H}/domains/${NAME}/policy`);
  // The last decision is a resize, or one a newer step superseded before libvirt saw it land
  // (libvirt learns sizes from QEMU's events, at most one a second).
  assert.ok(shrunk.last.action === 'resize' || /superseded by/.test(shrunk.last.reason), JSON.stringify(shrunk.last));
  assert.ok(shrunk.last.reason.length > 10, 'the decision says why');

  // Work arrives: 64 MiB allocations three seconds apart, 128 MiB more than the guest has
  // available; it is grown in time and none is killed.
  try {
    const { before, avail, n } = await allocateBeyond(3);
    await until('the guest grown for its work', () => usedKiB(NAME), (kib) => kib >= before + 64 * 1024);
    const oom = (await agent!.run('dmesg | grep -c "Out of memory" || true')).output.trim();
    assert.equal(oom, '0', `no OOM kill in the guest (${n} allocations of 64 MiB, ${Math.round(avail / MiB)} MiB available at the start)`);
    await until('every allocation running', async () => (await agent!.run('ps | grep -c "[v]mhelper alloc"')).output.trim(), (x) => x === String(n), () => {}, 30_000);
  } finally {
    await agent!.run('killall vmhelper; echo done').catch(() => undefined);
  }
  const grown = await get('/hosts/{host}/domains/{name}/policy', `/hosts/${H}/domains/${NAME}/policy`);
  assert.ok(['pending', 'reached', 'not reached'].includes(grown.last.outcome ?? 'pending'), JSON.stringify(grown.last));
});

test('a libvirt guest whose statistics stopped is still grown while its QEMU touches new memory', { skip, timeout: 600_000 }, async () => {
  // Room to grow: the last test left the guest at its maximum; the policy takes its idle memory back.
  await until('the idle guest shrunk again', () => usedKiB(NAME), (kib) => kib <= 800 * 1024);
  // No more statistics from the guest (libvirt's period to 0: QEMU keeps the last report).
  assert.equal((await virsh(U, 'dommemstat', NAME, '--period', '0', '--live')).code, 0);
  try {
    // Older than the policy acts on (10 s).
    await until('the statistics stale for the policy', () => guestDoc(), (g) => Date.now() / 1000 - g.stats.lastUpdateS > 12, () => {}, 60_000);
    try {
      const { before, avail, n } = await allocateBeyond(2);
      await until('the guest grown for its work', () => usedKiB(NAME), (kib) => kib >= before + 128 * 1024);
      const doc = await get('/hosts/{host}/domains/{name}/policy', `/hosts/${H}/domains/${NAME}/policy`);
      assert.match(doc.last.reason, /guest statistics are \d+ s old, but QEMU's resident memory rises/, JSON.stringify(doc.last));
      const oom = (await agent!.run('dmesg | grep -c "Out of memory" || true')).output.trim();
      assert.equal(oom, '0', `no OOM kill in the guest (${n} allocations of 64 MiB, ${Math.round(avail / MiB)} MiB available when its statistics stopped)`);
    } finally {
      await agent!.run('killall vmhelper; echo done').catch(() => undefined);
    }
  } finally {
    await virsh(U, 'dommemstat', NAME, '--period', '1', '--live');
  }
});

test('a remote libvirtd killed during a resize: the operation fails with the reason, the host is down, the local host goes on', { skip, timeout: 600_000 }, async () => {
  remote = await startRemoteLibvirtd();
  const xml = join(sb.stateDir, 'remote.xml');
  await writeFile(xml, libvirtGuestXml(remoteName, { memoryKiB: 512 * 1024, currentKiB: 512 * 1024 }));
  assert.equal((await virsh(remote.uri, 'define', xml)).code, 0);
  assert.equal((await virsh(remote.uri, 'start', remoteName)).code, 0);
  // The daemon again, now serving both libvirt hosts.
  await d!.stop();
  const hosts = join(sb.stateDir, 'hosts');
  await writeFile(hosts, `${U}\n${remote.uri} budget=1G\n`);
  d = await startDaemon(sb.stateDir, ['--hosts', hosts, '--policy', 'off']);
  const R = encodeURIComponent(remote.uri);
  await until('the remote guest watched, with statistics', () => get('/hosts/{host}/domains/{name}', `/hosts/${R}/domains/${remoteName}`),
    (g) => g.monitor === 'connected' && g.stats.lastUpdateS !== undefined);
  // A shrink takes a while under TCG (the balloon inflates page by page): the host dies meanwhile.
  const put = await api('PUT', `/hosts/${R}/domains/${remoteName}/memory`, { targetBytes: 160 * MiB, force: true });
  assert.equal(put.status, 202, JSON.stringify(put.body));
  const op = put.body.operation;
  process.kill(remote.pid, 'SIGKILL');
  const t0 = Date.now();
  const failed = await until('the operation failed', () => get('/operations/{id}', `/operations/${op.id}`), (x) => x.operation.state !== 'running', () => {}, 60_000);
  assert.equal(failed.operation.state, 'failed');
  assert.match(failed.operation.message, /went away|closed|connection|no reply|not answer/i, failed.operation.message);
  assert.ok(Date.now() - t0 < 30_000, `the failure came within its bound (${Date.now() - t0} ms)`);
  const down = await until('the remote host down', () => get('/hosts', '/hosts'), (x) => x.hosts.find((h: Json) => h.uri === remote!.uri)?.state === 'down');
  assert.ok(down.hosts.find((h: Json) => h.uri === remote!.uri).reason, 'with a reason');
  // The local libvirt host's guest is untouched and still resizable (a little more than it has).
  const local = await guestDoc();
  assert.equal(local.monitor, 'connected');
  const up = Math.ceil((local.memory.totalBytes + 64 * MiB) / (2 * MiB)) * 2 * MiB;
  const more = up <= local.maxMemoryBytes ? up : up - 128 * MiB;
  const put2 = await api('PUT', `/hosts/${H}/domains/${NAME}/memory`, { targetBytes: more, force: true, waitMs: 60_000 });
  assert.equal(put2.status, 200, JSON.stringify(put2.body));
  assert.equal(put2.body.operation.state, 'succeeded', put2.body.operation.message);
});
