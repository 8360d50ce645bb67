import { ValidationError } from '../errors.ts';
import type { Queryable } from './pool.ts';

/**
 * Keyset paging shared by every list that can grow without bound (docs/adr/0008-keyset-paging.md). A page is "the first
 * `limit` rows after the last row of the previous page in this order", so a row inserted or deleted
 * between requests never shifts another row onto a second page or off every page, and the cost of a
 * page does not grow with how deep it is (no OFFSET). The cursor carries the sort it was made for and
 * the last row's key; it is opaque to callers and checked here, so a forged or stale one is a 400.
 */

/** One column of a sort key. Values travel as PostgreSQL's text form, so timestamps keep their microseconds. */
export interface KeyColumn {
  sql: string;
  type: 'text' | 'uuid' | 'timestamptz' | 'bigint';
}

/** Sort name -> key columns; the last column(s) must make the key unique (add the id). */
export type Sorts = Record<string, readonly KeyColumn[]>;

/** A sort as callers name it: `name` ascending, `-name` descending. */
export function sortNames<S extends string>(sorts: readonly S[]): [S | `-${S}`, ...(S | `-${S}`)[]] {
  const out: (S | `-${S}`)[] = [];
  for (const s of sorts) out.push(s, `-${s}`);
  return out as [S | `-${S}`, ...(S | `-${S}`)[]];
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// PostgreSQL's text output of a timestamptz (DateStyle ISO), which is what the key select produces.
const TIMESTAMPTZ = /^\d{4,}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?[+-]\d{2}(:\d{2}){0,2}$/;
const BIGINT = /^-?\d{1,19}$/;

const VALID: Record<KeyColumn['type'], (v: string) => boolean> = {
  text: (v) => v.length <= 2000 && !v.includes('\0'),
  uuid: (v) => UUID.test(v),
  timestamptz: (v) => TIMESTAMPTZ.test(v),
  bigint: (v) => BIGINT.test(v),
};

function badCursor(why: string): ValidationError {
  return new ValidationError(`The cursor is not valid (${why}): pass the nextCursor of the previous page unchanged, or leave cursor out for the first page.`, [
    { path: 'query.cursor', message: why },
  ]);
}

/** The cursor that resumes after `key` in `sort`. */
export function encodeCursor(sort: string, key: readonly string[]): string {
  return Buffer.from(JSON.stringify([sort, ...key]), 'utf8').toString('base64url');
}

/** The key a cursor resumes after; a ValidationError naming query.cursor when it is not one this sort made. */
export function decodeCursor(cursor: string, sort: string, columns: readonly KeyColumn[]): string[] {
  if (!/^[A-Za-z0-9_-]+$/.test(cursor)) throw badCursor('not base64url');
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw badCursor('not a cursor this server issued');
  }
  if (!Array.isArray(parsed) || !parsed.every((v): v is string => typeof v === 'string')) throw badCursor('not a cursor this server issued');
  const [madeFor, ...key] = parsed;
  if (madeFor !== sort) throw badCursor(`made for sort "${String(madeFor)}", not "${sort}"`);
  if (key.length !== columns.length || !columns.every((c, i) => VALID[c.type](key[i] as string))) throw badCursor('its key does not match the sort');
  return key;
}

export interface KeysetQuery<R> {
  /** From sortNames(); `-x` is x descending. */
  sort: string;
  sorts: Sorts;
  limit: number;
  cursor?: string | undefined;
  /** e.g. `tenants t`. */
  from: string;
  /** Columns of a row, e.g. `t.*`. */
  select: string;
  /** Conditions ANDed together, with $n placeholders into `vals`. */
  where: string[];
  vals: unknown[];
  /**
   * Per-row figures computed for the page only: a select list and joins over `page` (the page's rows),
   * e.g. `CROSS JOIN LATERAL (SELECT count(*) … WHERE tenant_id = page.id) s`.
   */
  perPage?: { select: string; joins: string };
  map: (row: Record<string, unknown>) => R;
}

/** One page in the sort's order, and the cursor of the next (null on the last page). */
export async function keysetPage<R>(q: Queryable, o: KeysetQuery<R>): Promise<{ items: R[]; nextCursor: string | null }> {
  const desc = o.sort.startsWith('-');
  const name = desc ? o.sort.slice(1) : o.sort;
  const columns = o.sorts[name];
  if (!columns)
    throw new ValidationError(`Unknown sort "${o.sort}".`, [
      { path: 'query.sort', message: `one of ${Object.keys(o.sorts).join(', ')} (prefix - for descending)` },
    ]);
  const where = [...o.where];
  const vals = [...o.vals];
  if (o.cursor !== undefined) {
    const key = decodeCursor(o.cursor, o.sort, columns);
    const placeholders = key.map((v, i) => {
      vals.push(v);
      return `$${vals.length}::${(columns[i] as KeyColumn).type}`;
    });
    where.push(`(${columns.map((c) => c.sql).join(', ')}) ${desc ? '<' : '>'} (${placeholders.join(', ')})`);
  }
  const dir = desc ? 'DESC' : 'ASC';
  const order = columns.map((c) => `${c.sql} ${dir}`).join(', ');
  // The key as text for the next cursor, and (for the outer query of perPage) in its own type to order by.
  const keys = columns.map((c, i) => `(${c.sql})::text AS _k${i}, ${c.sql} AS _o${i}`).join(', ');
  vals.push(o.limit + 1);
  const inner = `SELECT ${o.select}, ${keys} FROM ${o.from}
    ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY ${order} LIMIT $${vals.length}`;
  const outerOrder = columns.map((_, i) => `page._o${i} ${dir}`).join(', ');
  const sql = o.perPage ? `SELECT page.*, ${o.perPage.select} FROM (${inner}) page ${o.perPage.joins} ORDER BY ${outerOrder}` : inner;
  const r = await q.query<Record<string, unknown>>(sql, vals);
  const rows = r.rows.slice(0, o.limit);
  const last = rows.at(-1);
  const nextCursor =
    r.rows.length > o.limit && last
      ? encodeCursor(
          o.sort,
          columns.map((_, i) => String(last[`_k${i}`])),
        )
      : null;
  return { items: rows.map(o.map), nextCursor };
}

/** `%term%` for ILIKE with the wildcards of the term itself escaped. */
export function containing(term: string): string {
  return `%${term.replace(/[\\%_]/g, (m) => `\\${m}`)}%`;
}
