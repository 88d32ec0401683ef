/** QEMU's own view of a guest's memory, read through the CLI's monitor passthrough (not a definition's). */
import assert from 'node:assert/strict';

type Run = (...args: string[]) => Promise<{ code: number; stdout: string; stderr: string }>;

/** `info balloon` (what the guest keeps of boot RAM) and the virtio-mem devices' plugged size, MiB. */
export async function qemuSizesMiB(run: Run, name: string): Promise<{ balloon: number; plugged: number }> {
  const b = await run('qemu-monitor-command', name, '--hmp', 'info balloon');
  const d = await run('qemu-monitor-command', name, '{"execute":"query-memory-devices"}');
  assert.equal(b.code, 0, b.stderr);
  assert.equal(d.code, 0, d.stderr);
  const balloon = Number(/actual=(\d+)/.exec(b.stdout)?.[1]);
  const devs = (JSON.parse(d.stdout) as { return: Array<{ type: string; data: { size: number } }> }).return;
  const plugged = devs.filter((x) => x.type === 'virtio-mem').reduce((s, x) => s + x.data.size, 0) / 2 ** 20;
  return { balloon, plugged };
}
