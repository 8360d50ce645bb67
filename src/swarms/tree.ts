import type { Queryable } from '../db/pool.ts';
import { NotFoundError } from '../errors.ts';
import type { AgentType, TaskStatus } from '../tasks/types.ts';

/** One task of a swarm's (or delegation's) tree, with where it ran. */
export interface TaskNode {
  id: string;
  parentId: string | null;
  status: TaskStatus;
  statusReason: string;
  agentType: AgentType | null;
  capability: string | null;
  poolId: string | null;
  shard: number | null;
  executorId: string | null;
  swarmRuleId: string | null;
  createdAt: string;
  finishedAt: string | null;
  children: TaskNode[];
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The task and every task below it (children, their children, …), as a tree; one recursive query. */
export async function taskTree(q: Queryable, tenantId: string, taskId: string): Promise<TaskNode> {
  if (!UUID.test(taskId)) throw new NotFoundError('Task');
  const r = await q.query<{
    id: string;
    parent_id: string | null;
    status: TaskStatus;
    status_reason: string;
    agent_type: AgentType | null;
    capability: string | null;
    pool_id: string | null;
    shard: number | null;
    executor_id: string | null;
    swarm_rule_id: string | null;
    created_at: Date;
    finished_at: Date | null;
  }>(
    `WITH RECURSIVE tree AS (
       SELECT t.*, 0 AS depth FROM tasks t WHERE t.tenant_id = $1 AND t.id = $2
       UNION ALL
       SELECT c.*, tree.depth + 1 FROM tasks c JOIN tree ON c.parent_id = tree.id WHERE c.tenant_id = $1 AND tree.depth < 10)
     SELECT id, parent_id, status, status_reason, agent_type, capability, pool_id, shard, executor_id, swarm_rule_id, created_at, finished_at FROM tree ORDER BY depth, created_at, id`,
    [tenantId, taskId],
  );
  const nodes = new Map<string, TaskNode>();
  for (const x of r.rows) {
    nodes.set(x.id, {
      id: x.id,
      parentId: x.parent_id,
      status: x.status,
      statusReason: x.status_reason,
      agentType: x.agent_type,
      capability: x.capability,
      poolId: x.pool_id,
      shard: x.shard,
      executorId: x.executor_id,
      swarmRuleId: x.swarm_rule_id,
      createdAt: x.created_at.toISOString(),
      finishedAt: x.finished_at?.toISOString() ?? null,
      children: [],
    });
  }
  const root = nodes.get(taskId);
  if (!root) throw new NotFoundError('Task');
  for (const n of nodes.values()) if (n !== root && n.parentId) nodes.get(n.parentId)?.children.push(n);
  return root;
}
