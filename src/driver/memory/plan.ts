/**
 * One memory target, the right mechanism underneath: how a total (what `setmem` asks for) is
 * split between the balloon over boot RAM and the virtio-mem devices, and in which order the
 * steps run. Pure.
 *
 * Facts this rests on (QEMU 7.2, checked on this machine): the balloon acts on boot RAM only —
 * `query-balloon` "actual" never includes virtio-mem or DIMM memory, and a balloon target above
 * boot RAM is clamped to it; virtio-mem plugs and unplugs whole blocks.
 *
 * Policy: the balloon is fully deflated whenever virtio-mem can carry the memory above boot RAM,
 * because unplugged blocks go back to the host at once while balloon pages only do with free
 * page reporting. A target between two block boundaries plugs the next whole block and inflates
 * the balloon by the remainder. Other splits for the policy: planSplit.
 */
import { balloonKeepKiB, type MemorySplit } from '../../domain/memory.js';

/** A virtio-mem device as the plan sees it (all KiB). */
export interface VirtioMemState {
  id: string;
  sizeKiB: number;
  blockKiB: number;
  pluggedKiB: number;
  /**
   * The size the device was last asked for (QEMU's requested-size), where the caller read it:
   * while the guest is still plugging or unplugging it differs from pluggedKiB. Absent: pluggedKiB.
   */
  requestedKiB?: number;
}

/** A running guest's memory layout (all KiB). */
export interface MemoryLayout {
  /** Boot RAM (QEMU -m size): what the balloon acts on. */
  bootKiB: number;
  /** DIMMs: always fully present. */
  dimmKiB: number;
  vmem: VirtioMemState[];
}

/** Target state for one total. */
export interface MemoryPlan {
  targetKiB: number;
  /** Balloon target: how much of boot RAM the guest keeps. */
  balloonKiB: number;
  /** Requested size per virtio-mem device, in layout order. */
  requestedKiB: number[];
}

/** The most a layout can provide: every block plugged, balloon deflated. */
export function layoutMaxKiB(l: MemoryLayout): number {
  return l.bootKiB + l.dimmKiB + l.vmem.reduce((s, d) => s + d.sizeKiB, 0);
}

/**
 * Split `targetKiB` between balloon and virtio-mem devices (filled in order).
 * @throws RangeError when the target is outside [dimmKiB + 1, layoutMaxKiB] — callers validate
 *   and phrase user-facing errors first.
 */
export function planMemory(l: MemoryLayout, targetKiB: number): MemoryPlan {
  const max = layoutMaxKiB(l);
  if (targetKiB > max || targetKiB <= l.dimmKiB) throw new RangeError(`target ${targetKiB} KiB outside (${l.dimmKiB}, ${max}] KiB`);
  let above = targetKiB - l.dimmKiB - l.bootKiB; // what virtio-mem must carry
  if (above <= 0) return { targetKiB, balloonKiB: targetKiB - l.dimmKiB, requestedKiB: l.vmem.map(() => 0) };
  const requestedKiB: number[] = [];
  let plugged = 0;
  for (const d of l.vmem) {
    const take = Math.min(d.sizeKiB, Math.ceil(above / d.blockKiB) * d.blockKiB);
    requestedKiB.push(take);
    plugged += take;
    above = Math.max(0, above - take);
  }
  // Rounding up to whole blocks may overshoot: the balloon takes the remainder back.
  const balloonKiB = targetKiB - l.dimmKiB - plugged;
  return { targetKiB, balloonKiB, requestedKiB };
}

/**
 * Split `targetKiB` the way `split` says, from where the guest is: its virtio-mem devices'
 * requested sizes and the balloon's actual size (`balloonKiB`).
 *
 * - 'plain': planMemory (the balloon deflated whenever virtio-mem can carry the memory).
 * - 'balloon-first': a shrink inflates the balloon and unplugs only what the balloon cannot
 *   hold (it leaves balloonKeepKiB of boot RAM); a grow plugs and leaves the balloon where it
 *   is. For a change that may have to be reversed at once (the policy's, opt-in). Why: the
 *   virtio-mem driver of Linux < 6.5 unplugs in one pass on the guest's shared freezable
 *   workqueue, and a pass that meets memory pressure migrates and retries for seconds without
 *   yielding: every grow the host sends, and the balloon's statistics, wait behind it.
 *   Inflation works in small pieces with allocations that give up at once, and with
 *   deflate-on-OOM the guest takes its pages back itself; plugging is fast, deflating is not
 *   (~200 MiB/s under TCG, docs/benchmarks.md).
 * - 'balloon-back': the other way round, to hand what the balloon holds back as unplugged
 *   blocks in two changes (a grow that deflates, then a shrink that unplugs), so the guest
 *   never has less than either size meanwhile: a grow deflates first and plugs only what boot
 *   RAM cannot give; a shrink unplugs and inflates only once nothing is left to unplug.
 *
 * Whole blocks may overshoot; a split the balloon cannot finish (beyond boot RAM, or nothing
 * left) is the plain one.
 * @throws RangeError as planMemory
 */
export function planSplit(l: MemoryLayout, balloonKiB: number, targetKiB: number, split: MemorySplit): MemoryPlan {
  const plain = planMemory(l, targetKiB); // the same range check
  if (split === 'plain') return plain;
  const requested = l.vmem.map((d) => d.requestedKiB ?? d.pluggedKiB);
  const plugged = (): number => requested.reduce((s, r) => s + r, 0);
  // Whole blocks in device order, up to `kib`, as far as the devices go.
  const plug = (kib: number): void => {
    l.vmem.forEach((d, i) => {
      if (kib <= 0) return;
      const add = Math.min(d.sizeKiB - requested[i]!, Math.ceil(kib / d.blockKiB) * d.blockKiB);
      requested[i] = requested[i]! + add;
      kib -= add;
    });
  };
  // Whole blocks from the last device, at least `kib`, as far as there are any.
  const unplug = (kib: number): void => {
    for (let i = l.vmem.length - 1; i >= 0 && kib > 0; i--) {
      const cut = Math.min(requested[i]!, Math.ceil(kib / l.vmem[i]!.blockKiB) * l.vmem[i]!.blockKiB);
      requested[i] = requested[i]! - cut;
      kib -= cut;
    }
  };
  const balloonNow = Math.max(0, Math.min(l.bootKiB, balloonKiB));
  const grow = targetKiB >= l.dimmKiB + plugged() + balloonNow;
  if (split === 'balloon-first') {
    if (grow) plug(targetKiB - l.dimmKiB - plugged() - balloonNow);
    else unplug(balloonKeepKiB(l.bootKiB) - (targetKiB - l.dimmKiB - plugged()));
  } else {
    if (grow) plug(targetKiB - l.dimmKiB - plugged() - l.bootKiB);
    else unplug(l.dimmKiB + plugged() + balloonNow - targetKiB);
  }
  const balloon = targetKiB - l.dimmKiB - plugged();
  return balloon > 0 && balloon <= l.bootKiB ? { targetKiB, balloonKiB: balloon, requestedKiB: requested } : plain;
}

/** The split a setmem gets: `split` where the guest has a balloon (`balloonKiB` non-null), else the plain one. */
export function planChange(l: MemoryLayout, balloonKiB: number | null, targetKiB: number, split: MemorySplit = 'plain'): MemoryPlan {
  return balloonKiB !== null ? planSplit(l, balloonKiB, targetKiB, split) : planMemory(l, targetKiB);
}

/** One command of a plan, in execution order. */
export type MemoryStep =
  | { kind: 'balloon'; targetKiB: number }
  | { kind: 'vmem'; index: number; id: string; requestedKiB: number };

/**
 * Order the steps from the current state: memory is first handed to the guest the cheap way
 * and taken back the fast way — a growing balloon target (deflate) before plugging, unplugging
 * before a shrinking balloon target (inflate). A device already asked for its size is left
 * out. `balloonKiB` is where the balloon is now (null: the guest has none); QEMU keeps no
 * balloon target it could be asked for, so the balloon step is always sent: a balloon still
 * moving toward an earlier target would otherwise keep going there when its size happens to
 * equal the new one.
 */
export function orderSteps(l: MemoryLayout, balloonKiB: number | null, plan: MemoryPlan): MemoryStep[] {
  const vmemSteps: MemoryStep[] = plan.requestedKiB.flatMap((r, index) => {
    const d = l.vmem[index]!;
    return r === (d.requestedKiB ?? d.pluggedKiB) ? [] : [{ kind: 'vmem' as const, index, id: d.id, requestedKiB: r }];
  });
  const unplug = vmemSteps.filter((s) => s.kind === 'vmem' && s.requestedKiB < l.vmem[s.index]!.pluggedKiB);
  const plug = vmemSteps.filter((s) => !unplug.includes(s));
  if (balloonKiB === null) return [...unplug, ...plug];
  const balloon: MemoryStep = { kind: 'balloon', targetKiB: plan.balloonKiB };
  return plan.balloonKiB > balloonKiB ? [...unplug, balloon, ...plug] : [...unplug, ...plug, balloon];
}
