import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { ClawplaneError } from '../errors.ts';
import type { Db } from './pool.ts';

export const MIGRATIONS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'migrations');

// Any constant works; all Clawplane processes sharing a database must agree on it.
const MIGRATION_LOCK_KEY = 0x636c6177; // "claw"

export interface MigrationFile {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

export class MigrationError extends ClawplaneError {
  constructor(message: string) {
    super('migration_failed', 500, message);
  }
}

/** The numbered `.sql` files, in order; refuses gaps, duplicates and badly named files. */
export async function loadMigrations(dir = MIGRATIONS_DIR): Promise<MigrationFile[]> {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.sql')).sort();
  const files: MigrationFile[] = [];
  for (const [i, name] of names.entries()) {
    const m = /^(\d{4})_[a-z0-9_]+\.sql$/.exec(name);
    if (!m) throw new MigrationError(`Migration file ${name} must be named NNNN_words.sql`);
    const version = Number(m[1]);
    if (version !== i + 1) throw new MigrationError(`Migration ${name} is out of sequence: expected ${String(i + 1).padStart(4, '0')}_…`);
    const sql = await readFile(path.join(dir, name), 'utf8');
    files.push({ version, name, sql, checksum: createHash('sha256').update(sql).digest('hex') });
  }
  return files;
}

/**
 * Applies pending migrations under a session advisory lock, so several processes starting at once
 * apply each file exactly once (issue 2). Applied files must be unchanged: migrations are append-only.
 */
export async function migrate(db: Db, log: Logger, dir = MIGRATIONS_DIR): Promise<string[]> {
  const files = await loadMigrations(dir);
  const client = await db.pool.connect();
  const applied: string[] = [];
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    await client.query(`CREATE TABLE IF NOT EXISTS clawplane_migrations (
      version    integer PRIMARY KEY,
      name       text NOT NULL,
      checksum   text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now())`);
    const done = await client.query<{ version: number; name: string; checksum: string }>(
      'SELECT version, name, checksum FROM clawplane_migrations ORDER BY version',
    );
    for (const row of done.rows) {
      const file = files[row.version - 1];
      if (!file) {
        throw new MigrationError(
          `The database has migration ${row.name}, which this Clawplane does not know. Run a Clawplane at least as new as the one that migrated it.`,
        );
      }
      if (file.checksum !== row.checksum) {
        throw new MigrationError(`Migration ${file.name} was changed after it was applied. Migrations are append-only: restore the file and add a new one.`);
      }
    }
    for (const file of files.slice(done.rows.length)) {
      const t = Date.now();
      await client.query('BEGIN');
      try {
        await client.query(file.sql);
        await client.query('INSERT INTO clawplane_migrations (version, name, checksum) VALUES ($1, $2, $3)', [file.version, file.name, file.checksum]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK');
        throw new MigrationError(`Migration ${file.name} failed: ${(err as Error).message}`);
      }
      applied.push(file.name);
      log.info({ migration: file.name, ms: Date.now() - t }, 'applied migration');
    }
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]).catch(() => undefined);
    client.release();
  }
  return applied;
}

/** Latest migration version applied to the database, or 0 when none (also when the table is missing). */
export async function appliedVersion(db: Pick<Db, 'query'>): Promise<number> {
  const t = await db.query<{ t: string | null }>(`SELECT to_regclass('clawplane_migrations')::text AS t`);
  if (!t.rows[0]?.t) return 0;
  const r = await db.query<{ v: number }>('SELECT coalesce(max(version), 0) AS v FROM clawplane_migrations');
  return r.rows[0]?.v ?? 0;
}
