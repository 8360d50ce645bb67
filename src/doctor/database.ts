import type { Db } from '../db/pool.ts';
import { loadMigrations } from '../db/migrate.ts';
import { fail, ok, warn, type Finding } from './types.ts';

/** Reachable, and a supported major version (15 or newer). */
export async function checkDatabase(db: Db): Promise<Finding> {
  const r = await db.query<{ v: string; n: string }>('SELECT current_setting($1) AS v, current_setting($2) AS n', ['server_version', 'server_version_num']);
  const version = r.rows[0]?.v ?? '?';
  if (Number(r.rows[0]?.n ?? 0) < 150000) return fail(`PostgreSQL ${version} is older than 15`, 'upgrade PostgreSQL to 15 or newer (DATABASE_URL)');
  return ok(`PostgreSQL ${version}`);
}

/** Every migration file applied, none changed since, none unknown to this build. */
export async function checkMigrations(db: Db): Promise<Finding> {
  const files = await loadMigrations();
  const table = await db.query<{ t: string | null }>(`SELECT to_regclass('clawplane_migrations')::text AS t`);
  if (!table.rows[0]?.t) return fail('the database has never been migrated', 'clawplane migrate (clawplane serve also migrates at start)');
  const rows = (
    await db.query<{ version: number; name: string; checksum: string }>('SELECT version, name, checksum FROM clawplane_migrations ORDER BY version')
  ).rows;
  const unknown = rows.filter((r) => !files[r.version - 1]);
  if (unknown.length > 0)
    return fail(
      `the database has migration(s) this build does not know: ${unknown.map((r) => r.name).join(', ')}`,
      'run a Clawplane at least as new as the one that migrated this database',
    );
  const changed = rows.filter((r) => files[r.version - 1]?.checksum !== r.checksum);
  if (changed.length > 0)
    return fail(
      `stale: applied migration(s) differ from the files: ${changed.map((r) => r.name).join(', ')}`,
      'migrations are append-only: restore those files as they were applied and put the change in a new migration',
    );
  const pending = files.slice(rows.length);
  if (pending.length > 0)
    return fail(
      `${pending.length} migration(s) not applied: ${pending.map((f) => f.name).join(', ')}`,
      'clawplane migrate (clawplane serve also migrates at start)',
    );
  return ok(`${rows.length} applied, matching the files`);
}

/** Round-trip time of a trivial query (median of 5). */
export async function checkLatency(db: Db): Promise<Finding> {
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    await db.query('SELECT 1');
    times.push(performance.now() - t);
  }
  const median = times.sort((a, b) => a - b)[2] ?? 0;
  if (median > 50)
    return warn(`${median.toFixed(1)} ms per round trip`, 'put the database closer to the control plane: every request makes several round trips');
  return ok(`${median.toFixed(1)} ms per round trip`);
}

/** This host's clock against the database's: tokens, grants and backoffs compare times from both. */
export async function checkClock(db: Db): Promise<Finding> {
  const t0 = Date.now();
  const r = await db.query<{ now: Date }>('SELECT clock_timestamp() AS now');
  const t1 = Date.now();
  const skew = (r.rows[0]?.now.getTime() ?? t0) - (t0 + t1) / 2;
  const text = `${skew >= 0 ? '+' : ''}${(skew / 1000).toFixed(3)} s against the database (±${((t1 - t0) / 2000).toFixed(3)} s)`;
  if (Math.abs(skew) > 2000) return fail(text, 'synchronise both clocks with NTP (timedatectl set-ntp true; chrony)');
  if (Math.abs(skew) > 500) return warn(text, 'synchronise both clocks with NTP (timedatectl set-ntp true; chrony)');
  return ok(text);
}
