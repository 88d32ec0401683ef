/**
 * Listening on a unix socket the way every virtmemd socket does: a stale socket file (nobody
 * answers) is replaced, a live one is not; the socket is owner-only from its creation and then
 * gets the group and mode asked for (the file's mode is the access control, as for libvirt's).
 */
import { chmod, chown, unlink } from 'node:fs/promises';
import { createConnection, type Server } from 'node:net';
import { HttpError } from './errors.js';
import { withUmask } from '../util/private-files.js';

/** A unix socket gets `mode` (default 0600) and, when given, the group `gid` (the members it lets in). */
export interface UnixAddress { path: string; mode?: number; gid?: number }

/** @throws HttpError INTERNAL when another daemon answers at `l.path`, or listening fails */
export async function listenUnix(server: Server, l: UnixAddress): Promise<void> {
  if (await answers(l.path)) throw new HttpError(500, 'INTERNAL', `another daemon already answers on ${l.path}`);
  await unlink(l.path).catch(() => {});
  // bind() happens inside listen(), synchronously, so the umask is back before anything else runs.
  await listenOn(server, () => withUmask(0o177, () => server.listen(l.path)));
  if (l.gid !== undefined) await chown(l.path, -1, l.gid);
  await chmod(l.path, l.mode ?? 0o600);
}

/** Runs `go` (a listen call) and resolves once `server` listens. @throws HttpError INTERNAL */
export function listenOn(server: Server, go: () => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const onErr = (err: Error): void => reject(new HttpError(500, 'INTERNAL', `cannot listen: ${err.message}`, undefined, { cause: err }));
    server.once('error', onErr);
    server.once('listening', () => { server.off('error', onErr); resolve(); });
    go();
  });
}

/** True when something accepts connections on the unix socket `path` now. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}
