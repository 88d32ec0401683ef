/**
 * The daemon's hosts file (`virtmem daemon --hosts FILE`): one libvirt URI a line, `#` starts a
 * comment, blank lines are skipped; after the URI, `budget=SIZE` gives that host's guests a
 * budget of their own for the automatic policy (virsh sizes: 4G, 3840M, ...). Pure.
 */
import { invalidArg } from '../domain/errors.js';
import { parseScaledKiB } from '../domain/size.js';
import { checkLibvirtUri, isNativeUri } from '../driver/connect.js';
import type { HostSpec } from './daemon.js';

/**
 * The hosts of a hosts file.
 * @throws VirtError INVALID_ARG naming the file, line number and what is wrong.
 */
export function parseHostsFile(text: string, file: string): HostSpec[] {
  const hosts: HostSpec[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line) return;
    const where = `${file} line ${i + 1}`;
    const [uri, ...options] = line.split(/\s+/) as [string, ...string[]];
    if (isNativeUri(uri)) throw invalidArg(`${where}: '${uri}' is virtmem's own driver; the hosts file lists libvirt URIs`);
    try {
      checkLibvirtUri(uri);
    } catch (err) {
      throw invalidArg(`${where}: ${(err as Error).message}`);
    }
    if (hosts.some((h) => h.uri === uri)) throw invalidArg(`${where}: '${uri}' is listed twice`);
    const spec: HostSpec = { uri, budgetBytes: null };
    for (const o of options) {
      const m = /^budget=(.+)$/.exec(o);
      if (!m) throw invalidArg(`${where}: unknown option '${o}' (known: budget=SIZE)`);
      try {
        spec.budgetBytes = parseScaledKiB(m[1]!, 'budget') * 1024;
      } catch (err) {
        throw invalidArg(`${where}: ${(err as Error).message}`);
      }
    }
    hosts.push(spec);
  });
  if (!hosts.length) throw invalidArg(`${file} lists no libvirt URI`);
  return hosts;
}
