/**
 * `npm run bench -- pools [n]` (docs/adr/0014-executor-pools.md), two parts in one run:
 * 1. Dispatch overhead of executor pools. The same n tasks with a STAND-IN instant executor, once for an agent
 *    type without a pool (the tenant queue) and once for a type with a pool (2 shards × 4 executors: the pool
 *    queue, the executor claim and its release), at the same concurrency (8): tasks/s, time and SQL per task.
 * 2. Scaling on REAL OpenClaw gateways (local driver, bubblewrap; a fake LLM is the one stand-in): a chat pool
 *    of 1..3 executors, 2 per sandbox. The first task deploys the pool's sandbox (its gateway's own start time
 *    is the yardstick); then, with the running executors held busy, a task's backlog makes the scaler add one
 *    executor inside the running sandbox, and then one in a second sandbox: time from the task's creation to
 *    the added gateway ready, and to the task completed on it, each ÷ that gateway's own start (spawn → ready).
 *    BENCH_POOLS_GATEWAY=0 skips this part (it needs root and bubblewrap; run it under /tmp/cp-heavy.lock).
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseConfig } from '../src/config/schema.ts';
import { createLogger } from '../src/observability/logger.ts';
import { startServer } from '../src/server/serve.ts';
import { ExecutorClaims } from '../src/pools/executors.ts';
import { startFakeLlm } from '../test/helpers/fake-llm.ts';
import { killSandboxesUnder, OPENCLAW_VERSION, RUNTIME_CACHE } from '../test/helpers/sandbox.ts';
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
      for (let i = 0; i < n; i += 20)
        await Promise.all(
          Array.from({ length: Math.min(20, n - i) }, (_, j) =>
            s.tasks.create(tenantId, { capability: 'work', input: `bench ${i + j}`, shardKey: `k${i + j}` }, by),
          ),
        );
      for (;;) {
        const r = await server.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM tasks WHERE tenant_id = $1 AND status IN ('completed', 'failed')`, [
          tenantId,
        ]);
        if ((r.rows[0]?.n ?? 0) >= n) break;
        await sleep(20);
      }
      const ms = performance.now() - t0;
      const failed =
        (await server.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM tasks WHERE tenant_id = $1 AND status = 'failed'`, [tenantId])).rows[0]?.n ?? 0;
      return { perS: n / (ms / 1000), msPerTask: ms / n, statements: (statementCount() - q0) / n, failed };
    };
    const a = await run(plain.id);
    const b = await run(pooled.id);
    console.table([
      {
        measure: `without a pool (${n} tasks, tenant queue, concurrency 8)`,
        value: `${a.perS.toFixed(0)} tasks/s, ${a.msPerTask.toFixed(2)} ms/task, ${a.statements.toFixed(1)} SQL/task, ${a.failed} failed`,
      },
      {
        measure: `with a pool (2 shards × 4 executors)`,
        value: `${b.perS.toFixed(0)} tasks/s, ${b.msPerTask.toFixed(2)} ms/task, ${b.statements.toFixed(1)} SQL/task, ${b.failed} failed`,
      },
      {
        measure: 'dispatch overhead of the pool per task',
        value: `${(b.msPerTask - a.msPerTask).toFixed(2)} ms, ${(b.statements - a.statements).toFixed(1)} SQL statements`,
      },
    ]);
  } finally {
    await server.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
  if (process.env['BENCH_POOLS_GATEWAY'] !== '0') await scaling();
}

/** Part 2: backlog → added executor ready on real gateways (inside the running sandbox, then a new sandbox). */
async function scaling(): Promise<void> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-bench-pools-gw-'));
  const root = await mkdtemp('/var/tmp/clawplane-bench-pools-');
  await chmod(root, 0o711);
  const fake = await startFakeLlm();
  const config = parseConfig({
    CLAWPLANE_ENV: 'test',
    CLAWPLANE_DATA_DIR: dataDir,
    CLAWPLANE_SECRET_KEY: randomBytes(32).toString('base64'),
    CLAWPLANE_PORT: '0',
    CLAWPLANE_TASK_QUEUE_POLL_MS: '200',
    CLAWPLANE_RUNTIME_CACHE: RUNTIME_CACHE,
    CLAWPLANE_SANDBOX_ROOT: root,
    CLAWPLANE_EGRESS_ALLOW_HOSTS: '127.0.0.1',
    CLAWPLANE_RECONCILE_INTERVAL_MS: '1000',
    CLAWPLANE_POOL_SCALE_INTERVAL_MS: '500',
    // A uid block of its own (test/helpers/gateway.ts UID_BASES lists the test files' blocks).
    CLAWPLANE_SANDBOX_UID_BASE: '246000',
    ...(process.env['DATABASE_URL'] ? { DATABASE_URL: process.env['DATABASE_URL'] } : {}),
  });
  const server = await startServer(config, createLogger('warn'));
  const s = server.services;
  try {
    await s.runtimes.pull(OPENCLAW_VERSION);
    const by = { actor: 'bench' };
    const t = await s.tenants.create({ slug: 'bench-scale', name: 'Scale', quotas: { maxInstances: 3 } }, by);
    const key = await s.credentials.create(t.id, { name: 'fake', type: 'api_key', value: `sk-bench-${randomBytes(8).toString('hex')}` }, by);
    const provider = await s.providers.create(t.id, { kind: 'openai_compatible', name: 'fake', baseUrl: fake.baseUrl, credentialId: key.id }, by);
    await s.providers.setRoute(t.id, { scope: 'tenant', targets: [{ providerId: provider.id, model: 'fake-model' }] }, by);
    await s.agents.create(t.id, { name: 'assistant', agentType: 'chat', capabilities: ['answer'] }, by);
    const pool = await s.pools.create(t.id, { agentType: 'chat', minExecutors: 1, maxExecutors: 3, executorsPerSandbox: 2, scaleDownAfterSeconds: 600 }, by);
    const done = async (id: string) => {
      for (;;) {
        const x = await s.tasks.get(t.id, id);
        if (x.status === 'completed') return performance.now();
        if (x.status === 'failed' || x.status === 'cancelled') throw new Error(`task ${id} ${x.status}: ${x.statusReason}`);
        await sleep(100);
      }
    };
    /** When the gateway of an instance is ready (polled every 50 ms), and its own spawn → ready time. */
    const ready = async (name: string, gateway: string) => {
      for (;;) {
        const inst = (await s.instances.list(t.id)).find((i) => i.name === name);
        const row = inst ? await s.instances.get(t.id, inst.id) : undefined;
        if (row?.sandbox) {
          const st = await s.sandboxes.status(row.sandbox);
          const e = st.running ? st.health?.executors.find((x) => x.id === gateway) : undefined;
          if (e?.state === 'ready') return { at: performance.now(), ownMs: e.readyMs ?? NaN };
        }
        await sleep(50);
      }
    };
    // Cold: the pool's first sandbox, deployed by the first task.
    const t0 = performance.now();
    const first = (await s.tasks.create(t.id, { capability: 'answer', input: 'hello' }, by)).task;
    const cold = await ready('pool-chat', 'e0');
    await done(first.id);
    // Hold every running executor, then one task: the scaler adds the next slot.
    const holder = new ExecutorClaims(server.db, 600_000);
    const hold = async (n: number) => {
      const c = await holder.tryClaim(t.id, pool.id, 0, `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`, 'bench');
      if (!c) throw new Error('no executor to hold');
      return c;
    };
    await hold(1);
    const a0 = performance.now();
    const inside = (await s.tasks.create(t.id, { capability: 'answer', input: 'hello again' }, by)).task;
    const addedInside = await ready('pool-chat', 'e1');
    const insideDone = await done(inside.id);
    await hold(2);
    const b0 = performance.now();
    const next = (await s.tasks.create(t.id, { capability: 'answer', input: 'and again' }, by)).task;
    const addedSandbox = await ready('pool-chat-1', 'e0');
    const nextDone = await done(next.id);
    const ratio = (ms: number, own: number) => `${sec(ms)} (${(ms / own).toFixed(2)} × its own start of ${sec(own)})`;
    console.table([
      { measure: 'cold: first task → pool sandbox gateway e0 ready', value: ratio(cold.at - t0, cold.ownMs) },
      { measure: 'backlog → executor added in the running sandbox ready', value: ratio(addedInside.at - a0, addedInside.ownMs) },
      { measure: '  … → that task completed on it', value: sec(insideDone - a0) },
      { measure: 'backlog → executor in a new (second) sandbox ready', value: ratio(addedSandbox.at - b0, addedSandbox.ownMs) },
      { measure: '  … → that task completed on it', value: sec(nextDone - b0) },
    ]);
  } finally {
    for (const h of await s.sandboxes.list().catch(() => [])) await s.sandboxes.stop(h).catch(() => undefined);
    await server.stop();
    await fake.close();
    await killSandboxesUnder(root);
    await rm(root, { recursive: true, force: true });
    await rm(dataDir, { recursive: true, force: true });
  }
}

const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
