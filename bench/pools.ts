/**
 * `npm run bench -- pools [n]` (docs/adr/0014-executor-pools.md): dispatch overhead of executor pools. The
 * same n tasks with a STAND-IN instant executor, once for an agent type without a pool (the tenant queue) and
 * once for a type with a pool (2 shards × 4 executors: the pool queue, the executor claim and its release),
 * at the same concurrency (8) in the same run: tasks/s, time and SQL statements per task. Scaling between
 * min and max is not built, so "backlog → added executor ready" has nothing to measure (ADR 0014, Not built).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseConfig } from '../src/config/schema.ts';
import { createLogger } from '../src/observability/logger.ts';
import { startServer } from '../src/server/serve.ts';
import { instantExecutor } from '../test/helpers/task-executors.ts';
import { sqlStatements } from './sql-statements.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const statementCount = sqlStatements();

export async function main(args: string[]): Promise<void> {
  const n = Number(args[0] ?? 400);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-bench-pools-'));
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
    const plain = await s.tenants.create({ slug: 'bench-plain', name: 'Plain', quotas: { maxConcurrentTasks: 8 } }, by);
    const pooled = await s.tenants.create({ slug: 'bench-pooled', name: 'Pooled', quotas: { maxConcurrentTasks: 8, maxInstances: 2 } }, by);
    for (const t of [plain, pooled]) await s.agents.create(t.id, { name: 'worker', agentType: 'coding', capabilities: ['work'] }, by);
    await s.pools.create(pooled.id, { agentType: 'coding', shards: 2, minExecutors: 4, maxExecutors: 4 }, by);

    const run = async (tenantId: string) => {
      const q0 = statementCount();
      const t0 = performance.now();
      for (let i = 0; i < n; i += 20) await Promise.all(Array.from({ length: Math.min(20, n - i) }, (_, j) => s.tasks.create(tenantId, { capability: 'work', input: `bench ${i + j}`, shardKey: `k${i + j}` }, by)));
      for (;;) {
        const r = await server.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM tasks WHERE tenant_id = $1 AND status IN ('completed', 'failed')`, [tenantId]);
        if ((r.rows[0]?.n ?? 0) >= n) break;
        await sleep(20);
      }
      const ms = performance.now() - t0;
      const failed = (await server.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM tasks WHERE tenant_id = $1 AND status = 'failed'`, [tenantId])).rows[0]?.n ?? 0;
      return { perS: n / (ms / 1000), msPerTask: ms / n, statements: (statementCount() - q0) / n, failed };
    };
    const a = await run(plain.id);
    const b = await run(pooled.id);
    console.table([
      { measure: `without a pool (${n} tasks, tenant queue, concurrency 8)`, value: `${a.perS.toFixed(0)} tasks/s, ${a.msPerTask.toFixed(2)} ms/task, ${a.statements.toFixed(1)} SQL/task, ${a.failed} failed` },
      { measure: `with a pool (2 shards × 4 executors)`, value: `${b.perS.toFixed(0)} tasks/s, ${b.msPerTask.toFixed(2)} ms/task, ${b.statements.toFixed(1)} SQL/task, ${b.failed} failed` },
      { measure: 'dispatch overhead of the pool per task', value: `${(b.msPerTask - a.msPerTask).toFixed(2)} ms, ${(b.statements - a.statements).toFixed(1)} SQL statements` },
      { measure: 'backlog → added executor ready', value: 'not measured: scaling between min and max is not built (ADR 0014)' },
    ]);
  } finally {
    await server.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}
