import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { configTable } from '../scripts/config-table.ts';

test('the README documents every setting exactly as the schema defines it', async () => {
  const readme = await readFile(path.resolve(import.meta.dirname, '../README.md'), 'utf8');
  assert.ok(readme.includes(configTable()), 'README.md is stale: paste the output of `node scripts/config-table.ts` into its Configuration section');
});
