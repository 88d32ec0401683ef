/**
 * Where virtmem keeps its state. One state directory holds the persistent definitions, the
 * per-domain runtime directories (sockets, logs, status) and the locks.
 *
 * root:    /var/lib/virtmem
 * others:  $XDG_STATE_HOME/virtmem (default ~/.local/state/virtmem)
 * override: $VIRTMEM_STATE_DIR or the `stateDir` option of the driver.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { VirtError } from '../../domain/errors.js';

/** Default state directory for the current user. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.VIRTMEM_STATE_DIR) return env.VIRTMEM_STATE_DIR;
  if (process.getuid?.() === 0) return '/var/lib/virtmem';
  const base = env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(base, 'virtmem');
}

/** Longest path a unix socket address may hold on Linux (sun_path is 108 bytes incl. NUL). */
const MAX_SOCKET_PATH = 107;

/** Files of one domain's runtime directory. */
export interface RunPaths {
  dir: string;
  status: string;
  /** Monitor for short calls (CLI, API one-shots). */
  qmp: string;
  /** Monitor reserved for a long-lived watcher (the daemon), so it never blocks short calls. */
  qmpWatch: string;
  console: string;
  consoleLog: string;
  agent: string;
  /** The guest's memory-pressure feed (third serial port; see src/daemon/guest-pressure.ts). */
  pressure: string;
  qemuLog: string;
  pidfile: string;
  /** The daemon's policy loop: its last decision for this guest (read by `policy show`). */
  policyLast: string;
  /** File-backed guest RAM (<memoryBacking><source type='file'/>): QEMU's unlinked files. */
  memoryDir: string;
}

/** Layout of a state directory. */
export class StatePaths {
  constructor(readonly root: string) {}
  get domainsDir(): string { return join(this.root, 'domains'); }
  get runDir(): string { return join(this.root, 'run'); }
  get locksDir(): string { return join(this.root, 'locks'); }
  get idCounter(): string { return join(this.root, 'next-id'); }
  /** virtmemd's API socket. */
  get daemonSocket(): string { return join(this.root, 'virtmemd.sock'); }
  /** virtmemd's RPC socket (the API without HTTP, src/http/rpc-server.ts). */
  get daemonRpcSocket(): string { return join(this.root, 'virtmemd-rpc.sock'); }
  /** The token of virtmemd's TCP listener, when it made one. */
  get daemonToken(): string { return join(this.root, 'virtmemd.token'); }
  definition(name: string): string { return join(this.domainsDir, `${name}.json`); }
  /** Where the driver mounts a hugetlbfs for a page size the host has no mount of (root only). */
  hugetlbfs(pageSizeKiB: number): string { return join(this.root, 'hugepages', `${pageSizeKiB}kB`); }
  lock(name: string): string { return join(this.locksDir, `${name}.lock`); }
  /** The turn on a domain's short-call monitor ('@' is in no domain name: never another's lock). */
  monitorLock(name: string): string { return join(this.locksDir, `${name}@monitor.lock`); }

  /**
   * Runtime files of a domain.
   * @throws VirtError INVALID_ARG when the state directory is so deep that a socket path would
   *   not fit into a unix socket address.
   */
  run(name: string): RunPaths {
    const dir = join(this.runDir, name);
    const paths: RunPaths = {
      dir,
      status: join(dir, 'status.json'),
      qmp: join(dir, 'qmp.sock'),
      qmpWatch: join(dir, 'qmp-watch.sock'),
      console: join(dir, 'console.sock'),
      consoleLog: join(dir, 'console.log'),
      agent: join(dir, 'agent.sock'),
      pressure: join(dir, 'pressure.sock'),
      qemuLog: join(dir, 'qemu.log'),
      pidfile: join(dir, 'qemu.pid'),
      policyLast: join(dir, 'policy-last.json'),
      memoryDir: join(dir, 'memory'),
    };
    if (Buffer.byteLength(paths.qmpWatch) > MAX_SOCKET_PATH) {
      throw new VirtError(
        'INVALID_ARG',
        `state directory '${this.root}' is too deep: the monitor socket path for '${name}' would exceed ${MAX_SOCKET_PATH} bytes; choose a shorter VIRTMEM_STATE_DIR or domain name`,
      );
    }
    return paths;
  }
}
