import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { configTable } from '../scripts/config-table.ts';
import { errorTable } from '../scripts/error-table.ts';
import { ERROR_CODES } from '../src/errors.ts';

test('the README documents every setting exactly as the schema defines it', async () => {
  const readme = await readFile(path.resolve(import.meta.dirname, '../README.md'), 'utf8');
  assert.ok(readme.includes(configTable()), 'README.md is stale: paste the output of `node scripts/config-table.ts` into its Configuration section');
});

test('docs/errors.md lists every error code exactly as src/errors.ts defines it, and every listed code is used', async () => {
  const doc = await readFile(path.resolve(import.meta.dirname, '../docs/errors.md'), 'utf8');
  assert.equal(doc, errorTable(), 'docs/errors.md is stale: run `node scripts/error-table.ts > docs/errors.md`');
  // A listed code no code path answers with is a promise nobody keeps: find each outside the list itself.
  const src = path.resolve(import.meta.dirname, '../src');
  let text = '';
  for (const f of await readdir(src, { recursive: true })) if (f.endsWith('.ts')) text += await readFile(path.join(src, f), 'utf8');
  text = text.replace(/export const ERROR_CODES = \{[\s\S]*?\} as const/, '');
  const unused = Object.keys(ERROR_CODES).filter((code) => !text.includes(`'${code}'`));
  assert.deepEqual(unused, [], 'codes listed in src/errors.ts that nothing answers with: remove them');
});
