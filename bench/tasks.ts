/**
 * `npm run bench -- tasks` (issue 8): tasks/s through the whole pipeline (API service → partitioned
 * queue → workflow: dispatch, recall, execute, approvals check, evaluate) with a STAND-IN instant
 * executor, against raw DBOS zero-step workflows on a plain queue of the same database in the same run;
 * then the fairness ratio (quiet tenant's p95 wait with a 10× noisy tenant / alone). Also what each
 * costs in SQL statements (round trips, ours and DBOS's) and write transactions, which is what the
 * throughput follows.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseConfig } from '../src/config/schema.ts';
import { defineWorkflow, enqueueWorkflow, ensureQueue } from '../src/durable/engine.ts';
import { createLogger } from '../src/observability/logger.ts';
import { startServer } from '../src/server/serve.ts';
import { instantExecutor } from '../test/helpers/task-executors.ts';
import { sqlStatements } from './sql-statements.ts';
import { measureFairness } from './tasks-fairness.ts';

// Registered at module load, before the server launches DBOS.
const zeroStep = defineWorkflow('bench.zeroStep', (i: number) => Promise.resolve(i));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const statementCount = sqlStatements();

export async function main(args: string[]): Promise<void> {
  const n = Number(args[0] ?? 500);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-bench-tasks-'));
  const config = parseConfig({
    CLAWPLANE_ENV: 'test',
    CLAWPLANE_DATA_DIR: dataDir,
    CLAWPLANE_SECRET_KEY: randomBytes(32).toString('base64'),
    CLAWPLANE_PORT: '0',
    CLAWPLANE_TASK_QUEUE_POLL_MS: '50',
    ...(process.env['DATABASE_URL'] ? { DATABASE_URL: process.env['DATABASE_URL'] } : {}),
  });
  const server = await startServer(config, createLogger('warn'));
  try {
    server.services.taskRuntime.useExecutor(instantExecutor);
    const s = server.services;
    const by = { actor: 'bench' };
    const tenants: string[] = [];
    for (let i = 0; i < 4; i++) {
      const t = await s.tenants.create({ slug: `bench-${i}`, name: `Bench ${i}`, quotas: { maxConcurrentTasks: 25 } }, by);
      await s.agents.create(t.id, { name: 'worker', capabilities: ['work'] }, by);
      tenants.push(t.id);
    }
    // Write transactions (each one a WAL flush at commit) are what a task costs: counted by the
    // transaction ids consumed (read-only transactions take none).
    const xid = async () => Number((await server.db.query<{ x: string }>('SELECT pg_current_xact_id()::text AS x')).rows[0]?.x);
    // Raw DBOS: zero-step workflows on a plain queue with the same worker concurrency and polling.
    await ensureQueue('bench.raw', { workerConcurrency: 100, pollingMs: 50 });
    const x0 = await xid();
    const q0 = statementCount();
    const t0 = performance.now();
    for (let i = 0; i < n; i += 20)
      await Promise.all(
        Array.from({ length: Math.min(20, n - i) }, (_, j) => enqueueWorkflow(zeroStep, `raw-${i + j}-${Date.now()}`, { queue: 'bench.raw' }, i + j)),
      );
    for (;;) {
      const r = await server.db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM dbos.workflow_status WHERE queue_name = 'bench.raw' AND status = 'SUCCESS'`,
      );
      if ((r.rows[0]?.n ?? 0) >= n) break;
      await sleep(20);
    }
    const rawPerS = n / ((performance.now() - t0) / 1000);
    const rawStatements = (statementCount() - q0) / n;
    const rawWrites = ((await xid()) - x0 - 1) / n;

    const x1 = await xid();
    const q1 = statementCount();
    const t1 = performance.now();
    for (let i = 0; i < n; i += 20)
      await Promise.all(
        Array.from({ length: Math.min(20, n - i) }, (_, j) =>
          s.tasks.create(tenants[(i + j) % tenants.length] ?? '', { capability: 'work', input: `bench ${i + j}` }, by),
        ),
      );
    for (;;) {
      const r = await server.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM tasks WHERE status IN ('completed', 'failed')`);
      if ((r.rows[0]?.n ?? 0) >= n) break;
      await sleep(20);
    }
    const taskPerS = n / ((performance.now() - t1) / 1000);
    const taskStatements = (statementCount() - q1) / n;
    const taskWrites = ((await xid()) - x1 - 1) / n;
    const fair = await measureFairness(server, { quietTasks: 20, noisyFactor: 10, spacingMs: 100, suffix: 'bench' });
    console.table([
      { measure: `raw DBOS zero-step workflows (${n})`, value: `${rawPerS.toFixed(0)} /s` },
      { measure: `tasks through the whole pipeline, instant stand-in executor (${n})`, value: `${taskPerS.toFixed(0)} /s` },
      { measure: 'pipeline / raw (target >= 0.5)', value: (taskPerS / rawPerS).toFixed(2) },
      { measure: 'SQL statements per raw workflow / per task', value: `${rawStatements.toFixed(1)} / ${taskStatements.toFixed(1)}` },
      { measure: 'write transactions per raw workflow / per task', value: `${rawWrites.toFixed(1)} / ${taskWrites.toFixed(1)}` },
      { measure: 'quiet p95 wait alone', value: `${fair.unloadedP95Ms} ms` },
      { measure: `quiet p95 wait with a 10x noisy tenant (${fair.noisyTasks} tasks)`, value: `${fair.loadedP95Ms} ms` },
      { measure: 'fairness ratio (target <= 1.5)', value: fair.ratio.toFixed(2) },
      { measure: 'noisy tasks queued ahead that the quiet tenant overtook', value: `${fair.overtaken} of ${fair.backlogAhead}` },
    ]);
  } finally {
    await server.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}
