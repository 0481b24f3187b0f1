// The hand-written .d.ts files type-check (strict, skipLibCheck off) and fit real pg
// and postgres.js instances and a Next route handler's signature (test/types/usage.ts).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

test('tsc accepts the types and their use', () => {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const project = fileURLToPath(new URL('./types/tsconfig.json', import.meta.url));
  const done = spawnSync(process.execPath, [tsc, '-p', project], { encoding: 'utf8' });
  assert.equal(done.status, 0, `${done.stdout}${done.stderr}`);
});
