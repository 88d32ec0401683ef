import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toMemoryStats } from '../../src/driver/memory/stats.js';
import type { DomainDef } from '../../src/domain/definition.js';

const live = { balloon: { model: 'virtio', statsPeriodS: 5, autodeflate: true, freePageReporting: true } } as DomainDef;

test('QEMU byte counts become KiB under libvirt names, in virsh order, rss last', () => {
  const ms = toMemoryStats({
    live, balloonBytes: 1073741824, rssKiB: 200000,
    guestStats: {
      lastUpdate: 1700000000,
      stats: {
        'stat-swap-in': 0, 'stat-swap-out': 0, 'stat-major-faults': 3, 'stat-minor-faults': 1000,
        'stat-free-memory': 900 * 1024 * 1024, 'stat-total-memory': 1000 * 1024 * 1024, 'stat-available-memory': 800 * 1024 * 1024,
        'stat-disk-caches': 4096 * 1024, 'stat-htlb-pgalloc': 0, 'stat-htlb-pgfail': 0,
      },
    },
  });
  assert.deepEqual(ms.stats.map((s) => `${s.name} ${s.value}`), [
    'actual 1048576', 'swap_in 0', 'swap_out 0', 'major_fault 3', 'minor_fault 1000',
    'unused 921600', 'available 1024000', 'usable 819200', 'last_update 1700000000',
    'disk_caches 4096', 'hugetlb_pgalloc 0', 'hugetlb_pgfail 0', 'rss 200000',
  ]);
});

test('statistics the guest has not reported (-1) are left out, as libvirt does', () => {
  const ms = toMemoryStats({ live, balloonBytes: 536870912, rssKiB: 1, guestStats: { lastUpdate: 0, stats: { 'stat-swap-in': -1, 'stat-free-memory': -1 } } });
  assert.deepEqual(ms.stats.map((s) => s.name), ['actual', 'rss']);
});
