import { Gauge, type Registry } from 'prom-client';
import type { Db } from '../db/pool.ts';

/**
 * `clawplane_pool_queue_depth{tenant,agent_type,shard}` (tasks waiting for an executor of that shard) and
 * `clawplane_pool_executors_busy{tenant,agent_type}`, read from the database at scrape time, so every
 * replica reports the same figures (docs/adr/0014-executor-pools.md).
 */
export function registerPoolGauges(registry: Registry, db: Db): void {
  new Gauge({
    name: 'clawplane_pool_queue_depth',
    help: 'Tasks waiting for an executor, per executor pool (tenant and agent type) and shard',
    labelNames: ['tenant', 'agent_type', 'shard'],
    registers: [registry],
    async collect() {
      this.reset();
      try {
        const r = await db.query<{ tenant_id: string; agent_type: string; shard: number; n: number }>(
          `SELECT p.tenant_id, p.agent_type, s.shard, count(t.id)::int AS n
             FROM executor_pools p CROSS JOIN LATERAL generate_series(0, p.shards - 1) AS s(shard)
             LEFT JOIN tasks t ON t.pool_id = p.id AND t.shard = s.shard AND t.status IN ('queued', 'dispatched')
            GROUP BY p.tenant_id, p.agent_type, s.shard`,
        );
        for (const x of r.rows) this.set({ tenant: x.tenant_id, agent_type: x.agent_type, shard: String(x.shard) }, x.n);
      } catch {
        // The database being down shows as missing series, not as a failed scrape of everything else.
      }
    },
  });
  new Gauge({
    name: 'clawplane_pool_executors_busy',
    help: 'Pool executors running a turn now, per executor pool (tenant and agent type)',
    labelNames: ['tenant', 'agent_type'],
    registers: [registry],
    async collect() {
      this.reset();
      try {
        const r = await db.query<{ tenant_id: string; agent_type: string; n: number }>(
          `SELECT p.tenant_id, p.agent_type, count(e.id) FILTER (WHERE e.task_id IS NOT NULL AND e.lease_until > now())::int AS n
             FROM executor_pools p LEFT JOIN pool_executors e ON e.pool_id = p.id GROUP BY p.tenant_id, p.agent_type`,
        );
        for (const x of r.rows) this.set({ tenant: x.tenant_id, agent_type: x.agent_type }, x.n);
      } catch {
        // As above.
      }
    },
  });
}
