import pg from 'pg';
import type { Logger } from 'pino';

/** Anything that runs SQL: the pool or a transaction's client. Queries live in the module owning the table. */
export interface Queryable {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, params?: unknown[]): Promise<pg.QueryResult<R>>;
}

/** The narrow database port the rest of Clawplane uses (issue 2). */
export interface Db extends Queryable {
  /** Runs `fn` in one transaction; commits when it resolves, rolls back when it throws. */
  tx<T>(fn: (q: Queryable) => Promise<T>): Promise<T>;
  readonly url: string;
  readonly pool: pg.Pool;
  close(): Promise<void>;
}

const commitHooks = new WeakMap<Queryable, (() => void)[]>();

/**
 * Runs `fn` once what `q` wrote is committed: at once for the pool (each statement commits on its own), after
 * COMMIT for a transaction's client, never when it rolls back. Used to deliver events in this process only
 * for changes other processes can see too (docs/adr/0009-replica-coordination.md).
 */
export function afterCommit(q: Queryable, fn: () => void): void {
  const hooks = commitHooks.get(q);
  if (hooks) hooks.push(fn);
  else fn();
}

// Timestamps come back as Date and bigint counters as strings by default; int8 -> number is safe for our
// sequence and counter ranges (< 2^53), and keeps JSON bodies numeric.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

export function createDb(url: string, log: Logger, opts: { max?: number; applicationName?: string } = {}): Db {
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.max ?? 10,
    application_name: opts.applicationName ?? 'clawplane',
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
  });
  // An idle client whose server went away emits 'error'; without a handler that crashes the process.
  // Readiness reports the outage instead (issue 2: /readyz goes 503 and comes back).
  pool.on('error', (err) => log.warn({ err: err.message }, 'database connection lost'));
  return {
    url,
    pool,
    query: (text, params) => pool.query(text, params),
    async tx(fn) {
      const client = await pool.connect();
      // pg-pool removes its idle 'error' listener from a checked-out client: if the server goes away
      // mid-transaction (a restart: 57P01) the client emits 'error' with no listener, which would crash
      // the process. The failing query rejects as well, so the listener only records it; the broken
      // client is then destroyed instead of going back to the pool.
      let lost: Error | undefined;
      const onLost = (err: Error) => {
        lost = err;
        log.warn({ err: err.message }, 'database connection lost during a transaction');
      };
      client.on('error', onLost);
      const hooks: (() => void)[] = [];
      commitHooks.set(client, hooks);
      try {
        await client.query('BEGIN');
        const result = await fn(client);
        await client.query('COMMIT');
        commitHooks.delete(client);
        for (const h of hooks) h();
        return result;
      } catch (err) {
        commitHooks.delete(client);
        if (!lost) await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        client.removeListener('error', onLost);
        client.release(lost);
      }
    },
    close: () => pool.end(),
  };
}

/** A URL with the password replaced, for logs and error messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable database URL)';
  }
}
