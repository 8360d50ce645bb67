import type { Queryable } from '../db/pool.ts';

/**
 * Agent memory (issue 8): what an agent keeps from its tasks, recalled by PostgreSQL full-text search.
 * Recall matches any word of the task (OR of its lexemes), ranked by relevance then importance.
 */
export const RECALL_LIMIT = 5;
export const RECALL_MIN_IMPORTANCE = 0.3;

export interface Memory {
  id: number;
  content: string;
  importance: number;
}

export async function recall(q: Queryable, tenantId: string, agentId: string, text: string): Promise<Memory[]> {
  const r = await q.query<{ id: string; content: string; importance: number }>(
    `WITH query AS (
       SELECT to_tsquery('english', array_to_string(tsvector_to_array(to_tsvector('english', $3)), ' | ')) AS q
     )
     SELECT m.id, m.content, m.importance FROM agent_memories m, query
      WHERE m.tenant_id = $1 AND m.agent_id = $2 AND m.importance >= $4 AND m.search @@ query.q
      ORDER BY ts_rank(m.search, query.q) DESC, m.importance DESC, m.id DESC
      LIMIT $5`,
    [tenantId, agentId, text.slice(0, 4000), RECALL_MIN_IMPORTANCE, RECALL_LIMIT],
  );
  return r.rows.map((m) => ({ id: Number(m.id), content: m.content, importance: m.importance }));
}

export async function remember(q: Queryable, m: { tenantId: string; agentId: string; taskId: string; content: string; importance: number }): Promise<void> {
  await q.query('INSERT INTO agent_memories (tenant_id, agent_id, task_id, content, importance) VALUES ($1, $2, $3, $4, $5)', [
    m.tenantId,
    m.agentId,
    m.taskId,
    m.content.slice(0, 4000),
    Math.min(1, Math.max(0, m.importance)),
  ]);
}
