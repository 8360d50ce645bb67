import type { GrantRestriction } from '../broker/grants.ts';
import type { Queryable } from '../db/pool.ts';
import type { ToolRegistry } from '../policy/tools.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The policy id a read-only lane's denials name. */
export const READ_ONLY_POLICY = 'lanes/read-only';

/**
 * Read-only lanes (docs/lanes.md): while a step of a read-only lane runs, the broker refuses grants for any
 * tool above low risk in the tool registry (writes, fetches, messages, shell: the registry's risk classes),
 * on top of the tenant's Cedar decision. A request naming a task is judged by that task's root (the step's
 * task or one of its children); a request naming no task (or no task of the tenant) is refused while any read-only step of the tenant
 * runs — the gateway serves one turn at a time, and when it cannot be told apart, it fails closed.
 */
export function readOnlyRestriction(db: Queryable, tools: ToolRegistry): GrantRestriction {
  return async (tenantId, name, context) => {
    const tool = await tools.get(name);
    if (!tool || tool.risk === 'low') return null;
    const taskId = typeof context.taskId === 'string' && UUID.test(context.taskId) ? context.taskId : null;
    const r = await db.query<{ lane: string }>(
      `SELECT l.name AS lane FROM lane_run_steps s JOIN lane_runs r ON r.id = s.run_id JOIN lanes l ON l.id = r.lane_id
        WHERE s.tenant_id = $1 AND s.status = 'running' AND s.task_id IS NOT NULL AND l.read_only
          AND ($2::uuid IS NULL OR NOT EXISTS (SELECT 1 FROM tasks WHERE tenant_id = $1 AND id = $2::uuid)
               OR s.task_id = (SELECT root_id FROM tasks WHERE tenant_id = $1 AND id = $2::uuid))
        LIMIT 1`,
      [tenantId, taskId],
    );
    const lane = r.rows[0]?.lane;
    if (lane === undefined) return null;
    return {
      outcome: 'deny',
      policyIds: [READ_ONLY_POLICY],
      policies: [],
      explanation: `Denied: "${name}" is a ${tool.risk}-risk tool and lane "${lane}" is read-only: its steps may use low-risk (read) tools only.`,
      errors: [],
    };
  };
}
