import type { Queryable } from '../db/pool.ts';
import type { SandboxLimits } from '../sandbox/types.ts';
import { parsePoolSandboxName } from './placement.ts';

/**
 * A pool sandbox's memory and CPU limits: its declared gateways' reservations (`declared × memoryMb`,
 * `declared × cpuMillis`), so the CPU and memory quotas bound what really runs; null when the instance is not a
 * pool's sandbox (the driver's own limits apply).
 */
export async function poolSandboxLimits(db: Queryable, tenantId: string, instanceName: string, declared: number): Promise<SandboxLimits | null> {
  const at = parsePoolSandboxName(instanceName);
  if (!at) return null;
  const r = await db.query<{ cpu_millis: number; memory_mb: number }>(
    'SELECT cpu_millis, memory_mb FROM executor_pools WHERE tenant_id = $1 AND agent_type = $2',
    [tenantId, at.agentType],
  );
  const p = r.rows[0];
  return p ? { memoryBytes: declared * p.memory_mb * 2 ** 20, cpus: (declared * p.cpu_millis) / 1000 } : null;
}

/**
 * The executors a pool's sandbox should run: its active slots (the scaler's decision, src/pools/scaler.ts),
 * or null when the instance is not a pool's sandbox — its name is not one, or no pool of that agent type
 * exists — and runs every executor it declares.
 */
export async function poolSandboxRun(db: Queryable, tenantId: string, instanceName: string): Promise<string[] | null> {
  const at = parsePoolSandboxName(instanceName);
  if (!at) return null;
  const r = await db.query<{ gateway: string | null }>(
    `SELECT x.gateway FROM executor_pools p
       LEFT JOIN pool_executors x ON x.pool_id = p.id AND x.tenant_id = p.tenant_id AND x.sandbox = $3 AND x.active AND x.slot < p.max_executors
      WHERE p.tenant_id = $1 AND p.agent_type = $2 ORDER BY x.gateway`,
    [tenantId, at.agentType, at.sandbox],
  );
  if (r.rows.length === 0) return null;
  return r.rows.flatMap((x) => (x.gateway ? [x.gateway] : []));
}
