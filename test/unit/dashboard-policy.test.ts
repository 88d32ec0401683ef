/**
 * The dashboard's policy section, pure part: the policy document and the stream's `policy`
 * events to one view per guest, and that view to the card's lines.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { emptyPolicyView, mergePolicyView, policyLines, toPolicyView, withPolicyEvent, type PolicyView } from '../../src/dashboard/web/policy-model.js';
import { formatAgo } from '../../src/dashboard/web/format.js';
import { cardKey } from '../../src/dashboard/web/model.js';
import { assertConforms } from '../helpers/openapi.js';

const MiB = 1024 * 1024;
const AT = '2026-12-03T07:40:01.000Z';
const AT_MS = Date.parse(AT);
const REASON = '900 MiB available (idle or cache) > 2 x headroom: reclaim toward use 120 MiB + 1.5 x headroom';
/** The example of GET /domains/{name}/policy in docs/openapi.json, with the engine a running policy names. */
const DOC = {
  name: 'web1', mode: 'per-guest', engine: 'virtmem', settings: { enabled: true, floorBytes: 384 * MiB, ceilingBytes: 2048 * MiB, shares: 1000 },
  last: { at: AT, action: 'resize', fromBytes: 1024 * MiB, targetBytes: 768 * MiB, reason: REASON },
};

const loaded = (doc: unknown): PolicyView => {
  const v = toPolicyView(doc);
  assert.ok(v, 'the document is understood');
  return v;
};

test('the test documents are what the API promises', () => {
  assertConforms('GET', '/domains/{name}/policy', 200, DOC);
  assertConforms('GET', '/domains/{name}/policy', 200, { ...DOC, last: null });
});

test('a policy document -> the card says on, the bounds, what it did, when and why', () => {
  const v = loaded(DOC);
  assert.deepEqual(v, {
    name: 'web1', host: null,
    settings: { mode: 'per-guest', engine: 'virtmem', enabled: true, floorBytes: 384 * MiB, ceilingBytes: 2048 * MiB, shares: 1000 },
    last: { at: AT, atMs: AT_MS, action: 'resize', fromBytes: 1024 * MiB, targetBytes: 768 * MiB, reason: REASON },
  });
  assert.deepEqual(policyLines(v, AT_MS + 4_500), {
    state: 'on', status: 'on (per-guest, virtmem)', bounds: 'floor 384 MiB · ceiling 2.00 GiB',
    decision: 'resize 1.00 GiB → 768 MiB', ago: '4 s ago', reason: REASON,
  });
});

test('a document with last: null says there is no decision yet, not an empty one', () => {
  const v = loaded({ ...DOC, last: null });
  assert.equal(v.last, null);
  const l = policyLines(v, AT_MS);
  assert.equal(l.state, 'on');
  assert.equal(l.decision, 'no decision yet');
  assert.equal(l.ago, '');
  assert.equal(l.reason, '');
});

test('off in the daemon, off for the guest, and not loaded yet are three different lines', () => {
  const daemonOff = policyLines(loaded({ name: 'web1', mode: 'off', settings: { ...DOC.settings, enabled: true }, last: null }), 0);
  assert.equal(daemonOff.state, 'off', 'the guest asks for it, but the daemon runs no policy');
  assert.match(daemonOff.status, /daemon runs no policy/);
  const guestOff = policyLines(loaded({ ...DOC, settings: { ...DOC.settings, enabled: false } }), 0);
  assert.equal(guestOff.state, 'off');
  assert.equal(guestOff.status, 'off for this guest (virtmem policy set web1 --enable)');
  const pending = policyLines(emptyPolicyView('web1'), 0);
  assert.equal(pending.state, 'loading');
  assert.equal(pending.bounds, '');
});

test('documents the page cannot read are refused, not guessed at', () => {
  assert.equal(toPolicyView({ error: { code: 'NO_DOMAIN', message: 'no' } }), null);
  assert.equal(toPolicyView({ ...DOC, mode: 'sometimes' }), null);
  assert.equal(toPolicyView({ ...DOC, settings: { floorBytes: 1 } }), null);
  assert.equal(loaded({ ...DOC, last: { at: AT, action: 'shrug', reason: 'x' } }).last, null, 'an unknown action is no decision');
});

test('a policy event updates its guest: KiB become bytes, a hold has no sizes', () => {
  const views = new Map([['web1', loaded(DOC)]]);
  const later = '2026-12-03T07:40:09.000Z';
  const v = withPolicyEvent(views, { name: 'web1', at: later, action: 'resize', fromKiB: 786432, targetKiB: 307200, reason: 'reclaim toward use' });
  assert.ok(v);
  assert.deepEqual(v.last, { at: later, atMs: Date.parse(later), action: 'resize', fromBytes: 768 * MiB, targetBytes: 300 * MiB, reason: 'reclaim toward use' });
  assert.deepEqual(v.settings, views.get('web1')!.settings, 'the settings stay');
  const hold = withPolicyEvent(new Map([['web1', v]]), { name: 'web1', at: '2026-12-03T07:40:12.000Z', action: 'hold', reason: 'within band' });
  assert.ok(hold);
  assert.equal(policyLines(hold, Date.parse('2026-12-03T07:42:12.000Z')).decision, 'held');
  assert.equal(policyLines(hold, Date.parse('2026-12-03T07:42:12.000Z')).ago, '2 min ago');
});

test('an event for a guest the page does not show, or one it cannot read, changes nothing', () => {
  const views = new Map([['web1', loaded(DOC)]]);
  assert.equal(withPolicyEvent(views, { name: 'ghost', at: AT, action: 'resize', fromKiB: 1, targetKiB: 2, reason: 'r' }), null);
  assert.equal(withPolicyEvent(views, { name: 'web1', at: AT, action: 'shrug', reason: 'r' }), null);
  assert.equal(withPolicyEvent(views, { name: 'web1', action: 'hold', reason: 'r' }), null, 'no time');
  assert.equal(withPolicyEvent(views, null), null);
  assert.equal(withPolicyEvent(views, { at: AT, action: 'hold', reason: 'r' }), null, 'no name');
});

test('the newer decision wins, whichever came first: an event that overtook the document stays', () => {
  const eventAt = '2026-12-03T07:40:05.000Z';
  const fromEvent = withPolicyEvent(new Map([['web1', emptyPolicyView('web1')]]), { name: 'web1', at: eventAt, action: 'hold', reason: 'within band' });
  assert.ok(fromEvent);
  assert.equal(policyLines(fromEvent, AT_MS).state, 'loading', 'a decision before the document: still loading the settings');
  const merged = mergePolicyView(fromEvent, loaded(DOC));
  assert.equal(merged.last?.at, eventAt, 'the older decision in the document does not undo the event');
  assert.equal(merged.settings?.floorBytes, 384 * MiB);
  const stale = withPolicyEvent(new Map([['web1', merged]]), { name: 'web1', at: AT, action: 'resize', fromKiB: 1, targetKiB: 2, reason: 'old' });
  assert.equal(stale?.last?.at, eventAt);
  assert.equal(mergePolicyView(loaded({ ...DOC, last: null }), loaded(DOC)).last?.at, AT, 'a newer document brings its decision');
});

test('how long ago', () => {
  assert.equal(formatAgo(-3), 'just now', 'a browser clock ahead of the daemon');
  assert.equal(formatAgo(0.4), 'just now');
  assert.equal(formatAgo(59.9), '59 s ago');
  assert.equal(formatAgo(61), '1 min ago');
  assert.equal(formatAgo(7200), '2 h ago');
  assert.equal(formatAgo(3 * 86_400), '3 d ago');
  assert.equal(formatAgo(Number.NaN), 'just now');
});

test('a guest of a libvirt host: its policy events reach its card only, and the hint names its host', () => {
  const U = 'qemu:///system';
  const local = loaded(DOC);
  const remote = toPolicyView(DOC, U);
  assert.ok(remote);
  assert.equal(remote.host, U);
  const views = new Map([[cardKey(null, 'web1'), local], [cardKey(U, 'web1'), remote]]);
  const at = '2026-12-03T07:40:09.000Z';
  const there = withPolicyEvent(views, { name: 'web1', host: U, at, action: 'hold', reason: 'within band' });
  assert.equal(there?.host, U, 'the event names its host: the libvirt guest\'s card');
  assert.equal(withPolicyEvent(views, { name: 'web1', at, action: 'hold', reason: 'within band' })?.host, null, 'no host: virtmem\'s own guest');
  assert.equal(withPolicyEvent(views, { name: 'web1', host: 'test:///default', at, action: 'hold', reason: 'r' }), null, 'a host with no such card');
  assert.equal(mergePolicyView(emptyPolicyView('web1', U), loaded(DOC)).host, U, 'a loaded document keeps the card\'s host');
  const off = policyLines(toPolicyView({ ...DOC, settings: { ...DOC.settings, enabled: false } }, U)!, 0);
  assert.equal(off.status, `off for this guest (virtmem -c ${U} policy set web1 --enable)`);
});
