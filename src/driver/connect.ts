/**
 * How front ends get a driver: a connection URI in, the driver behind it out (virsh's
 * virConnectOpen). Part of the driver layer's face with api.ts: the CLI and the daemon never
 * construct a driver class themselves.
 *
 *   none, virtmem:///system, virtmem:///session  virtmem's own QEMU driver (native/)
 *   qemu:///..., qemu+tcp://..., test:///...      libvirt over its RPC protocol (libvirt/)
 *
 * With `viaDaemon` the native driver is wrapped by the daemon's client (remote/), which
 * forwards what a running virtmemd serves and does the rest itself.
 */
import { chooseUri as chooseFromEnv, isNativeUri, parseLibvirtUri } from '../libvirt/uri.js';
import type { HypervisorDriver } from './api.js';
import { NativeDriver } from './native/driver.js';
import { StatePaths, defaultStateDir } from './native/paths.js';
import { LibvirtDriver, type LibvirtDriverOptions } from './libvirt/driver.js';
import { DaemonDriver } from './remote/daemon-driver.js';

export { isNativeUri };

export interface ConnectOptions {
  /** The URI; absent: virtmem's own driver. */
  uri?: string | undefined;
  /** State directory of the native driver (default $VIRTMEM_STATE_DIR or the per-user location). */
  stateDir?: string | undefined;
  /** Native driver only: go through a running virtmemd for what it serves. */
  viaDaemon?: boolean;
  /** libvirt only: connection bounds and keepalive. */
  libvirt?: LibvirtDriverOptions;
}

/**
 * The driver for a URI. Nothing is connected yet: libvirt connects on first use.
 * @throws VirtError INVALID_ARG for a URI that names no driver virtmem has
 */
export function openDriver(o: ConnectOptions = {}): HypervisorDriver {
  if (isNativeUri(o.uri)) {
    const native = new NativeDriver(o.stateDir ? { stateDir: o.stateDir } : {});
    return o.viaDaemon ? new DaemonDriver(native.paths.daemonSocket, native) : native;
  }
  return new LibvirtDriver(o.uri!, o.libvirt ?? {});
}

/** The URI the user means: -c, else $LIBVIRT_DEFAULT_URI as virsh; undefined is virtmem's own driver. */
export function chooseUri(given: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  return chooseFromEnv(given, env);
}

/**
 * A libvirt URI checked without connecting.
 * @throws VirtError INVALID_ARG naming what is wrong
 */
export function checkLibvirtUri(uri: string): void {
  parseLibvirtUri(uri);
}

/** The state directory the native driver uses (its daemon's socket and token live there). */
export function stateDirectory(given?: string): string {
  return given ?? defaultStateDir();
}

/** virtmemd's API socket and token in a state directory. */
export function daemonFiles(stateDir: string): { socket: string; rpcSocket: string; token: string } {
  const p = new StatePaths(stateDir);
  return { socket: p.daemonSocket, rpcSocket: p.daemonRpcSocket, token: p.daemonToken };
}
