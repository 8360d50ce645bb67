import { Gauge, type Registry } from 'prom-client';
import type { Db } from '../db/pool.ts';
import { ensureQueue } from '../durable/engine.ts';

/**
 * Fair scheduling (issue 8, item 5). Tasks go on DBOS partitioned queues keyed by tenant id, so each
 * tenant has its own concurrency limit and a tenant flooding its partition cannot take another's slots.
 * DBOS partition limits are uniform per queue, and tenants have different quotas
 * (tenants.max_concurrent_tasks): one queue per distinct quota value, `clawplane.tasks.c<N>` with
 * partitionConcurrency N, registered on first use (queues are rows in DBOS's schema, so every process
 * sees them). A quota change takes effect for tasks created after it; queued ones keep their queue.
 */
export const QUEUE_PREFIX = 'clawplane.tasks.c';
export const queueFor = (maxConcurrent: number) => `${QUEUE_PREFIX}${maxConcurrent}`;
/**
 * Tasks of an executor pool go on the pool's own queue, partitioned by shard with as many slots per shard as
 * the shard has executors (docs/adr/0014-executor-pools.md): a paused pool holds only its own slots, never
 * its tenant's others. The per-shard figure is in the name because DBOS partition limits are per queue.
 */
export const POOL_QUEUE_PREFIX = 'clawplane.pool.';
export const poolQueueFor = (poolId: string, perShard: number) => `${POOL_QUEUE_PREFIX}${poolId}.x${perShard}`;

export class TaskQueues {
  readonly #known = new Map<string, Promise<void>>();
  readonly #pollMs: number;
  readonly #workerConcurrency: number;

  constructor(o: { pollMs: number; workerConcurrency: number }) {
    this.#pollMs = o.pollMs;
    this.#workerConcurrency = o.workerConcurrency;
  }

  /** The queue for a tenant quota, registered once per process. */
  queue(maxConcurrent: number): Promise<string> {
    return this.#ensure(queueFor(maxConcurrent), maxConcurrent);
  }

  /** The queue of an executor pool (partition key: the shard). */
  poolQueue(poolId: string, perShard: number): Promise<string> {
    return this.#ensure(poolQueueFor(poolId, perShard), perShard);
  }

  async #ensure(name: string, partitionConcurrency: number): Promise<string> {
    let p = this.#known.get(name);
    if (!p) {
      p = ensureQueue(name, { partitionConcurrency, workerConcurrency: this.#workerConcurrency, pollingMs: this.#pollMs });
      this.#known.set(name, p);
      p.catch(() => this.#known.delete(name));
    }
    await p;
    return name;
  }
}

/**
 * Tasks waiting per queue and tenant. The same statement, with `count(*)` only, is what the KEDA
 * PostgreSQL scaler runs (docs/operations.md): ENQUEUED rows in DBOS's workflow_status.
 */
export const QUEUE_DEPTH_SQL = `SELECT queue_name, queue_partition_key AS tenant_id, count(*)::int AS depth
  FROM dbos.workflow_status
 WHERE status = 'ENQUEUED' AND queue_name LIKE '${QUEUE_PREFIX}%'
 GROUP BY queue_name, queue_partition_key`;

export async function queueDepth(db: Db): Promise<{ queue: string; tenantId: string; depth: number }[]> {
  const r = await db.query<{ queue_name: string; tenant_id: string | null; depth: number }>(QUEUE_DEPTH_SQL);
  return r.rows.map((x) => ({ queue: x.queue_name, tenantId: x.tenant_id ?? '', depth: x.depth }));
}

/** `clawplane_task_queue_depth{queue,tenant}`, read from the database at scrape time. */
export function registerQueueDepthGauge(registry: Registry, db: Db): Gauge<'queue' | 'tenant'> {
  return new Gauge({
    name: 'clawplane_task_queue_depth',
    help: 'Tasks waiting to be dispatched, per task queue and tenant',
    labelNames: ['queue', 'tenant'],
    registers: [registry],
    async collect() {
      this.reset();
      try {
        for (const d of await queueDepth(db)) this.set({ queue: d.queue, tenant: d.tenantId }, d.depth);
      } catch {
        // The database being down shows as a missing series, not as a failed scrape of everything else.
      }
    },
  });
}
