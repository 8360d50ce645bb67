/**
 * `npm run bench -- replicas [instances]` (default 1000): the coordination cost of one owner at a time
 * (docs/adr/0009-replica-coordination.md), with one replica, on one database, in one run:
 * - SQL statements and median wall time of the reconciler's and the idle reaper's candidate reads, before
 *   (the plain SELECT) and after (the same read upserting the leases in one statement), as a ratio;
 * - lease throughput: claim + release of a gateway turn lease by one owner, and by three owners contending for
 *   one gateway (only one holds it at a time);
 * - activity writes: statements written for a stream of chats (two touches each) over several instances.
 * No sandbox is started: instances are rows that want to run but back off (a pass reads and claims them and
 * takes no step), which isolates what claiming adds. Loops do not run on their own (intervals of an hour).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseConfig } from '../src/config/schema.ts';
import type { Db } from '../src/db/pool.ts';
import { Activity } from '../src/ingress/activity.ts';
import { createLogger } from '../src/observability/logger.ts';
import { WorkClaims } from '../src/replicas/claims.ts';
import { startServer } from '../src/server/serve.ts';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 21);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

/** Counts the statements sent through `db.query` while `fn` runs (transactions' own statements are not part of these paths). */
async function counted<T>(db: Db, fn: () => Promise<T>): Promise<{ value: T; statements: number; ms: number }> {
  const orig = db.query.bind(db);
  let n = 0;
  (db as { query: Db['query'] }).query = ((...a: Parameters<Db['query']>) => {
    n++;
    return orig(...a);
  }) as Db['query'];
  const t = performance.now();
  try {
    const value = await fn();
    return { value, statements: n, ms: performance.now() - t };
  } finally {
    (db as { query: Db['query'] }).query = orig;
  }
}

async function timed(db: Db, fn: () => Promise<unknown>): Promise<{ statements: number; ms: number }> {
  const runs: { statements: number; ms: number }[] = [];
  for (let i = 0; i < ROUNDS; i++) runs.push(await counted(db, fn));
  return { statements: median(runs.map((r) => r.statements)), ms: median(runs.map((r) => r.ms)) };
}

export async function main(args: string[]): Promise<void> {
  const n = Number(args[0] ?? 1000);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-bench-replicas-'));
  const config = parseConfig({
    CLAWPLANE_ENV: 'test',
    CLAWPLANE_DATA_DIR: dataDir,
    CLAWPLANE_SECRET_KEY: randomBytes(32).toString('base64'),
    CLAWPLANE_PORT: '0',
    CLAWPLANE_RECONCILE_INTERVAL_MS: '600000',
    CLAWPLANE_REPLICA_EXPIRE_MS: '3600000',
    CLAWPLANE_IDLE_CHECK_INTERVAL_MS: '3600000',
    CLAWPLANE_BACKUP_INTERVAL_MS: '0',
    ...(process.env['DATABASE_URL'] ? { DATABASE_URL: process.env['DATABASE_URL'] } : {}),
  });
  const server = await startServer(config, createLogger('warn'));
  try {
    const { db, services: s } = server;
    await db.query(`INSERT INTO tenants (slug, name) SELECT 'bench-' || g, 'Bench ' || g FROM generate_series(1, $1::int) g`, [n]);
    // Half want to run but back off (reconcile candidates), half "running" rows (idle-reaper candidates).
    await db.query(
      `INSERT INTO instances (id, tenant_id, name, runtime_version, desired_state, status, next_attempt_at)
       SELECT gen_random_uuid(), id, 'main', '2026.9.6', 'running', CASE WHEN substr(slug, 7)::int % 2 = 0 THEN 'running' ELSE 'error' END, now() + interval '1 day'
         FROM tenants WHERE slug LIKE 'bench-%'`,
    );
    const rec = s.reconciler;
    const rows: [string, { statements: number; ms: number }, { statements: number; ms: number }][] = [];
    rows.push(['reconcile pass: candidate read', await timed(db, () => s.instances.allForReconcile()), await timed(db, () => rec.claimed('reconcile'))]);
    rows.push(['idle reaper: candidate read', await timed(db, () => s.instances.running()), await timed(db, () => rec.claimed('running'))]);
    console.log(`\nCoordination cost with one replica, ${n} instances (${n / 2} reconcile-only, ${n / 2} running), median of ${ROUNDS}:`);
    console.log('| path | statements before | statements after | ratio | ms before | ms after | ratio |');
    console.log('|---|---|---|---|---|---|---|');
    for (const [name, b, a] of rows) console.log(`| ${name} | ${b.statements} | ${a.statements} | ${(a.statements / b.statements).toFixed(2)} | ${b.ms.toFixed(2)} | ${a.ms.toFixed(2)} | ${(a.ms / b.ms).toFixed(2)} |`);

    // Lease throughput: one owner, then three contending for one gateway.
    const id = rec.claimIdentity;
    const solo = new WorkClaims(db, { ...id, owner: 'bench-solo' });
    const cycles = 500;
    let t = performance.now();
    for (let i = 0; i < cycles; i++) {
      if (!(await solo.claim('gateway.turn', 'bench-gw'))) throw new Error('uncontended claim refused');
      await solo.release('gateway.turn', 'bench-gw');
    }
    const soloRate = cycles / ((performance.now() - t) / 1000);
    const owners = ['a', 'b', 'c'].map((o) => new WorkClaims(db, { ...id, owner: `bench-${o}` }));
    let held = 0;
    let overlap = 0;
    let done = 0;
    let attempts = 0;
    t = performance.now();
    await Promise.all(
      owners.map(async (w) => {
        while (done < cycles) {
          attempts++;
          if (!(await w.claim('gateway.turn', 'bench-contended'))) continue;
          if (++held > 1) overlap++;
          done++;
          held--;
          await w.release('gateway.turn', 'bench-contended');
        }
      }),
    );
    const contendedRate = done / ((performance.now() - t) / 1000);
    console.log(`\nLeases: claim+release by one owner ${soloRate.toFixed(0)}/s; three owners contending for one gateway ${contendedRate.toFixed(0)} turns/s (${attempts} attempts, ${overlap} overlapping holders; ratio ${(contendedRate / soloRate).toFixed(2)})`);

    // Activity: 2,000 chats (begin + end = two touches each) over 20 instances within about 4 s.
    const ids = (await db.query<{ id: string }>(`SELECT id FROM instances WHERE status = 'running' LIMIT 20`)).rows.map((r) => r.id);
    const activity = new Activity({ db });
    const writes = await counted(db, async () => {
      const t0 = performance.now();
      for (let i = 0; i < 2000; i++) {
        const idx = ids[i % ids.length] as string;
        const end = activity.begin(idx);
        end();
        if (i % 100 === 99) await new Promise((r) => setTimeout(r, 200));
      }
      await activity.stop();
      return performance.now() - t0;
    });
    console.log(`Activity: 2000 chats over ${ids.length} instances in ${(writes.value / 1000).toFixed(1)} s wrote ${writes.statements} statements (${(writes.statements / 2000).toFixed(4)} per chat; at most one batched UPDATE per 2 s per replica, whatever the number of instances)`);
  } finally {
    await server.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}
