/**
 * `npm test`: type check, lint, then the whole suite against a real PostgreSQL (issue 2).
 * One server per run: TEST_DATABASE_URL (a role that may CREATE DATABASE) or an embedded PostgreSQL in a
 * temporary directory. A template database is migrated once; each test file clones its own from it.
 * `npm test -- test/foo.test.ts` runs only the named files and skips the static checks.
 */
import { spawnSync, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DBOS } from '@dbos-inc/dbos-sdk';
import pg from 'pg';
import { EmbeddedDatabase } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { createDb } from '../src/db/pool.ts';
import { createLogger } from '../src/observability/logger.ts';
import { longestFirst } from './test-order.ts';

const root = path.resolve(import.meta.dirname, '..');
const bin = (name: string) => path.join(root, 'node_modules', '.bin', name);
const files = process.argv.slice(2);
const TIMES = path.join(root, 'test', 'file-times.json');
const log = createLogger('warn');

function step(name: string, cmd: string, args: string[]): void {
  const t = Date.now();
  process.stdout.write(`# ${name}\n`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root });
  if (r.status !== 0) {
    process.stdout.write(`# ${name} failed\n`);
    process.exit(r.status ?? 1);
  }
  process.stdout.write(`# ${name} ok (${((Date.now() - t) / 1000).toFixed(1)} s)\n`);
}

/** Runs the steps at once; prints each one's output whole when it ends, and stops the run if any failed. */
async function together(steps: [name: string, cmd: string, args: string[]][]): Promise<void> {
  const t = Date.now();
  const results = await Promise.all(
    steps.map(
      ([name, cmd, args]) =>
        new Promise<{ name: string; code: number; out: string; s: string }>((resolve) => {
          const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
          let out = '';
          child.stdout.on('data', (c: Buffer) => (out += c.toString()));
          child.stderr.on('data', (c: Buffer) => (out += c.toString()));
          child.on('error', (err) => (out += `${err.message}\n`));
          child.on('close', (code) => resolve({ name, code: code ?? 1, out, s: ((Date.now() - t) / 1000).toFixed(1) }));
        }),
    ),
  );
  for (const r of results) {
    process.stdout.write(`# ${r.name}\n${r.out}`);
    process.stdout.write(r.code === 0 ? `# ${r.name} ok (${r.s} s)\n` : `# ${r.name} failed\n`);
  }
  const failed = results.find((r) => r.code !== 0);
  if (failed) process.exit(failed.code);
}

// First, within seconds: what the suite needs from the system, installed here when root with apt, else
// the command that installs it (the files that need a missing package then fail at once, saying so).
const system = spawnSync('bash', [path.join(root, 'scripts', 'setup-system.sh'), 'test'], { stdio: 'inherit', cwd: root });
if (system.status !== 0) process.stdout.write('# system packages missing (above): the test files that need them fail at once\n');

if (files.length === 0) {
  // The static checks are independent: side by side they take the longest one's
  // time rather than the sum (the suite has a time budget).
  await together([
    ['typecheck (tsc --noEmit)', bin('tsc'), ['--noEmit', '-p', root]],
    ['typecheck web console (tsc -p web)', bin('tsc'), ['--noEmit', '-p', path.join(root, 'web')]],
    ['lint (eslint)', bin('eslint'), ['--max-warnings=0', '.']],
    // Formatting (biome.json); `npm run format` rewrites what this refuses.
    ['format (biome format)', bin('biome'), ['format', '.']],
  ]);
}
// The browser tests (test/web.test.ts) drive the built console: build it when web/ changed.
step('web console (build if stale)', process.execPath, [path.join(root, 'scripts', 'build-web.ts'), '--if-stale']);

let embedded: EmbeddedDatabase | undefined;
let tmp: string | undefined;
let adminUrl = process.env['TEST_DATABASE_URL'];
if (!adminUrl) {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'clawplane-test-'));
  embedded = new EmbeddedDatabase({
    dataDir: tmp,
    port: 0,
    log,
    ...(process.env['CLAWPLANE_SHARED_DIR'] ? { sharedDir: process.env['CLAWPLANE_SHARED_DIR'] } : {}),
  });
  adminUrl = await embedded.start('postgres');
}
const template = `clawplane_template_${process.pid}`;
const admin = new pg.Client({ connectionString: adminUrl });
await admin.connect();
const server = (await admin.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version;
process.stdout.write(`# PostgreSQL ${server} (${embedded ? 'embedded' : 'TEST_DATABASE_URL'})\n`);
await admin.query(`DROP DATABASE IF EXISTS ${template}`);
await admin.query(`CREATE DATABASE ${template}`);
const templateUrl = withDatabase(adminUrl, template);
const db = createDb(templateUrl, log, { max: 2 });
await migrate(db, log);
await db.close();
await DBOS.migrate(templateUrl, { schemaName: 'dbos' });

let code = 1;
let runner: ReturnType<typeof spawn> | undefined;
// A run stopped from outside (a CI time limit, Ctrl-C) still stops its test runner and its PostgreSQL:
// an orphaned server would hold memory and a port on the machine for every later run.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    runner?.kill(sig);
    void (async () => {
      await admin.end().catch(() => undefined);
      await embedded?.stop({ force: true }).catch(() => undefined);
      if (tmp) await rm(tmp, { recursive: true, force: true });
      process.exit(130);
    })();
  });
}
try {
  code = await new Promise<number>((resolve) => {
    const reporters = [
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      `--test-reporter=${path.join(root, 'scripts', 'test-file-times.ts')}`,
      '--test-reporter-destination=stdout',
    ];
    const args = ['--test', '--test-concurrency=2', '--test-timeout=600000', ...reporters, ...(files.length ? files : longestFirst(root, TIMES))];
    const child = (runner = spawn(process.execPath, args, {
      cwd: root,
      stdio: 'inherit',
      env: {
        ...process.env,
        CLAWPLANE_TEST_ADMIN_URL: adminUrl,
        CLAWPLANE_TEST_TEMPLATE: template,
        ...(process.env['UPDATE_TEST_TIMES'] && files.length === 0 ? { CLAWPLANE_TEST_TIMES_FILE: TIMES } : {}),
      },
    }));
    child.on('close', (c) => resolve(c ?? 1));
  });
} finally {
  await admin.query(`DROP DATABASE IF EXISTS ${template} WITH (FORCE)`).catch(() => undefined);
  await admin.end();
  await embedded?.stop({ force: true });
  if (tmp) await rm(tmp, { recursive: true, force: true });
}
process.exit(code);

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}
