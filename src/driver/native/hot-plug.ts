/**
 * Memory devices added to a running guest: the QEMU ids its devices have (from its command
 * line and earlier hot-plugs), and the hot-add itself, planned like the boot devices
 * (qemu-memory.ts) so a device plugged later has the same backing. Used by setmaxmem --live
 * (a virtio-mem device) and attach-device (memory-devices.ts).
 */
import type { DomainDef } from '../../domain/definition.js';
import type { NativeContext } from './context.js';
export { memoryDeviceIds } from './qemu-memory.js';
import { currentHostMemory, withAutoPlacement } from './memory-start.js';
import { backendObject } from './qemu-memory.js';

/**
 * Hot-adds the last memory device of `grown` (the running guest's live definition with it
 * added): its backend and device, planned as the boot devices are, on the host nodes automatic
 * placement chose at start (`autoNodes`, from the run record). The caller holds the lock.
 * @throws VirtError MONITOR_FAILED / OPERATION_FAILED when QEMU refuses (the backend is removed again)
 */
export async function hotAddMemoryDevice(ctx: NativeContext, name: string, grown: DomainDef, autoNodes: readonly number[] | undefined, signal?: AbortSignal): Promise<void> {
  const { plan, backing } = await currentHostMemory(withAutoPlacement(grown, autoNodes), ctx.paths.run(name));
  const added = plan.devices[plan.devices.length - 1]!;
  await ctx.monitor(name, async (c) => {
    await c.execute('object-add', backendObject(added.backend, backing));
    try {
      await c.execute('device_add', added.props);
    } catch (err) {
      await c.execute('object-del', { id: added.backend.id }).catch(() => {});
      throw err;
    }
  }, signal);
}

