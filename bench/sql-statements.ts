/**
 * Counts the SQL statements sent by every pg client of this process (ours and DBOS's): round trips are
 * what a task costs here (a socket write and a wait each; `writev` is the top item of a CPU profile).
 * A helper of bench/tasks.ts and bench/pools.ts (no `main`: not a bench of its own).
 */
import pg from 'pg';

let statements = 0;
let installed = false;

/** Installs the counter once per process and returns a reader of the running total. */
export function sqlStatements(): () => number {
  if (!installed) {
    installed = true;
    const pgQuery = pg.Client.prototype.query;
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      statements++;
      return (pgQuery as (...a: unknown[]) => unknown).apply(this, args);
    } as typeof pg.Client.prototype.query;
  }
  return () => statements;
}
