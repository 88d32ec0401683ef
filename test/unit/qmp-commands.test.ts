import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  parseBalloonGuestStats,
  queryBalloon,
  queryBalloonGuestStats,
  queryMemoryDevices,
  queryMemorySizeSummary,
  queryStatus,
  quit,
  setBalloon,
  qomSet,
  type QmpExecutor,
} from '../../src/qmp/commands.js';
import { QmpCommandError, QmpDisconnectedError, QmpProtocolError } from '../../src/qmp/errors.js';

interface Call {
  command: string;
  args: Record<string, unknown> | undefined;
}

/** A scripted executor: answers each command from `replies` and records what was sent. */
function scripted(replies: Record<string, unknown>): QmpExecutor & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    execute: async (command, args) => {
      calls.push({ command, args });
      const r = replies[command];
      if (r instanceof Error) throw r;
      return r;
    },
  };
}

describe('QMP command wrappers', () => {
  it('queryStatus reads status and running (QEMU 7.2 reply)', async () => {
    const qmp = scripted({ 'query-status': { status: 'prelaunch', singlestep: false, running: false } });
    assert.deepEqual(await queryStatus(qmp), { status: 'prelaunch', running: false });
    assert.deepEqual(qmp.calls, [{ command: 'query-status', args: undefined }]);
  });

  it('queryStatus rejects a wrong shape with QmpProtocolError', async () => {
    await assert.rejects(queryStatus(scripted({ 'query-status': { status: 'running' } })), (e: unknown) =>
      e instanceof QmpProtocolError && /query-status\.running/.test(e.message),
    );
    await assert.rejects(queryStatus(scripted({ 'query-status': 'running' })), QmpProtocolError);
  });

  it('queryBalloon and setBalloon speak bytes', async () => {
    const qmp = scripted({ 'query-balloon': { actual: 671088640 }, balloon: {} });
    assert.deepEqual(await queryBalloon(qmp), { actualBytes: 671088640 });
    await setBalloon(qmp, 512 * 1024 * 1024);
    assert.deepEqual(qmp.calls[1], { command: 'balloon', args: { value: 536870912 } });
  });

  it('qomSet sends path, property and value', async () => {
    const qmp = scripted({ 'qom-set': {} });
    await qomSet(qmp, '/machine/peripheral/vm0', 'requested-size', 1073741824);
    assert.deepEqual(qmp.calls, [
      { command: 'qom-set', args: { path: '/machine/peripheral/vm0', property: 'requested-size', value: 1073741824 } },
    ]);
  });

  it('queryMemorySizeSummary maps names and treats an absent plugged-memory as 0', async () => {
    assert.deepEqual(
      await queryMemorySizeSummary(scripted({ 'query-memory-size-summary': { 'base-memory': 536870912, 'plugged-memory': 134217728 } })),
      { baseMemoryBytes: 536870912, pluggedMemoryBytes: 134217728 },
    );
    assert.deepEqual(await queryMemorySizeSummary(scripted({ 'query-memory-size-summary': { 'base-memory': 134217728 } })), {
      baseMemoryBytes: 134217728,
      pluggedMemoryBytes: 0,
    });
  });

  it('queryMemoryDevices types virtio-mem and dimm entries (QEMU 7.2 reply) and keeps unknown kinds', async () => {
    const reply = [
      {
        type: 'virtio-mem',
        data: { memdev: '/objects/m0', memaddr: 4294967296, 'block-size': 2097152, size: 0, node: 0, 'max-size': 1073741824, 'requested-size': 0, id: 'vm0' },
      },
      {
        type: 'dimm',
        data: { memdev: '/objects/m1', hotplugged: false, addr: 5368709120, hotpluggable: true, size: 134217728, slot: 0, node: 0, id: 'd0' },
      },
      { type: 'virtio-pmem', data: { memaddr: 1, size: 2, memdev: '/objects/p' } },
    ];
    assert.deepEqual(await queryMemoryDevices(scripted({ 'query-memory-devices': reply })), [
      {
        type: 'virtio-mem',
        id: 'vm0',
        memaddr: 4294967296,
        requestedSizeBytes: 0,
        sizeBytes: 0,
        maxSizeBytes: 1073741824,
        blockSizeBytes: 2097152,
        node: 0,
        memdev: '/objects/m0',
      },
      {
        type: 'dimm',
        id: 'd0',
        addr: 5368709120,
        sizeBytes: 134217728,
        slot: 0,
        node: 0,
        memdev: '/objects/m1',
        hotplugged: false,
        hotpluggable: true,
      },
      { type: 'other', qemuType: 'virtio-pmem', data: { memaddr: 1, size: 2, memdev: '/objects/p' } },
    ]);
  });

  it('queryMemoryDevices names the bad member of a malformed entry', async () => {
    const reply = [{ type: 'virtio-mem', data: { memaddr: 1, size: 0, 'max-size': 1, 'block-size': 1, node: 0, memdev: 'm' } }];
    await assert.rejects(queryMemoryDevices(scripted({ 'query-memory-devices': reply })), (e: unknown) =>
      e instanceof QmpProtocolError && /query-memory-devices\[0\]\.data\.requested-size/.test(e.message),
    );
  });

  it('queryBalloonGuestStats maps QEMU 7.2 uint64 -1 (18446744073709551615) to -1 and keeps real values', async () => {
    // Exactly what QEMU 7.2 sends before the guest reported anything, parsed by JSON.parse.
    const raw = JSON.parse(
      '{"stats": {"stat-swap-in": 18446744073709551615, "stat-total-memory": 18446744073709551615}, "last-update": 0}',
    ) as unknown;
    assert.deepEqual(parseBalloonGuestStats(raw), { stats: { 'stat-swap-in': -1, 'stat-total-memory': -1 }, lastUpdate: 0 });

    const qmp = scripted({
      'qom-get': { stats: { 'stat-total-memory': 123456789, 'stat-available-memory': 1000, 'stat-swap-in': -1 }, 'last-update': 1795767951 },
    });
    assert.deepEqual(await queryBalloonGuestStats(qmp, '/machine/peripheral/balloon0'), {
      stats: { 'stat-total-memory': 123456789, 'stat-available-memory': 1000, 'stat-swap-in': -1 },
      lastUpdate: 1795767951,
    });
    assert.deepEqual(qmp.calls, [{ command: 'qom-get', args: { path: '/machine/peripheral/balloon0', property: 'guest-stats' } }]);
  });

  it('parseBalloonGuestStats rejects non-numeric stats', () => {
    assert.throws(() => parseBalloonGuestStats({ stats: { 'stat-x': '1' }, 'last-update': 0 }), QmpProtocolError);
    assert.throws(() => parseBalloonGuestStats({ stats: {} }), QmpProtocolError);
  });

  it('quit treats a disconnect as success but passes other failures through', async () => {
    await quit(scripted({ quit: new QmpDisconnectedError('QEMU closed the monitor connection') }));
    await assert.rejects(quit(scripted({ quit: new QmpCommandError('quit', undefined, 'GenericError', 'no') })), QmpCommandError);
  });
});
