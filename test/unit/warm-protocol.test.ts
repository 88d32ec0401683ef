import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  decodeWarmFrames, encodeWarmFrame, encodeWarmRequest, parseWarmRequest, warmRerunnable, warmServes, WarmProtocolError, WARM_ENV_KEYS,
  type WarmRequest,
} from '../../src/cli/warm-protocol.js';

const env = (over: Record<string, string | undefined> = {}): Map<string, string | undefined> =>
  new Map(WARM_ENV_KEYS.map((k) => [k, k in over ? over[k] : (k === 'HOME' ? '/root' : undefined)]));
const own = { HOME: '/root' } as NodeJS.ProcessEnv;

const REQ: WarmRequest = { isTty: true, env: env({ VIRTMEM_STATE_DIR: '/tmp/vm-é', XDG_CACHE_HOME: '' }), argv: ['--state-dir', '/x', 'setmem', 'vm', '768M', '', 'ünï'] };

describe('warm request', () => {
  it('round-trips, and is incomplete (null) at every earlier byte boundary', () => {
    const bytes = encodeWarmRequest(REQ);
    for (let i = 0; i < bytes.length; i++) assert.equal(parseWarmRequest(bytes.subarray(0, i)), null, `prefix ${i}`);
    assert.deepEqual(parseWarmRequest(bytes), REQ);
  });
  it('keeps unset and empty variables apart', () => {
    const r = parseWarmRequest(encodeWarmRequest(REQ))!;
    assert.equal(r.env.get('XDG_CACHE_HOME'), '');
    assert.equal(r.env.has('XDG_STATE_HOME'), true);
    assert.equal(r.env.get('XDG_STATE_HOME'), undefined);
  });
  it('refuses garbage at once, bad counts, bad env entries and trailing bytes', () => {
    assert.throws(() => parseWarmRequest(Buffer.from('GET / HTTP/1.1')), WarmProtocolError);
    assert.throws(() => parseWarmRequest(Buffer.from('virtmem-warm 2\x002\x00')), /tty flag/);
    assert.throws(() => parseWarmRequest(Buffer.from('virtmem-warm 2\x000\x00x\x00')), /env count/);
    assert.throws(() => parseWarmRequest(Buffer.from('virtmem-warm 2\x000\x001\x00lower=1\x00')), /env entry/);
    assert.throws(() => parseWarmRequest(Buffer.concat([encodeWarmRequest(REQ), Buffer.from('x')])), /trailing/);
  });
});

describe('warm frames', () => {
  it('decode what was encoded, split anywhere', () => {
    const frames = [encodeWarmFrame('1', 'out é\n'), encodeWarmFrame('2', ''), encodeWarmFrame('2', 'error: x\n'), encodeWarmFrame('x', Buffer.from([1]))];
    const all = Buffer.concat(frames);
    for (let i = 0; i <= all.length; i++) {
      const a = decodeWarmFrames(all.subarray(0, i));
      const b = decodeWarmFrames(Buffer.concat([a.rest, all.subarray(i)]));
      const got = [...a.frames, ...b.frames].map((f) => [f.type, f.payload.toString('utf8')]);
      assert.deepEqual(got, [['1', 'out é\n'], ['2', ''], ['2', 'error: x\n'], ['x', '\x01']]);
      assert.equal(b.rest.length, 0);
    }
  });
});

describe('what the warm process serves', () => {
  it('quick commands, with absolute state directories', () => {
    for (const argv of [['list', '--all'], ['dominfo', 'vm'], ['--state-dir', '/s', 'setmem', 'vm', '1G'], ['-c', 'qemu:///system', 'dommemstat', 'vm'], [], ['--version']]) {
      assert.equal(warmServes(argv, env(), own), true, argv.join(' '));
    }
  });
  it('not commands that read caller-relative files, start processes or wait on a guest', () => {
    for (const argv of [['define', 'vm.xml'], ['new', 'vm', '--kernel', 'k'], ['start', 'vm'], ['shutdown', 'vm'], ['setmem', 'vm', '1G', '--wait'],
      ['setmem', 'vm', '1G', '--wait', '--timeout=5'], ['guest-build'], ['demo'], ['--state-dir', 'rel', 'list'], ['--state-dir'], ['nosuchcommand']]) {
      assert.equal(warmServes(argv, env(), own), false, argv.join(' '));
    }
  });
  it('not a caller whose environment differs from the warm process', () => {
    assert.equal(warmServes(['list'], env({ HOME: '/home/x' }), own), false);
    assert.equal(warmServes(['list'], env({ VIRTMEM_STATE_DIR: '/s' }), own), false);
    assert.equal(warmServes(['list'], env({ VIRTMEM_STATE_DIR: 'rel' }), { ...own, VIRTMEM_STATE_DIR: 'rel' }), false);
    assert.equal(warmServes(['list'], env({ VIRTMEM_STATE_DIR: '/s' }), { ...own, VIRTMEM_STATE_DIR: '/s' }), true);
  });
});

describe('what may run again after the warm process died (before any output)', () => {
  it('commands that only read, or set an absolute value', () => {
    for (const argv of [['list', '--all'], ['dominfo', 'vm'], ['--state-dir', '/s', 'domstate', 'vm'], ['dumpxml', 'vm'], ['dommemstat', 'vm', '--live'], [], ['help'],
      ['setmem', 'vm', '1G'], ['setmaxmem', 'vm', '2G', '--config'], ['dommemstat', 'vm', '--period', '2'], ['dommemstat', 'vm', '--period=2']]) {
      assert.equal(warmRerunnable(argv), true, argv.join(' '));
    }
  });
  it('not a change a second run would not repeat the same way, nor a monitor command', () => {
    for (const argv of [['undefine', 'vm'], ['destroy', 'vm'],
      ['qemu-monitor-command', 'vm', '{"execute":"query-status"}'],
      ['--state-dir', 'rel', 'list'], ['nosuchcommand']]) {
      assert.equal(warmRerunnable(argv), false, argv.join(' '));
    }
  });
});
