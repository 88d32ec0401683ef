/**
 * The dashboard's static files: the page, its stylesheet, its compiled scripts and uPlot, read
 * once into memory and served by whichever HTTP server mounts them (the daemon, at `/` and
 * `/dashboard/*`). Knows nothing of domains: the page talks to the daemon's JSON API itself.
 */
import { readdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { IncomingMessage, ServerResponse } from 'node:http';

/** One file as it is sent. */
export interface DashboardAsset {
  contentType: string;
  body: Buffer;
}

/** URL path -> file. */
export type DashboardAssets = ReadonlyMap<string, DashboardAsset>;

/** The URL prefix every file but the page itself lives under. */
export const DASHBOARD_PREFIX = '/dashboard/';

/** Error raised when the dashboard's files are missing (e.g. `npm run build` was not run). */
export class DashboardAssetsError extends Error {
  readonly code = 'DASHBOARD_ASSETS_MISSING';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DashboardAssetsError';
  }
}

// dist/src/dashboard/assets.js -> the compiled scripts sit next to it in web/; the page and its
// stylesheet are not compiled and stay in src/dashboard/web/ of the package root.
const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..', '..', '..');

const HTML = 'text/html; charset=utf-8';
const CSS = 'text/css; charset=utf-8';
const JS = 'text/javascript; charset=utf-8';

/**
 * Reads every file of the dashboard.
 * @throws DashboardAssetsError naming the first file that cannot be read.
 */
export async function loadDashboardAssets(): Promise<DashboardAssets> {
  const require = createRequire(import.meta.url);
  const uplotDir = dirname(require.resolve('uplot/dist/uPlot.iife.min.js'));
  // The scripts compiled by `tsc -p src/dashboard/web/tsconfig.json`, served under /dashboard/.
  const webDir = join(HERE, 'web');
  const scripts = (await readdir(webDir).catch((err: unknown) => {
    throw new DashboardAssetsError(`dashboard scripts missing in ${webDir} (run \`npm run build\`): ${(err as Error).message}`, { cause: err });
  })).filter((f) => f.endsWith('.js')).sort();
  if (!scripts.includes('app.js')) throw new DashboardAssetsError(`dashboard script ${join(webDir, 'app.js')} missing (run \`npm run build\`)`);
  const files: Array<[urlPath: string, file: string, contentType: string]> = [
    [DASHBOARD_PREFIX + 'index.html', join(ROOT, 'src', 'dashboard', 'web', 'index.html'), HTML],
    [DASHBOARD_PREFIX + 'style.css', join(ROOT, 'src', 'dashboard', 'web', 'style.css'), CSS],
    [DASHBOARD_PREFIX + 'vendor/uPlot.iife.min.js', join(uplotDir, 'uPlot.iife.min.js'), JS],
    [DASHBOARD_PREFIX + 'vendor/uPlot.min.css', join(uplotDir, 'uPlot.min.css'), CSS],
    ...scripts.map((s): [string, string, string] => [DASHBOARD_PREFIX + s, join(webDir, s), JS]),
  ];
  const out = new Map<string, DashboardAsset>();
  for (const [urlPath, file, contentType] of files) {
    let body: Buffer;
    try {
      body = await readFile(file);
    } catch (err) {
      throw new DashboardAssetsError(`dashboard file ${file} cannot be read (run \`npm run build\`): ${(err as Error).message}`, { cause: err });
    }
    out.set(urlPath, { contentType, body });
  }
  const page = out.get(DASHBOARD_PREFIX + 'index.html')!;
  out.set('/', page);
  out.set('/dashboard', page);
  out.set(DASHBOARD_PREFIX, page);
  return out;
}

/** Whether a request path belongs to the dashboard (the router sends these here). */
export function isDashboardPath(pathname: string): boolean {
  return pathname === '/' || pathname === '/dashboard' || pathname.startsWith(DASHBOARD_PREFIX);
}

/**
 * Security headers for every dashboard response: scripts and styles only from this origin
 * (uPlot sets inline style properties through the CSSOM, which `style-src 'self'` allows),
 * no framing, no sniffing.
 */
const HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
};

/**
 * Answers a dashboard request (GET or HEAD) from `assets`. Returns false, having written nothing,
 * when the path is not one of the dashboard's files, so the caller can answer 404 in its own
 * format; answers 405 itself for other methods on a dashboard file.
 */
export function serveDashboard(assets: DashboardAssets, req: IncomingMessage, res: ServerResponse, pathname: string): boolean {
  const asset = assets.get(pathname);
  if (!asset) return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
    res.end('method not allowed\n');
    return true;
  }
  res.writeHead(200, { ...HEADERS, 'content-type': asset.contentType, 'content-length': String(asset.body.length) });
  res.end(req.method === 'HEAD' ? undefined : asset.body);
  return true;
}
