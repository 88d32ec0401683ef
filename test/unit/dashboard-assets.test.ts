/** The dashboard's static files as a server mounting them answers them (real in-process server on port 0). */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadDashboardAssets, serveDashboard, isDashboardPath } from '../../src/dashboard/assets.js';

let server: Server;
let base = '';
before(async () => {
  const assets = await loadDashboardAssets();
  server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (isDashboardPath(path) && serveDashboard(assets, req, res, path)) return;
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"NOT_FOUND"}}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => new Promise<void>((r) => server.close(() => r())));

test('/ is the page, with a policy that allows only this origin', async () => {
  const res = await fetch(base + '/');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
  assert.match(res.headers.get('content-security-policy') ?? '', /script-src 'self';/);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  const html = await res.text();
  assert.match(html, /<title>virtmem dashboard<\/title>/);
  assert.doesNotMatch(html, /https?:\/\//, 'nothing is loaded from elsewhere');
  assert.equal(await (await fetch(base + '/dashboard/')).text(), html);
});

test('every file the page refers to is served with its type', async () => {
  const html = await (await fetch(base + '/')).text();
  const refs = [...html.matchAll(/(?:src|href)="(\/dashboard\/[^"]+)"/g)].map((m) => m[1]!);
  assert.ok(refs.length >= 4, refs.join(' '));
  for (const ref of refs) {
    const res = await fetch(base + ref);
    assert.equal(res.status, 200, ref);
    assert.match(res.headers.get('content-type') ?? '', ref.endsWith('.css') ? /^text\/css/ : /^text\/javascript/, ref);
    assert.ok((await res.arrayBuffer()).byteLength > 0, ref);
  }
  // The modules app.js imports are there too.
  const app = await (await fetch(base + '/dashboard/app.js')).text();
  for (const m of app.matchAll(/from '\.\/([a-z-]+\.js)'/g)) assert.equal((await fetch(`${base}/dashboard/${m[1]}`)).status, 200, m[1]);
});

test('other paths are left to the server; other methods are refused', async () => {
  assert.equal((await fetch(base + '/dashboard/nope.js')).status, 404);
  assert.equal((await fetch(base + '/dashboard/../package.json')).status, 404);
  assert.equal(isDashboardPath('/api/v1/domains'), false);
  const res = await fetch(base + '/', { method: 'POST', body: 'x' });
  assert.equal(res.status, 405);
  assert.equal(res.headers.get('allow'), 'GET, HEAD');
  const head = await fetch(base + '/dashboard/style.css', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.ok(Number(head.headers.get('content-length')) > 0);
});
