/**
 * A fake native guest for the daemon: its run record (a live `sleep` stands in for QEMU: the
 * daemon checks the pid and its start time) and a scripted watch monitor (fake-qmp.ts). For
 * monitor behaviour a real QEMU will not show on demand.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { FakePeer } from './fake-qmp.js';
import { parseProcStat } from '../../src/driver/native/host-process.js';
import type { DomainDef } from '../../src/domain/definition.js';

/** Writes the guest's run record under `stateDir` and serves its watch monitor; `onPeer` drives each connection. */
export async function fakeGuest(stateDir: string, standPid: number, id: number, live: DomainDef, onPeer: (p: FakePeer) => void): Promise<net.Server> {
  const run = join(stateDir, 'run', live.name);
  await mkdir(run, { recursive: true });
  const st = parseProcStat(await readFile(`/proc/${standPid}/stat`, 'utf8'))!;
  await writeFile(join(run, 'status.json'), JSON.stringify({ version: 1, phase: 'running', pid: standPid, startTicks: st.startTicks, id, accel: 'tcg', startedAt: new Date().toISOString(), live }));
  const server = net.createServer((sock) => onPeer(new FakePeer(sock)));
  await new Promise<void>((r) => server.listen(join(run, 'qmp-watch.sock'), r));
  return server;
}
