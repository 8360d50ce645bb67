/**
 * `npm run bench -- <name>`: runs bench/<name>.ts (not a timed test; prints its own table).
 * Names: broker, policy, boot, tasks, ingress, tenants, tracing, replicas (every bench/<name>.ts that exports main).
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { runBenchCleanups } from '../test/helpers/after-all.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const names = (await readdir(here)).filter((f) => f.endsWith('.ts') && f !== 'run.ts').map((f) => f.slice(0, -3));
const name = process.argv[2];
if (!name || !names.includes(name)) {
  console.error(`usage: npm run bench -- <${names.join('|')}>`);
  process.exit(2);
}
// Test helpers a bench uses clean up when its main returns, not through node:test (test/helpers/after-all.ts).
process.env['CLAWPLANE_BENCH'] = '1';
const mod = (await import(pathToFileURL(path.join(here, `${name}.ts`)).href)) as { main?: (args: string[]) => Promise<void> };
if (typeof mod.main !== 'function') {
  console.error(`bench/${name}.ts is a helper of other benches, not a bench of its own`);
  process.exit(2);
}
try {
  await mod.main(process.argv.slice(3));
} finally {
  await runBenchCleanups();
}
