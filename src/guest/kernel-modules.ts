/**
 * Which kernel modules go into the default guest's initramfs, and in what order: pure planning
 * over facts read from the unpacked kernel package (modules.builtin, each module's
 * `.modinfo depends=`).
 */

/**
 * What the default guest needs, in the order the facts sheet gives (dependencies first):
 * virtio transport + balloon + virtio-mem, virtio-blk so a guest given a disk can hold page cache
 * (its own rootfs is ramfs, whose pages are never reclaimable), and evdev + button so busybox
 * acpid sees the ACPI power button.
 */
export const DEFAULT_GUEST_MODULES: readonly string[] = [
  'virtio_ring',
  'virtio',
  'virtio_pci_legacy_dev',
  'virtio_pci_modern_dev',
  'virtio_pci',
  'virtio_balloon',
  'virtio_mem',
  'virtio_blk',
  'evdev',
  'button',
];

/** Module names treat `-` and `_` alike (kernel/params.c parameq); compare them normalised. */
export function normaliseModuleName(name: string): string {
  return name.replace(/-/g, '_');
}

/** The module name of a path in modules.builtin or under lib/modules (`.../virtio_pci.ko` -> `virtio_pci`). */
export function moduleNameFromPath(path: string): string | null {
  const m = /([^/]+)\.ko(?:\.(?:xz|zst|gz))?$/.exec(path.trim());
  return m?.[1] ? normaliseModuleName(m[1]) : null;
}

/** Names listed in a kernel's `modules.builtin` file (one `kernel/.../name.ko` per line). */
export function parseModulesBuiltin(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    const name = moduleNameFromPath(line);
    if (name) names.add(name);
  }
  return names;
}

/** A loadable module found in the kernel package. */
export interface ModuleFile {
  /** Path of the `.ko` on the host (inside the unpacked package). */
  path: string;
  /** Names from its `.modinfo depends=` field, normalised. */
  depends: string[];
}

export interface ModulePlan {
  /** Modules to insmod, dependencies before dependants; includes dependencies not asked for. */
  load: Array<{ name: string } & ModuleFile>;
  /** Wanted (or needed) modules compiled into this kernel: nothing to load. */
  builtin: string[];
  /** Wanted (or needed) modules neither built in nor present as a loadable `.ko`. */
  missing: string[];
}

/**
 * Orders `wanted` and everything they depend on for insmod (depth-first, dependencies first,
 * otherwise keeping the order of `wanted`). `files` must hold every loadable module reachable
 * from `wanted`; names absent from both `builtin` and `files` are reported in `missing`.
 * Never throws; a dependency cycle (impossible for real modules) is broken where it is met.
 */
export function planModules(
  wanted: readonly string[],
  builtin: ReadonlySet<string>,
  files: ReadonlyMap<string, ModuleFile>,
): ModulePlan {
  const plan: ModulePlan = { load: [], builtin: [], missing: [] };
  const seen = new Set<string>();
  const visit = (raw: string): void => {
    const name = normaliseModuleName(raw);
    if (seen.has(name)) return;
    seen.add(name);
    if (builtin.has(name)) {
      plan.builtin.push(name);
      return;
    }
    const file = files.get(name);
    if (!file) {
      plan.missing.push(name);
      return;
    }
    for (const dep of file.depends) visit(dep);
    plan.load.push({ name, ...file });
  };
  for (const name of wanted) visit(name);
  return plan;
}

/** The `depends=` value of a `.modinfo` (comma separated, may be empty) as normalised names. */
export function parseDepends(values: readonly string[] | undefined): string[] {
  return (values ?? [])
    .flatMap((v) => v.split(','))
    .map((s) => normaliseModuleName(s.trim()))
    .filter((s) => s.length > 0);
}

/**
 * Why the default guest cannot see one of `disks`, or null when it sees them all. `guestModules`
 * are the modules it loads or has built in (GuestManifest.modules + builtinModules). It drives
 * virtio disks only (the cloud kernel has ahci, ata_piix and virtio_scsi as modules, which the
 * initramfs does not carry), and only when built with virtio_blk: a guest cached before that
 * module was added boots fine but shows no /dev/vda. Pure, never throws.
 */
export function defaultGuestDiskProblem(
  guestModules: readonly string[],
  disks: ReadonlyArray<{ target: string; bus: string }>,
): { target: string; reason: 'bus' | 'module' } | null {
  for (const d of disks) {
    if (d.bus !== 'virtio') return { target: d.target, reason: 'bus' };
    if (!guestModules.includes('virtio_blk')) return { target: d.target, reason: 'module' };
  }
  return null;
}
