import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, writeFile, appendFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { loadMigrations, migrate, MIGRATIONS_DIR, appliedVersion } from '../src/db/migrate.ts';
import { createDb } from '../src/db/pool.ts';
import { describeSchema } from '../src/db/schema-snapshot.ts';
import { SNAPSHOT_FILE } from '../src/db/snapshot-file.ts';
import { createLogger } from '../src/observability/logger.ts';
import { emptyDatabase } from './helpers/db.ts';

const log = createLogger('silent');

describe('migrations', () => {
  test('two processes starting at once apply each file exactly once', async () => {
    const url = await emptyDatabase();
    const a = createDb(url, log);
    const b = createDb(url, log);
    try {
      const [ra, rb] = await Promise.all([migrate(a, log), migrate(b, log)]);
      const files = await loadMigrations();
      // One starter applied everything, the other found nothing to do.
      assert.deepEqual([...ra, ...rb].sort(), files.map((f) => f.name).sort());
      const rows = await a.query<{ version: number; n: number }>('SELECT version, count(*)::int AS n FROM clawplane_migrations GROUP BY version');
      assert.equal(rows.rowCount, files.length);
      assert.ok(rows.rows.every((r) => r.n === 1));
      assert.equal(await appliedVersion(a), files.length);
      // A third start is a no-op.
      assert.deepEqual(await migrate(a, log), []);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('an applied migration that was edited is refused: migrations are append-only', async () => {
    const url = await emptyDatabase();
    const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-mig-'));
    await cp(MIGRATIONS_DIR, dir, { recursive: true });
    const db = createDb(url, log);
    try {
      await migrate(db, log, dir);
      const first = (await loadMigrations(dir))[0];
      assert.ok(first);
      await appendFile(path.join(dir, first.name), '\n-- edited\n');
      await assert.rejects(migrate(db, log, dir), /was changed after it was applied\. Migrations are append-only/);
    } finally {
      await db.close();
    }
  });

  test('a failing migration rolls back and names the file', async () => {
    const url = await emptyDatabase();
    const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-mig-'));
    await cp(MIGRATIONS_DIR, dir, { recursive: true });
    const next = String((await loadMigrations(dir)).length + 1).padStart(4, '0');
    await writeFile(path.join(dir, `${next}_broken.sql`), 'CREATE TABLE half_done (x int);\nSELECT no_such_function();\n');
    const db = createDb(url, log);
    try {
      await assert.rejects(migrate(db, log, dir), new RegExp(`${next}_broken\\.sql failed`));
      const t = await db.query(`SELECT to_regclass('half_done') AS t`);
      assert.equal(t.rows[0]?.t, null, 'the failed migration left no partial table');
    } finally {
      await db.close();
    }
  });

  test('the migrated schema matches the committed snapshot (schema drift check)', async () => {
    const url = await emptyDatabase();
    const db = createDb(url, log);
    try {
      await migrate(db, log);
      const have = await describeSchema(db);
      if (process.env['UPDATE_SCHEMA_SNAPSHOT'] === '1') await writeFile(SNAPSHOT_FILE, have);
      const want = await readFile(SNAPSHOT_FILE, 'utf8');
      assert.equal(have, want, 'src/db/schema.snapshot.txt is stale: run UPDATE_SCHEMA_SNAPSHOT=1 npm test -- test/migrations.test.ts');
      // And drift is detected: a hand-made change to the live schema shows up.
      await db.query('ALTER TABLE audit_events ADD COLUMN sneaky text');
      assert.notEqual(await describeSchema(db), want);
    } finally {
      await db.close();
    }
  });
});
