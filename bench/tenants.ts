/**
 * `npm run bench -- tenants [small] [large]` (default 1000 and 100000): a platform of mostly idle
 * tenants, each with one instance and one ended task; 1% of the small size's instances running (rows
 * only: no sandbox is started, the loops' candidate statements are what is measured), the same ones at
 * the large size, so the large size adds only idle tenants with stopped instances. In one run, at both
 * sizes:
 * - each periodic loop's candidate statements (reconciler, idle reaper, backup sweep, task
 *   housekeeping): median wall time, rows returned, and shared buffers the statements touched (from
 *   EXPLAIN ANALYZE BUFFERS of the same statements), with the large/small ratio;
 * - the tenant list over HTTP: p50 and p95 of the first page, of a page 20 cursors deep, and of a search;
 * - the idle server's heap after a full GC, per 10,000 registered tenants.
 * The loops do not run on their own meanwhile: the server runs the api role only (the rows' sandboxes do
 * not exist, so a reconciler would only log failures), and each loop's statements are called directly.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parseConfig } from '../src/config/schema.ts';
import type { Db } from '../src/db/pool.ts';
import { createLogger } from '../src/observability/logger.ts';
import { startServer, type RunningServer } from '../src/server/serve.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 15);
const REQUESTS = Number(process.env['BENCH_REQUESTS'] ?? 100);

interface LoopFigure {
  ms: number;
  rows: number;
  buffers: number;
  statements: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? 0;

/**
 * Seeds tenants [from, to) with one instance each and one completed task. Every 100th tenant below
 * `activeBelow` has its instance running: both sizes have the same active work, so what the larger one
 * adds is idle tenants with stopped instances only.
 */
async function seed(db: Db, from: number, to: number, activeBelow: number): Promise<void> {
  for (let lo = from; lo < to; lo += 20_000) {
    const hi = Math.min(to, lo + 20_000);
    await db.query(
      `INSERT INTO tenants (slug, name) SELECT 'bench-' || lpad(g::text, 6, '0'), 'Bench tenant ' || g FROM generate_series($1::int, $2::int - 1) g`,
      [lo, hi],
    );
    await db.query(
      `INSERT INTO instances (id, tenant_id, name, runtime_version, desired_state, status, sandbox)
       SELECT gen_random_uuid(), t.id, 'main', '2026.9.6',
              CASE WHEN n % 100 = 0 AND n < $3 THEN 'running' ELSE 'stopped' END,
              CASE WHEN n % 100 = 0 AND n < $3 THEN 'running' ELSE 'stopped' END,
              CASE WHEN n % 100 = 0 AND n < $3 THEN '{"sandboxId":"bench"}'::jsonb END
         FROM (SELECT id, substr(slug, 7)::int AS n FROM tenants WHERE slug >= 'bench-' || lpad($1::text, 6, '0') AND slug < 'bench-' || lpad($2::text, 6, '0')) t`,
      [lo, hi, activeBelow],
    );
    await db.query(
      `INSERT INTO tasks (id, tenant_id, root_id, input, status, created_by)
       SELECT u, t.id, u, 'done', 'completed', 'bench' FROM (SELECT id, gen_random_uuid() AS u FROM tenants WHERE slug >= 'bench-' || lpad($1::text, 6, '0') AND slug < 'bench-' || lpad($2::text, 6, '0')) t`,
      [lo, hi],
    );
  }
  await db.query('ANALYZE tenants');
  await db.query('ANALYZE instances');
  await db.query('ANALYZE tasks');
}

/** Runs `fn` ROUNDS times; the statements of one more run are explained for rows and buffers. */
async function measureLoop(db: Db, fn: () => Promise<unknown>): Promise<LoopFigure> {
  const times: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const t = performance.now();
    await fn();
    times.push(performance.now() - t);
  }
  let rows = 0;
  let buffers = 0;
  let statements = 0;
  const query = db.query.bind(db);
  db.query = (async (text: string, params?: unknown[]) => {
    if (/^\s*(WITH|SELECT)\b/i.test(text)) {
      const r = await query<{ 'QUERY PLAN': { Plan: { 'Actual Rows': number; 'Shared Hit Blocks': number; 'Shared Read Blocks': number } }[] }>(
        `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${text}`,
        params,
      );
      const plan = r.rows[0]?.['QUERY PLAN'][0]?.Plan;
      rows += plan?.['Actual Rows'] ?? 0;
      buffers += (plan?.['Shared Hit Blocks'] ?? 0) + (plan?.['Shared Read Blocks'] ?? 0);
    }
    statements++;
    return query(text, params);
  }) as typeof db.query;
  try {
    await fn();
  } finally {
    db.query = query;
  }
  return { ms: median(times), rows, buffers, statements };
}

async function signIn(server: RunningServer, dataDir: string): Promise<string> {
  const base = server.url;
  const code = (await readFile(path.join(dataDir, 'setup-code'), 'utf8')).trim();
  const res = await fetch(`${base}/api/v1/onboarding/admin`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'bench@example.test', password: 'a long bench password', setupCode: code }),
  });
  if (!res.ok) throw new Error(`onboarding: ${res.status} ${await res.text()}`);
  const cookie = (res.headers.getSetCookie()[0] ?? '').split(';')[0] ?? '';
  const { csrfToken } = (await res.json()) as { csrfToken: string };
  for (const [p, body] of [
    ['oidc', { skip: true }],
    ['provider', { skip: true }],
    ['defaults', {}],
  ] as const) {
    const r = await fetch(`${base}/api/v1/onboarding/${p}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', cookie, 'x-csrf-token': csrfToken },
      body: JSON.stringify(body),
    });
    if (!r.ok) throw new Error(`onboarding ${p}: ${r.status} ${await r.text()}`);
  }
  return cookie;
}

async function listLatency(base: string, cookie: string): Promise<{ first: number[]; deep: number[]; search: number[]; bytes: number }> {
  const get = async (q: string) => {
    const t = performance.now();
    const r = await fetch(`${base}/api/v1/tenants${q}`, { headers: { cookie } });
    const text = await r.text();
    if (!r.ok) throw new Error(`GET /api/v1/tenants${q}: ${r.status} ${text}`);
    return { ms: performance.now() - t, body: JSON.parse(text) as { nextCursor: string | null; items: unknown[] }, bytes: text.length };
  };
  // A cursor 20 pages in: keyset pages cost the same wherever they are.
  let cursor: string | null = null;
  for (let i = 0; i < 20; i++) {
    const next: string | null = (await get(`?limit=50${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)).body.nextCursor;
    if (next === null) break;
    cursor = next;
  }
  const first: number[] = [];
  const deep: number[] = [];
  const search: number[] = [];
  let bytes = 0;
  for (let i = 0; i < REQUESTS; i++) {
    const f = await get('?limit=50');
    first.push(f.ms);
    bytes = f.bytes;
    deep.push((await get(`?limit=50${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)).ms);
    search.push((await get(`?limit=50&q=${String(100 + (i % 800))}`)).ms);
  }
  return { first, deep, search, bytes };
}

function heapUsed(): number {
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().heapUsed;
}

export async function main(args: string[]): Promise<void> {
  const sizes = [Number(args[0] ?? 1000), Number(args[1] ?? 100_000)].sort((a, b) => a - b) as [number, number];
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-bench-tenants-'));
  const config = parseConfig({
    CLAWPLANE_ENV: 'test',
    CLAWPLANE_DATA_DIR: dataDir,
    CLAWPLANE_SECRET_KEY: randomBytes(32).toString('base64'),
    CLAWPLANE_PORT: '0',
    CLAWPLANE_ROLES: 'api',
    CLAWPLANE_RECONCILE_INTERVAL_MS: '600000',
    CLAWPLANE_IDLE_CHECK_INTERVAL_MS: '3600000',
    CLAWPLANE_BACKUP_INTERVAL_MS: '0',
    ...(process.env['DATABASE_URL'] ? { DATABASE_URL: process.env['DATABASE_URL'] } : {}),
  });
  const server = await startServer(config, createLogger('warn'));
  try {
    const s = server.services;
    const base = server.url;
    const cookie = await signIn(server, dataDir);
    const loops: [string, () => Promise<unknown>][] = [
      ['reconciler (+ health)', () => s.instances.allForReconcile()],
      ['idle reaper', () => s.instances.running()],
      ['backup sweep', () => s.backups.periodicSweep(10 * 365 * 86_400_000)],
      ['task housekeeping', async () => (await s.tasks.reconcileEnded()) + (await s.tasks.enqueueMissing())],
    ];
    const heap0 = heapUsed();
    const results: { n: number; loops: LoopFigure[]; list: Awaited<ReturnType<typeof listLatency>>; heap: number }[] = [];
    let seeded = 0;
    for (const n of sizes) {
      const t = performance.now();
      await seed(server.db, seeded, n, sizes[0]);
      seeded = n;
      process.stderr.write(`seeded ${n} tenants, instances and tasks in ${((performance.now() - t) / 1000).toFixed(1)} s\n`);
      const figures: LoopFigure[] = [];
      for (const [, fn] of loops) figures.push(await measureLoop(server.db, fn));
      const list = await listLatency(base, cookie);
      results.push({ n, loops: figures, list, heap: heapUsed() });
    }
    const [small, large] = results as [(typeof results)[number], (typeof results)[number]];
    const f1 = (x: number) => x.toFixed(1);
    const ratio = (a: number, b: number) => (a === 0 ? (b === 0 ? '1.00' : '∞') : (b / a).toFixed(2));
    console.log(`\nPeriodic loops, per cycle (median of ${ROUNDS}; rows = rows the statements returned; buffers = 8 KiB pages they touched)`);
    console.log(
      `| loop | ${small.n} ms | ${large.n} ms | ms ratio | rows ${small.n} → ${large.n} | buffers ${small.n} → ${large.n} | buffers ratio | statements |`,
    );
    console.log('|---|---|---|---|---|---|---|---|');
    loops.forEach(([name], i) => {
      const a = small.loops[i] as LoopFigure;
      const b = large.loops[i] as LoopFigure;
      console.log(
        `| ${name} | ${f1(a.ms)} | ${f1(b.ms)} | ${ratio(a.ms, b.ms)} | ${a.rows} → ${b.rows} | ${a.buffers} → ${b.buffers} | ${ratio(a.buffers, b.buffers)} | ${b.statements} |`,
      );
    });
    console.log(`\nGET /api/v1/tenants (50 a page, with per-tenant figures; ${REQUESTS} requests each; ms)`);
    console.log(`| page | p50 ${small.n} | p95 ${small.n} | p50 ${large.n} | p95 ${large.n} | p50 ratio |`);
    console.log('|---|---|---|---|---|---|');
    for (const k of ['first', 'deep', 'search'] as const) {
      console.log(
        `| ${k === 'deep' ? '21st page (cursor)' : k === 'search' ? 'search ?q=' : 'first page'} | ${f1(pct(small.list[k], 0.5))} | ${f1(pct(small.list[k], 0.95))} | ${f1(pct(large.list[k], 0.5))} | ${f1(pct(large.list[k], 0.95))} | ${ratio(pct(small.list[k], 0.5), pct(large.list[k], 0.5))} |`,
      );
    }
    console.log(`first page: ${large.list.bytes} bytes at ${large.n} tenants (was the whole list before paging)`);
    const per10k = (large.heap - heap0) / (large.n / 10_000) / 1024;
    console.log(
      `\nIdle server heap after GC: ${(heap0 / 1048576).toFixed(1)} MiB with no tenants, ${(small.heap / 1048576).toFixed(1)} MiB at ${small.n}, ${(large.heap / 1048576).toFixed(1)} MiB at ${large.n}`,
    );
    console.log(`growth: ${per10k.toFixed(0)} KiB per 10,000 tenants (${((large.heap - heap0) / large.n).toFixed(0)} bytes per tenant; target <= 4 KiB)`);
  } finally {
    await server.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}
