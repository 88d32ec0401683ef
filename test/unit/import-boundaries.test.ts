/**
 * The house's walls (../shared/STYLE.md): every import in src/ read from the sources, and each
 * arrow checked against the layers. A front end (CLI, daemon, HTTP, policy, dashboard) reaches
 * the drivers only through their face (driver/api.ts, watch.ts, view.ts, connect.ts) and the
 * domain layer; a driver never imports another; the domain layer and the protocols import
 * nothing above them. A new arrow across these lines fails here, naming the file and the import.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { ROOT } from '../helpers/cli.js';

const SRC = join(ROOT, 'src');

/** The layer of a file under src/ (driver/ is split into its face and its parts). */
function layer(file: string): string {
  const parts = relative(SRC, file).split('/');
  if (parts[0] === 'driver') {
    if (parts.length === 2) return 'driver-face';
    return `driver/${parts[1]}`;
  }
  return parts.length === 1 ? parts[0]!.replace(/\.ts$/, '') : parts[0]!;
}

/** Which layers each layer may import (besides itself). */
const ALLOWED: Record<string, readonly string[]> = {
  util: [],
  domain: ['util'],
  qmp: [],
  libvirt: ['domain', 'util'],
  inspect: ['qmp', 'domain'],
  guest: ['util'],
  'driver/memory': ['domain', 'driver-face', 'qmp', 'util'],
  'driver-face': ['domain', 'driver/memory', 'driver/native', 'driver/libvirt', 'driver/remote', 'inspect', 'libvirt', 'util'],
  'driver/native': ['domain', 'driver-face', 'driver/memory', 'qmp', 'guest', 'inspect', 'util'],
  'driver/libvirt': ['domain', 'driver-face', 'driver/memory', 'libvirt', 'util'],
  'driver/remote': ['domain', 'driver-face', 'util'],
  policy: ['domain', 'driver-face'],
  daemon: ['domain', 'driver-face', 'policy', 'util'],
  http: ['domain', 'driver-face', 'daemon', 'policy', 'util'],
  dashboard: ['util'],
  cli: ['domain', 'driver-face', 'daemon', 'http', 'policy', 'dashboard', 'guest', 'util'],
  index: ['domain', 'driver-face', 'driver/native', 'qmp'],
};

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) return n === 'web' ? [] : sources(p); // dashboard/web runs in the browser
    return p.endsWith('.ts') ? [p] : [];
  });
}

/** Relative import specifiers of a file: static, type-only, re-exports and dynamic imports. */
function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g)].map((m) => m[1]!);
}

test('every import in src/ stays inside the layers the house allows', () => {
  const crossings: string[] = [];
  let checked = 0;
  for (const file of sources(SRC)) {
    const from = layer(file);
    const allowed = ALLOWED[from];
    assert.ok(allowed, `${relative(ROOT, file)}: layer '${from}' is not in the table; say what it may import`);
    for (const spec of imports(file)) {
      const target = normalize(join(dirname(file), spec)).replace(/\.js$/, '.ts');
      const to = layer(target);
      checked++;
      if (to !== from && !allowed.includes(to)) crossings.push(`${relative(ROOT, file)} (${from}) imports ${spec} (${to})`);
    }
  }
  assert.ok(checked > 300, `read ${checked} imports`);
  assert.deepEqual(crossings, [], 'imports across the layers');
});

test('the checker itself sees a crossing (a front end importing a driver part)', () => {
  const from = layer(join(SRC, 'cli', 'x.ts'));
  const to = layer(join(SRC, 'driver', 'native', 'driver.ts'));
  assert.equal(from, 'cli');
  assert.equal(to, 'driver/native');
  assert.ok(!ALLOWED[from]!.includes(to));
  assert.equal(layer(join(SRC, 'driver', 'api.ts')), 'driver-face');
});
