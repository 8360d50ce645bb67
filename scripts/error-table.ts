/**
 * Prints docs/errors.md from the one list of error codes (src/errors.ts ERROR_CODES), so the docs cannot drift
 * from the code: test/docs.test.ts checks that docs/errors.md holds exactly this. `node scripts/error-table.ts >
 * docs/errors.md` rewrites it.
 */
import { ERROR_CODES } from '../src/errors.ts';

export function errorTable(): string {
  const rows = [
    '# Error codes',
    '',
    'Every error answer of the API is `{ "code", "message", "requestId", "details"? }` (the OpenAI-compatible routes wrap the',
    'same code in OpenAI\'s `{ "error": { "type", "code", "message", "param" } }`, see openai-compatible.md). The `code` is',
    'stable: clients branch on it; the message says what went wrong and what to do, and may change. The HTTP status is',
    "the route's (see /api/v1/docs). This file is generated from `src/errors.ts` by `node scripts/error-table.ts`.",
    '',
    '| code | meaning |',
    '|---|---|',
  ];
  for (const [code, meaning] of Object.entries(ERROR_CODES)) rows.push(`| \`${code}\` | ${meaning.replace(/\|/g, '\\|')} |`);
  return rows.join('\n') + '\n';
}

if (import.meta.main) process.stdout.write(errorTable());
