import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { API_TYPES_FILE, apiTypes } from '../scripts/gen-api-types.ts';

test("the console's API types are generated from the server's current OpenAPI document", async () => {
  const committed = await readFile(API_TYPES_FILE, 'utf8');
  // Not assert.equal: a 10 000-line diff would bury the one thing to do.
  assert.ok(committed === (await apiTypes()), 'web/src/api.gen.ts is stale: run `npm run gen:api`');
});
