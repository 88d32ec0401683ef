/**
 * `virtmem daemon`: runs virtmemd in the foreground (systemd runs it the same way) until
 * SIGTERM or SIGINT. It always listens on <state>/virtmemd.sock (0600, or 0660 with
 * --socket-mode and the group of --socket-group); `--listen tcp:127.0.0.1:PORT` adds a
 * loopback TCP listener, which always needs a token (--token-file, or <state>/virtmemd.token
 * created owner-only).
 *
 * A socket's mode only counts if its directory can be entered: with 0660 the state directory
 * becomes 0710 with the socket's group (members may pass through it to the socket, not list
 * it; everything else in it stays owner-only), and 0700 again without.
 */
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { chmod, chown, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { parseScaledKiB } from '../domain/size.js';
import { UsageError } from './args.js';
import { InputError, readFileBounded } from '../util/bounded-read.js';
import { LoosePermissionsError } from '../util/private-files.js';
import { DEFAULT_POLICY_RECLAIM, POLICY_ENGINES, POLICY_RECLAIMS, type PolicyEngine, type PolicyReclaim } from '../policy/types.js';
import type { Command } from './commands.js';
import { daemonFiles, stateDirectory } from '../driver/connect.js';
import type { HostSpec } from '../daemon/daemon.js';

/** Parsed --listen. Pure. @throws UsageError */
export function parseListen(text: string | undefined): { host: string; port: number } | null {
  if (text === undefined || text === 'unix') return null;
  const m = /^(?:tcp:)?(127\.0\.0\.1|localhost|\[::1\]):([0-9]{1,5})$/.exec(text);
  if (!m || Number(m[2]) > 65535) throw new UsageError(`invalid --listen '${text}': expected unix or [tcp:]127.0.0.1:PORT (loopback only)`);
  return { host: m[1] === '[::1]' ? '::1' : m[1]!, port: Number(m[2]) };
}

/** A token is at most 512 characters; a file much larger than that is not a token file. */
const MAX_TOKEN_FILE_BYTES = 4096;
/** A hosts file lists URIs, one a line. */
const MAX_HOSTS_FILE_BYTES = 1024 * 1024;

/**
 * The API token from `file`; with `create`, a new one is written (0600) when the file is missing.
 * @throws UsageError when the file cannot be read or holds no token; LoosePermissionsError when
 *   everyone may read it or others may write it; InputTooLargeError.
 */
async function loadToken(file: string, create: boolean): Promise<string> {
  let text: string;
  try {
    text = (await readFileBounded(file, MAX_TOKEN_FILE_BYTES, { what: 'a token file', secret: true })).toString('utf8');
  } catch (err) {
    if (err instanceof InputError || err instanceof LoosePermissionsError) throw err;
    if (!create || (err as NodeJS.ErrnoException).code !== 'ENOENT') throw new UsageError(`cannot read token file ${file}: ${(err as Error).message}`);
    const t = randomBytes(24).toString('base64url');
    await writeFile(file, t + '\n', { mode: 0o600, flag: 'wx' });
    return t;
  }
  const t = text.trim();
  if (!/^[\x21-\x7e]{16,512}$/.test(t)) throw new UsageError(`token file ${file} must hold one token of 16 to 512 printable characters`);
  return t;
}

export const DAEMON_COMMANDS: Command[] = [
  {
    name: 'daemon',
    summary: 'run virtmemd in the foreground: HTTP API, dashboard, /metrics, live model of every running guest',
    positionals: [], required: 0, options: ['listen', 'token-file', 'socket-mode', 'socket-group', 'policy', 'policy-budget', 'policy-engine', 'policy-reclaim', 'hosts'],
    async run(ctx) {
      const a = ctx.args;
      const tcp = parseListen(a.options.get('listen'));
      const modeText = a.options.get('socket-mode') ?? '0600';
      if (modeText !== '0600' && modeText !== '0660') throw new UsageError(`invalid --socket-mode '${modeText}': expected 0600 or 0660`);
      const groupText = a.options.get('socket-group');
      if (groupText !== undefined && modeText !== '0660') throw new UsageError('--socket-group needs --socket-mode 0660');
      const socketGid = modeText !== '0660' ? undefined : groupText !== undefined ? await groupId(groupText) : process.getegid!();
      const [{ Daemon }, { ApiServer }, { RpcServer }, { ensurePrivateDir }] = await Promise.all([
        import('../daemon/daemon.js'), import('../http/server.js'), import('../http/rpc-server.js'), import('../util/atomic-file.js'),
      ]);
      const mode = a.options.get('policy') ?? 'per-guest';
      if (mode !== 'off' && mode !== 'per-guest' && mode !== 'all') throw new UsageError(`invalid --policy '${mode}': expected off, per-guest or all`);
      const budgetText = a.options.get('policy-budget');
      const guestBudgetBytes = budgetText === undefined ? null : parseScaledKiB(budgetText, 'policy budget') * 1024;
      const engine = a.options.get('policy-engine') ?? 'virtmem';
      if (!(POLICY_ENGINES as readonly string[]).includes(engine)) throw new UsageError(`invalid --policy-engine '${engine}': expected ${POLICY_ENGINES.join(', ')}`);
      const reclaim = a.options.get('policy-reclaim') ?? DEFAULT_POLICY_RECLAIM;
      if (!(POLICY_RECLAIMS as readonly string[]).includes(reclaim)) throw new UsageError(`invalid --policy-reclaim '${reclaim}': expected ${POLICY_RECLAIMS.join(', ')}`);
      const hostsFile = a.options.get('hosts');
      const hosts = hostsFile === undefined ? null : await readHostsFile(hostsFile);
      const stateDir = stateDirectory(ctx.stateDir);
      const files = daemonFiles(stateDir);
      const daemon = new Daemon({ stateDir, policy: { mode, guestBudgetBytes, engine: engine as PolicyEngine, reclaim: reclaim as PolicyReclaim }, hosts: hosts ?? [] });
      await ensurePrivateDir(stateDir);
      await shareStateDir(stateDir, socketGid, ctx.err);
      const tokenFile = a.options.get('token-file');
      const token = tokenFile ? await loadToken(tokenFile, false)
        : tcp ? await loadToken(files.token, true) : null;
      const staticFiles = await dashboardFiles(ctx.err);
      await daemon.start();
      // On the unix socket the file's mode is the access control (as for libvirt's socket).
      const access = { mode: Number.parseInt(modeText, 8), ...(socketGid !== undefined ? { gid: socketGid } : {}) };
      const servers: Array<InstanceType<typeof ApiServer> | InstanceType<typeof RpcServer>> = [new ApiServer({ daemon, token: null, listen: { kind: 'unix', path: files.socket, ...access }, ...(staticFiles ? { staticFiles } : {}) })];
      if (tcp) servers.push(new ApiServer({ daemon, token, listen: { kind: 'tcp', ...tcp }, ...(staticFiles ? { staticFiles } : {}) }));
      // The same API without HTTP, for clients making many calls (src/http/rpc-server.ts).
      servers.push(new RpcServer({ daemon, listen: { path: files.rpcSocket, ...access } }));
      try {
        for (const s of servers) await s.start();
      } catch (err) {
        await Promise.all(servers.map((s) => s.close().catch(() => {})));
        await daemon.stop();
        throw err;
      }
      for (const s of servers) {
        if (s instanceof RpcServer) { ctx.err(`virtmemd: RPC on ${s.path}\n`); continue; }
        const l = s.address;
        ctx.err(`virtmemd: listening on ${l.kind === 'unix' ? l.path : `http://${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}/`}\n`);
      }
      if (hosts) ctx.err(`virtmemd: watching ${hosts.length} libvirt host(s): ${hosts.map((h) => h.uri).join(', ')}\n`);
      ctx.err(`virtmemd: watching ${daemon.models().length} running guest(s); memory policy ${mode}${mode !== 'off' ? ` (${engine}${engine === 'virtmem' ? `, reclaim ${reclaim}` : ''})` : ''}${guestBudgetBytes !== null ? `, guests' budget ${budgetText}` : ''}\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGTERM', resolve);
        process.once('SIGINT', resolve);
      });
      ctx.err('virtmemd: stopping (guests keep running)\n');
      await Promise.all(servers.map((s) => s.close()));
      await daemon.stop();
    },
  },
];

/** The id of group `name` (a name or a number), as NSS knows it (`getent group`). @throws UsageError */
async function groupId(name: string): Promise<number> {
  if (/^[0-9]{1,10}$/.test(name)) return Number(name);
  const line = await new Promise<string>((resolve) => {
    execFile('getent', ['group', name], { timeout: 10_000 }, (err, stdout) => resolve(err ? '' : stdout));
  });
  const gid = line.split(':')[2];
  if (!gid || !/^[0-9]+$/.test(gid)) throw new UsageError(`invalid --socket-group '${name}': no such group`);
  return Number(gid);
}

/**
 * Give the state directory the mode the socket needs: 0700 for an owner-only socket; 0710 with
 * the socket's group `gid` for a group socket, so members can reach it. Warns when a directory
 * above keeps the group out anyway.
 */
async function shareStateDir(root: string, gid: number | undefined, warn: (s: string) => void): Promise<void> {
  if (gid === undefined) {
    await chmod(root, 0o700);
    return;
  }
  await chown(root, -1, gid);
  await chmod(root, 0o710);
  for (let dir = dirname(root); ; dir = dirname(dir)) {
    const st = await stat(dir);
    const passes = (st.mode & 0o001) !== 0 || (st.gid === gid && (st.mode & 0o010) !== 0);
    if (!passes) warn(`virtmemd: warning: ${dir} (mode 0${(st.mode & 0o777).toString(8)}) cannot be entered by group ${gid}: its members will not reach the socket\n`);
    if (dir === dirname(dir)) break;
  }
}

/** The hosts of a --hosts file. @throws UsageError naming the file and line. */
async function readHostsFile(file: string): Promise<HostSpec[]> {
  let text: string;
  try {
    text = (await readFileBounded(file, MAX_HOSTS_FILE_BYTES, { what: 'a hosts file' })).toString('utf8');
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw new UsageError(`cannot read hosts file ${file}: ${(err as Error).message}`);
  }
  const { parseHostsFile } = await import('../daemon/hosts-file.js');
  try {
    return parseHostsFile(text, file);
  } catch (err) {
    throw new UsageError(`invalid hosts file: ${(err as Error).message}`);
  }
}

/** The dashboard's files, when this build has them. */
async function dashboardFiles(err: (s: string) => void): Promise<import('../http/server.js').StaticFiles | null> {
  const { loadDashboardAssets, isDashboardPath, serveDashboard } = await import('../dashboard/assets.js');
  try {
    const assets = await loadDashboardAssets();
    return (req, res, pathname) => isDashboardPath(pathname) && serveDashboard(assets, req, res, pathname);
  } catch (e) {
    // The API and /metrics work without the page; say why it is missing.
    err(`virtmemd: dashboard not served: ${(e as Error).message}\n`);
    return null;
  }
}
