import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseArgs, UsageError } from '../../src/cli/args.js';

const setmem = { positionals: ['domain', 'size'], required: 2, flags: ['live', 'config', 'current'], options: ['timeout'] };
const qmc = { positionals: ['domain', 'command...'], required: 2, flags: ['hmp', 'pretty'], restMarkers: ['cmd'] };

test('positionals in order, flags anywhere', () => {
  const a = parseArgs(['--live', 'vm1', '2G', '--config'], setmem, 'setmem');
  assert.deepEqual(a.positional, { domain: 'vm1', size: '2G' });
  assert.ok(a.flags.has('live') && a.flags.has('config'));
});

test('positionals may be named, as virsh allows (--domain X --size Y, --size=Y)', () => {
  const a = parseArgs(['--size=512M', '--domain', 'vm1'], setmem, 'setmem');
  assert.deepEqual(a.positional, { domain: 'vm1', size: '512M' });
});

test('value options and --json', () => {
  const a = parseArgs(['vm1', '1G', '--timeout', '30', '--json'], setmem, 'setmem');
  assert.equal(a.options.get('timeout'), '30');
  assert.ok(a.flags.has('json'));
});

test('a value option given twice is refused as virsh does, not silently replaced', () => {
  assert.throws(() => parseArgs(['vm1', '1G', '--timeout', '30', '--timeout=60'], setmem, 'setmem'), /^UsageError: option --timeout already seen$/);
  assert.throws(() => parseArgs(['--domain', 'vm1', '--domain', 'vm2', '1G'], setmem, 'setmem'), /option --domain already seen/);
});

test('virsh spelling: qemu-monitor-command DOM --hmp --cmd info balloon', () => {
  const a = parseArgs(['vm1', '--hmp', '--cmd', 'info', 'balloon'], qmc, 'qemu-monitor-command');
  assert.equal(a.positional.domain, 'vm1');
  assert.deepEqual(a.rest, ['info', 'balloon']);
  assert.ok(a.flags.has('hmp'));
});

test('words after --cmd are the command even if they look like options', () => {
  const a = parseArgs(['vm1', '--cmd', 'info', '--pretty'], qmc, 'qemu-monitor-command');
  assert.deepEqual(a.rest, ['info', '--pretty']);
});

test('errors name the problem', () => {
  assert.throws(() => parseArgs(['vm1'], setmem, 'setmem'), (e: unknown) => e instanceof UsageError && /requires <size>/.test(e.message));
  assert.throws(() => parseArgs(['vm1', '1G', '--bogus'], setmem, 'setmem'), /doesn't support option --bogus/);
  assert.throws(() => parseArgs(['vm1', '1G', 'extra'], setmem, 'setmem'), /unexpected data 'extra'/);
  assert.throws(() => parseArgs(['vm1', '1G', '--timeout'], setmem, 'setmem'), /--timeout/);
  assert.throws(() => parseArgs(['vm1', '1G', '--live=yes'], setmem, 'setmem'), /takes no value/);
});

test('-- ends options: a size may start with a dash and is then rejected by the size parser, not here', () => {
  const a = parseArgs(['vm1', '--', '-1'], setmem, 'setmem');
  assert.equal(a.positional.size, '-1');
});
