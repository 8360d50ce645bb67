import { keysetPage, type Sorts } from '../db/keyset.ts';
import type { Db, Queryable } from '../db/pool.ts';
import { NotFoundError } from '../errors.ts';
import { TERMINAL, type AgentType, type Priority, type Task, type TaskMessage, type TaskStatus, type TraceEvent } from './types.ts';

/** The SQL of tasks, their trace and messages (issue 8). Every query filters by tenant. */
interface Row {
  id: string;
  tenant_id: string;
  parent_id: string | null;
  root_id: string;
  agent_id: string | null;
  requested_agent: string | null;
  capability: string | null;
  input: string;
  priority: Priority;
  agent_type: AgentType | null;
  pool_id: string | null;
  shard: number | null;
  shard_key: string | null;
  executor_id: string | null;
  swarm_rule_id: string | null;
  status: TaskStatus;
  status_reason: string;
  created_by: string;
  output: string | null;
  confidence: number | null;
  input_tokens: number;
  output_tokens: number;
  cost_usd: string;
  attempts: number;
  created_at: Date;
  dispatched_at: Date | null;
  finished_at: Date | null;
  updated_at: Date;
}

export const toTask = (r: Row): Task => ({
  id: r.id,
  tenantId: r.tenant_id,
  parentId: r.parent_id,
  rootId: r.root_id,
  agentId: r.agent_id,
  requestedAgent: r.requested_agent,
  capability: r.capability,
  input: r.input,
  priority: r.priority,
  agentType: r.agent_type,
  poolId: r.pool_id,
  shard: r.shard,
  shardKey: r.shard_key,
  executorId: r.executor_id,
  swarmRuleId: r.swarm_rule_id,
  status: r.status,
  statusReason: r.status_reason,
  createdBy: r.created_by,
  output: r.output,
  confidence: r.confidence,
  inputTokens: r.input_tokens,
  outputTokens: r.output_tokens,
  costUsd: Number(r.cost_usd),
  attempts: r.attempts,
  createdAt: r.created_at.toISOString(),
  dispatchedAt: r.dispatched_at?.toISOString() ?? null,
  finishedAt: r.finished_at?.toISOString() ?? null,
  updatedAt: r.updated_at.toISOString(),
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const TERMINAL_SQL = `(${TERMINAL.map((s) => `'${s}'`).join(', ')})`;

export interface NewTask {
  id: string;
  tenantId: string;
  parentId: string | null;
  rootId: string;
  requestedAgent: string | null;
  capability: string | null;
  input: string;
  priority: Priority;
  idempotencyKey: string | null;
  createdBy: string;
  queueName: string | null;
  /** Where it runs (src/pools/service.ts route); absent: decided at dispatch. */
  agentType?: AgentType | null;
  poolId?: string | null;
  shard?: number | null;
  shardKey?: string | null;
  swarmRuleId?: string | null;
}

export interface ListFilter {
  status?: TaskStatus | undefined;
  agent?: string | undefined;
  priority?: Priority | undefined;
  since?: string | undefined;
  until?: string | undefined;
  parentId?: string | undefined;
  limit: number;
  /** `createdAt` or `-createdAt` (newest first). */
  sort: string;
  /** The nextCursor of the previous page (src/db/keyset.ts). */
  cursor?: string | undefined;
}

/** The order the task list offers (index tasks_list). */
export const TASK_SORTS = {
  createdAt: [
    { sql: 't.created_at', type: 'timestamptz' },
    { sql: 't.id', type: 'uuid' },
  ],
} satisfies Sorts;

export class TaskStore {
  readonly db: Db;
  constructor(db: Db) {
    this.db = db;
  }

  async insert(q: Queryable, t: NewTask): Promise<Task> {
    const r = await q.query<Row>(
      `INSERT INTO tasks (id, tenant_id, parent_id, root_id, requested_agent, capability, input, priority, idempotency_key, created_by, queue_name, agent_type, pool_id, shard, shard_key, swarm_rule_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) RETURNING *`,
      [
        t.id,
        t.tenantId,
        t.parentId,
        t.rootId,
        t.requestedAgent,
        t.capability,
        t.input,
        t.priority,
        t.idempotencyKey,
        t.createdBy,
        t.queueName,
        t.agentType ?? null,
        t.poolId ?? null,
        t.shard ?? null,
        t.shardKey ?? null,
        t.swarmRuleId ?? null,
      ],
    );
    return toTask(r.rows[0] as Row);
  }

  async byIdempotencyKey(q: Queryable, tenantId: string, key: string): Promise<Task | undefined> {
    const r = await q.query<Row>('SELECT * FROM tasks WHERE tenant_id = $1 AND idempotency_key = $2', [tenantId, key]);
    return r.rows[0] ? toTask(r.rows[0]) : undefined;
  }

  async get(tenantId: string, id: string, q: Queryable = this.db): Promise<Task> {
    if (!UUID.test(id)) throw new NotFoundError('Task');
    const r = await q.query<Row>('SELECT * FROM tasks WHERE tenant_id = $1 AND id = $2', [tenantId, id]);
    if (!r.rows[0]) throw new NotFoundError('Task');
    return toTask(r.rows[0]);
  }

  async list(tenantId: string, f: ListFilter): Promise<{ items: Task[]; nextCursor: string | null }> {
    const where = ['t.tenant_id = $1'];
    const vals: unknown[] = [tenantId];
    const add = (sql: string, v: unknown) => {
      vals.push(v);
      where.push(sql.replace('?', `$${vals.length}`));
    };
    if (f.status) add('t.status = ?', f.status);
    if (f.priority) add('t.priority = ?', f.priority);
    if (f.since) add('t.created_at >= ?', f.since);
    if (f.until) add('t.created_at < ?', f.until);
    if (f.parentId) add('t.parent_id = ?', f.parentId);
    if (f.agent) {
      if (UUID.test(f.agent)) add('t.agent_id = ?', f.agent);
      else add('t.agent_id IN (SELECT id FROM agents WHERE tenant_id = $1 AND name = ?)', f.agent);
    }
    return keysetPage(this.db, {
      sort: f.sort,
      sorts: TASK_SORTS,
      limit: f.limit,
      cursor: f.cursor,
      from: 'tasks t',
      select: 't.*',
      where,
      vals,
      map: (x) => toTask(x as unknown as Row),
    });
  }

  /** Moves a task to `status` unless it already ended; false when it had (cancel won the race). */
  async setStatus(q: Queryable, tenantId: string, id: string, status: TaskStatus, reason: string, extra: Record<string, unknown> = {}): Promise<boolean> {
    const sets = ['status = $3', 'status_reason = $4', 'updated_at = now()'];
    const vals: unknown[] = [tenantId, id, status, reason];
    if (TERMINAL.includes(status)) sets.push('finished_at = now()');
    for (const [col, v] of Object.entries(extra)) {
      vals.push(v);
      sets.push(`${col} = $${vals.length}`);
    }
    const r = await q.query(`UPDATE tasks SET ${sets.join(', ')} WHERE tenant_id = $1 AND id = $2 AND status NOT IN ${TERMINAL_SQL}`, vals);
    return r.rowCount === 1;
  }

  async event(q: Queryable, tenantId: string, taskId: string, step: string, kind: string, detail: Record<string, unknown> = {}): Promise<void> {
    await q.query('INSERT INTO task_events (tenant_id, task_id, step, kind, detail) VALUES ($1, $2, $3, $4, $5)', [
      tenantId,
      taskId,
      step,
      kind,
      JSON.stringify(detail),
    ]);
  }

  async trace(tenantId: string, taskId: string, afterId = 0, limit = 1000): Promise<TraceEvent[]> {
    const r = await this.db.query<{ id: string; step: string; kind: string; detail: Record<string, unknown>; created_at: Date }>(
      'SELECT id, step, kind, detail, created_at FROM task_events WHERE tenant_id = $1 AND task_id = $2 AND id > $3 ORDER BY id LIMIT $4',
      [tenantId, taskId, afterId, limit],
    );
    return r.rows.map((e) => ({ id: Number(e.id), step: e.step, kind: e.kind, detail: e.detail, at: e.created_at.toISOString() }));
  }

  async message(q: Queryable, tenantId: string, taskId: string, role: TaskMessage['role'], content: string): Promise<void> {
    await q.query('INSERT INTO task_messages (tenant_id, task_id, role, content) VALUES ($1, $2, $3, $4)', [tenantId, taskId, role, content]);
  }

  async messages(tenantId: string, taskId: string): Promise<TaskMessage[]> {
    const r = await this.db.query<{ role: TaskMessage['role']; content: string; created_at: Date }>(
      'SELECT role, content, created_at FROM task_messages WHERE tenant_id = $1 AND task_id = $2 ORDER BY id',
      [tenantId, taskId],
    );
    return r.rows.map((m) => ({ role: m.role, content: m.content, at: m.created_at.toISOString() }));
  }

  /** Tokens and cost of the task from the broker's usage rows (llm_usage.task_id). */
  async usage(q: Queryable, tenantId: string, taskId: string): Promise<{ inputTokens: number; outputTokens: number; costUsd: number; calls: number }> {
    const r = await q.query<{ i: string; o: string; c: string; n: number }>(
      `SELECT coalesce(sum(input_tokens), 0) AS i, coalesce(sum(output_tokens), 0) AS o, coalesce(sum(cost_usd), 0) AS c, count(*)::int AS n
         FROM llm_usage WHERE tenant_id = $1 AND task_id = $2`,
      [tenantId, taskId],
    );
    const x = r.rows[0];
    return { inputTokens: Number(x?.i ?? 0), outputTokens: Number(x?.o ?? 0), costUsd: Number(x?.c ?? 0), calls: x?.n ?? 0 };
  }
}
