import { randomBytes } from 'node:crypto';
import { afterAll } from './after-all.ts';
import pg from 'pg';
import { createDb, type Db } from '../../src/db/pool.ts';
import { createLogger } from '../../src/observability/logger.ts';

/**
 * A database of this test file's own, cloned from the migrated template that `npm test` prepared on the
 * run's one real PostgreSQL (issue 2). Dropped when the file's tests finish.
 */
export interface TestDatabase {
  name: string;
  url: string;
  db: Db;
  adminUrl: string;
}

export function adminUrl(): string {
  const url = process.env['CLAWPLANE_TEST_ADMIN_URL'];
  if (!url) throw new Error('Run tests through "npm test": CLAWPLANE_TEST_ADMIN_URL is not set');
  return url;
}

export function urlFor(database: string): string {
  const u = new URL(adminUrl());
  u.pathname = `/${database}`;
  return u.toString();
}

export async function adminQuery(sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: adminUrl() });
  await c.connect();
  try {
    return await c.query(sql, params);
  } finally {
    await c.end();
  }
}

/** Creates an empty (unmigrated) database and drops it after the file's tests. */
export async function emptyDatabase(): Promise<string> {
  const name = `t_${randomBytes(6).toString('hex')}`;
  await adminQuery(`CREATE DATABASE ${name}`);
  afterAll(() => adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  return urlFor(name);
}

/**
 * `autoDrop: false` leaves the drop to the caller (`drop()`): a server using the database must stop
 * first, or its workflows would be cut off mid-flight (after hooks run in the order they are added).
 */
export async function testDatabase(opts: { autoDrop?: boolean } = {}): Promise<TestDatabase & { drop(): Promise<void> }> {
  const template = process.env['CLAWPLANE_TEST_TEMPLATE'];
  if (!template) throw new Error('Run tests through "npm test": CLAWPLANE_TEST_TEMPLATE is not set');
  const name = `t_${randomBytes(6).toString('hex')}`;
  await adminQuery(`CREATE DATABASE ${name} TEMPLATE ${template}`);
  const url = urlFor(name);
  const db = createDb(url, createLogger('silent'), { max: 20 });
  const drop = async () => {
    await db.close().catch(() => undefined);
    await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  };
  if (opts.autoDrop !== false) afterAll(drop);
  return { name, url, db, adminUrl: adminUrl(), drop };
}
