import type { Queryable } from './pool.ts';

/**
 * A deterministic text description of Clawplane's own schema (public schema; DBOS keeps its tables in
 * `dbos`), built from the catalogs so it reads the same on PostgreSQL 15 and 18. CI compares a freshly
 * migrated database with the committed `src/db/schema.snapshot.txt`, and `clawplane migrate --check`
 * compares a live database with it, so drift from the migration files is caught (issue 2).
 */
export async function describeSchema(db: Queryable): Promise<string> {
  const out: string[] = [];
  const cols = await db.query<{ t: string; c: string; type: string; nn: boolean; def: string | null }>(`
    SELECT c.relname AS t, a.attname AS c, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS nn,
           pg_get_expr(d.adbin, d.adrelid) AS def
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
     WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
     ORDER BY c.relname, a.attnum`);
  let table = '';
  for (const r of cols.rows) {
    if (r.t !== table) {
      table = r.t;
      out.push(`table ${r.t}`);
    }
    out.push(`  column ${r.c} ${r.type}${r.nn ? ' not null' : ''}${r.def ? ` default ${r.def}` : ''}`);
  }
  const cons = await db.query<{ t: string; name: string; def: string }>(`
    SELECT c.relname AS t, k.conname AS name, pg_get_constraintdef(k.oid) AS def
      FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'public' AND k.contype IN ('p', 'u', 'f', 'c', 'x')
     ORDER BY c.relname, k.conname`);
  for (const r of cons.rows) out.push(`constraint ${r.t}.${r.name} ${r.def}`);
  const idx = await db.query<{ name: string; def: string }>(`
    SELECT indexname AS name, indexdef AS def FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname`);
  for (const r of idx.rows) out.push(`index ${r.name} ${r.def}`);
  const trg = await db.query<{ name: string; def: string }>(`
    SELECT t.tgname AS name, pg_get_triggerdef(t.oid) AS def
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'public' AND NOT t.tgisinternal ORDER BY c.relname, t.tgname`);
  for (const r of trg.rows) out.push(`trigger ${r.name} ${r.def}`);
  const fns = await db.query<{ name: string; args: string; md5: string }>(`
    SELECT p.proname AS name, pg_get_function_identity_arguments(p.oid) AS args, md5(p.prosrc) AS md5
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'public' ORDER BY p.proname, args`);
  for (const r of fns.rows) out.push(`function ${r.name}(${r.args}) body-md5 ${r.md5}`);
  return out.join('\n') + '\n';
}
