/**
 * Parser for HMP `info registers -a` (QEMU target/i386/cpu-dump.c, x86_cpu_dump_state): one
 * block per vCPU, headed `CPU#N`, with `NAME=hexvalue` fields. Pure; tested against recorded
 * output in test/fixtures/inspect/.
 */
import { VirtError } from '../domain/errors.js';
import type { ControlRegisters } from './paging.js';

/** What an address translation needs to know about one vCPU. */
export interface VcpuRegisters extends ControlRegisters {
  /** QEMU's cpu index (the N of `CPU#N`). */
  cpu: number;
  /** RIP (EIP outside long mode). */
  rip: bigint;
  rsp: bigint;
  cr2: bigint;
  /** Current privilege level: 3 while the vCPU runs user code. */
  cpl: number;
  /** Whether the vCPU sits in HLT (idle). */
  halted: boolean;
  /** Base of the GS segment (the kernel's per-CPU area while in the kernel). */
  gsBase: bigint;
}

const hexField = (block: string, names: string[]): bigint | undefined => {
  for (const name of names) {
    // Register names are padded to three characters ("R8 =") in QEMU's dump.
    const m = new RegExp(`(?:^|[\\s])${name}\\s*=\\s*([0-9a-fA-F]+)\\b`, 'm').exec(block);
    if (m?.[1]) return BigInt(`0x${m[1]}`);
  }
  return undefined;
};

/**
 * Parses `info registers -a` (also `info registers`, which prints one such block).
 * @throws VirtError OPERATION_FAILED when no vCPU block with CR0/CR3/CR4 is found.
 */
export function parseRegisters(text: string): VcpuRegisters[] {
  const out: VcpuRegisters[] = [];
  const parts = text.replace(/\r/g, '').split(/^CPU#(\d+)\s*$/m);
  // split() with a capture group: [before, index0, block0, index1, block1, ...]
  for (let i = 1; i + 1 < parts.length; i += 2) {
    const block = parts[i + 1]!;
    const need = (names: string[]): bigint => {
      const v = hexField(block, names);
      if (v === undefined) throw new VirtError('OPERATION_FAILED', `cannot read ${names[0]} of vCPU ${parts[i]} from QEMU's 'info registers' output`);
      return v;
    };
    const cpl = /\bCPL=(\d)\b/.exec(block)?.[1];
    const hlt = /\bHLT=(\d)\b/.exec(block)?.[1];
    const gs = /^GS\s*=\s*[0-9a-fA-F]+\s+([0-9a-fA-F]+)/m.exec(block)?.[1];
    out.push({
      cpu: Number(parts[i]),
      rip: need(['RIP', 'EIP']),
      rsp: need(['RSP', 'ESP']),
      cr0: need(['CR0']),
      cr2: need(['CR2']),
      cr3: need(['CR3']),
      cr4: need(['CR4']),
      // Printed on every QEMU this targets; a CPU without long mode has EFER 0.
      efer: hexField(block, ['EFER']) ?? 0n,
      cpl: cpl === undefined ? 0 : Number(cpl),
      halted: hlt === '1',
      gsBase: gs === undefined ? 0n : BigInt(`0x${gs}`),
    });
  }
  if (out.length === 0) {
    throw new VirtError('OPERATION_FAILED', `QEMU's 'info registers' output has no vCPU block: ${text.slice(0, 200)}`);
  }
  return out;
}
