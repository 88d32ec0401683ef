/** `virtmem new` memory options: --hugepages, --locked, --numa-cells, --hard-limit, --soft-limit. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseArgs, UsageError } from '../../src/cli/args.js';
import { EXTRA_COMMANDS, definitionFromOptions } from '../../src/cli/extra-commands.js';
import { validateDomainDef } from '../../src/domain/validate-def.js';

const NEW = EXTRA_COMMANDS.find((c) => c.name === 'new')!;
const def = (...words: string[]) => validateDomainDef(definitionFromOptions(parseArgs(['g', ...words], NEW, 'new')));

test('--hugepages and --locked back all RAM with huge pages, locked', () => {
  assert.deepEqual(def('--memory', '512M', '--hugepages', '2M', '--locked').memoryBacking, { hugepages: [{ sizeKiB: 2048 }], locked: true });
  assert.equal(def().memoryBacking, undefined);
});

test('--numa-cells splits vCPUs and boot RAM evenly, the rest of the RAM to the last cell', () => {
  assert.deepEqual(def('--memory', '513M', '--vcpus', '3', '--numa-cells', '2').numa, {
    cells: [{ cpus: [0, 1], memoryKiB: 256 * 1024 }, { cpus: [2], memoryKiB: 257 * 1024 }],
  });
  const hot = def('--memory', '512M', '--max-memory', '1G', '--vcpus', '2', '--numa-cells', '2');
  assert.deepEqual(hot.numa?.cells.map((c) => c.memoryKiB), [256 * 1024, 256 * 1024], 'cells hold boot RAM; virtio-mem is on top');
  for (const bad of ['0', '3', 'x']) {
    assert.throws(() => def('--vcpus', '2', '--numa-cells', bad), (e: unknown) => e instanceof UsageError && /--numa-cells/.test(e.message), bad);
  }
});

test('--hard-limit and --soft-limit set memtune', () => {
  assert.deepEqual(def('--hard-limit', '1G', '--soft-limit', '768M').memtune, { hardLimitKiB: 1024 * 1024, softLimitKiB: 768 * 1024 });
});
