import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { appendAudit } from '../audit/log.ts';
import type { Db } from '../db/pool.ts';
import { cancelWorkflow, enqueueWorkflow, workflowStatus } from '../durable/engine.ts';
import { ConflictError, NotFoundError, QuotaExceededError, ValidationError } from '../errors.ts';
import type { PoolService } from '../pools/service.ts';
import type { SwarmRuleService } from '../swarms/rules.ts';
import type { AgentService } from './agents.ts';
import type { ApprovalService } from './approvals.ts';
import { POOL_QUEUE_PREFIX, type TaskQueues } from './queues.ts';
import type { ListFilter, TaskStore } from './store.ts';
import { AGENT_TYPES, DBOS_PRIORITY, PRIORITIES, TERMINAL, type AgentType, type Approval, type Task, type TraceEvent } from './types.ts';
import { taskWorkflow } from './workflow.ts';

/** The queue partition of a task: its shard on a pool's queue, its tenant on the tenant queues. */
const partitionOf = (queue: string, t: { tenantId: string; shard: number | null }) => (queue.startsWith(POOL_QUEUE_PREFIX) ? String(t.shard ?? 0) : t.tenantId);

/** Enqueues a new root task's workflow on its tenant's (or its pool shard's) partition (idempotent: workflow id = task id). */
export async function enqueueTask(task: Pick<Task, 'id' | 'tenantId' | 'priority' | 'shard'>, queue: string): Promise<void> {
  await enqueueWorkflow(
    taskWorkflow,
    task.id,
    { queue, partitionKey: partitionOf(queue, task), priority: DBOS_PRIORITY[task.priority] },
    { tenantId: task.tenantId, taskId: task.id, depth: 0, chainDeadlineMs: null },
  );
}

export const taskInput = z
  .strictObject({
    agent: z.string().min(1).max(64).optional().describe('Agent name or id; otherwise dispatch picks by capability'),
    agentType: z
      .enum(AGENT_TYPES)
      .optional()
      .describe("The agent type to run it (routes it to that type's executor pool); default: the named or matching agent's"),
    shardKey: z.string().min(1).max(200).optional().describe("Picks the pool shard (the same key, the same shard); default: the task's id"),
    capability: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/)
      .optional()
      .describe('What the task needs, e.g. "summarise"'),
    input: z.string().min(1).max(20_000),
    priority: z.enum(PRIORITIES).default('normal'),
    parentId: z.uuid().optional().describe('A task of this tenant this one belongs to'),
  })
  .refine((t) => t.agent !== undefined || t.capability !== undefined, { message: 'name an agent or a capability', path: ['capability'] });
export type TaskInput = z.input<typeof taskInput>;

export interface Audited {
  actor: string;
  requestId?: string | undefined;
}

/**
 * Tasks as people and scripts see them (issue 8, item 1): create (idempotent on the Idempotency-Key),
 * list, detail, trace, messages, approve/reject, cancel. Creation enqueues the task's workflow on the
 * tenant's partition of the queue for its quota (queues.ts).
 */
export class TaskService {
  readonly #db: Db;
  readonly store: TaskStore;
  readonly agents: AgentService;
  readonly approvals: ApprovalService;
  readonly #queues: TaskQueues;
  readonly #pools: PoolService;
  readonly #swarms: SwarmRuleService | undefined;

  constructor(o: {
    db: Db;
    store: TaskStore;
    agents: AgentService;
    approvals: ApprovalService;
    queues: TaskQueues;
    pools: PoolService;
    swarms?: SwarmRuleService;
  }) {
    this.#swarms = o.swarms;
    this.#db = o.db;
    this.store = o.store;
    this.agents = o.agents;
    this.approvals = o.approvals;
    this.#queues = o.queues;
    this.#pools = o.pools;
  }

  /**
   * The agent type a new task is for: the one it gives, else its named agent's, else that of the agent
   * its capability would be dispatched to now (none yet: decided at dispatch).
   */
  async #agentType(tenantId: string, input: z.infer<typeof taskInput>): Promise<AgentType | null> {
    if (input.agent) {
      const named = await this.agents.get(tenantId, input.agent).catch((err: unknown) => {
        if (err instanceof NotFoundError) return null;
        throw err;
      });
      if (named && input.agentType && named.agentType !== input.agentType) {
        throw new ValidationError(`Agent "${named.name}" is of type ${named.agentType}, not ${input.agentType}.`, [
          { path: 'agentType', message: `agent "${named.name}" is of type ${named.agentType}` },
        ]);
      }
      return input.agentType ?? named?.agentType ?? null;
    }
    if (input.agentType) return input.agentType;
    const p = await this.agents.pick(tenantId, { agent: null, capability: input.capability ?? null });
    return 'error' in p ? null : p.agent.agentType;
  }

  /** Creates and enqueues a task; with an idempotency key already used, returns that task (created=false). */
  async create(tenantId: string, raw: TaskInput, by: Audited & { idempotencyKey?: string | undefined }): Promise<{ task: Task; created: boolean }> {
    const r = await this.insert(tenantId, raw, by);
    if (r.created) await enqueueTask(r.task, r.queue);
    return { task: r.task, created: r.created };
  }

  /**
   * Creates a task's row without enqueueing its workflow (a DBOS step may not start workflows: the calling
   * workflow enqueues it with `enqueueTask`; housekeeping enqueues a row left without one).
   */
  async insert(
    tenantId: string,
    raw: TaskInput,
    by: Audited & { idempotencyKey?: string | undefined },
  ): Promise<{ task: Task; created: boolean; queue: string }> {
    const input = taskInput.parse(raw);
    const key = by.idempotencyKey ?? null;
    if (key !== null) {
      const existing = await this.store.byIdempotencyKey(this.#db, tenantId, key);
      if (existing) return { task: existing, created: false, queue: '' };
    }
    const q = await this.#db.query<{ max_concurrent_tasks: number; slug: string }>('SELECT max_concurrent_tasks, slug FROM tenants WHERE id = $1', [tenantId]);
    const tenant = q.rows[0];
    if (!tenant) throw new NotFoundError('Tenant');
    if (tenant.max_concurrent_tasks < 1)
      throw new QuotaExceededError(`Tenant "${tenant.slug}" may run no tasks (quota maxConcurrentTasks is 0): ask a platform admin to raise it.`);
    const id = randomUUID();
    // A capability the tenant decomposes (a swarm rule) makes it a swarm: its children are routed, not it.
    const swarm =
      !input.agent && !input.agentType && input.capability && this.#swarms ? await this.#swarms.forCapability(this.#db, tenantId, input.capability) : undefined;
    // Its pool and shard (a draining pool refuses it here); pooled tasks wait on their pool's queue.
    const route = swarm
      ? { agentType: null, pool: null, shard: null, shardKey: input.shardKey ?? null }
      : await this.#pools.route(this.#db, tenantId, { agentType: await this.#agentType(tenantId, input), shardKey: input.shardKey ?? null, taskId: id });
    const queue = route.pool ? await this.#queues.poolQueue(route.pool.id, route.pool.perShard) : await this.#queues.queue(tenant.max_concurrent_tasks);
    let task: Task;
    try {
      task = await this.#db.tx(async (tx) => {
        let rootId: string = id;
        if (input.parentId) {
          const parent = await this.store.get(tenantId, input.parentId, tx).catch((err: unknown) => {
            if (err instanceof NotFoundError) throw new NotFoundError('Parent task');
            throw err;
          });
          rootId = parent.rootId;
        }
        const t = await this.store.insert(tx, {
          id,
          tenantId,
          parentId: input.parentId ?? null,
          rootId,
          requestedAgent: input.agent ?? null,
          capability: input.capability ?? null,
          input: input.input,
          priority: input.priority,
          idempotencyKey: key,
          createdBy: by.actor,
          queueName: queue,
          agentType: route.agentType,
          poolId: route.pool?.id ?? null,
          shard: route.shard,
          shardKey: route.shardKey,
          swarmRuleId: swarm?.id ?? null,
        });
        await this.store.event(tx, tenantId, id, 'create', 'completed', {
          queue,
          priority: input.priority,
          ...(route.pool ? { poolId: route.pool.id, shard: route.shard } : {}),
          ...(swarm ? { swarmRule: swarm.name } : {}),
        });
        await appendAudit(tx, {
          actor: by.actor,
          tenantId,
          action: 'task.create',
          target: `task:${id}`,
          decision: 'success',
          detail: {
            agent: input.agent ?? null,
            capability: input.capability ?? null,
            priority: input.priority,
            parentId: input.parentId ?? null,
            idempotencyKey: key,
          },
          requestId: by.requestId ?? null,
        });
        return t;
      });
    } catch (err) {
      // Two requests with one key at once: the unique index lets one in; the other returns its task.
      if ((err as { code?: string }).code === '23505' && key !== null) {
        const existing = await this.store.byIdempotencyKey(this.#db, tenantId, key);
        if (existing) return { task: existing, created: false, queue: '' };
      }
      throw err;
    }
    return { task, created: true, queue };
  }

  /** Re-enqueues tasks whose row exists but whose workflow does not (a crash between the two writes). */
  async enqueueMissing(): Promise<number> {
    const r = await this.#db.query<{ id: string; tenant_id: string; queue_name: string; priority: Task['priority']; shard: number | null }>(
      `SELECT t.id, t.tenant_id, t.queue_name, t.priority, t.shard FROM tasks t
        WHERE t.status = 'queued' AND t.parent_id IS NULL AND t.queue_name IS NOT NULL AND t.created_at < now() - interval '5 seconds'
          AND NOT EXISTS (SELECT 1 FROM dbos.workflow_status w WHERE w.workflow_uuid = t.id::text)
        LIMIT 100`,
    );
    for (const t of r.rows) await enqueueTask({ id: t.id, tenantId: t.tenant_id, priority: t.priority, shard: t.shard }, t.queue_name);
    return r.rows.length;
  }

  get(tenantId: string, id: string): Promise<Task> {
    return this.store.get(tenantId, id);
  }

  list(tenantId: string, f: ListFilter): Promise<{ items: Task[]; nextCursor: string | null }> {
    return this.store.list(tenantId, f);
  }

  async trace(tenantId: string, id: string, afterId = 0): Promise<TraceEvent[]> {
    await this.store.get(tenantId, id);
    return this.store.trace(tenantId, id, afterId);
  }

  async messages(tenantId: string, id: string): Promise<{ role: string; content: string; at: string }[]> {
    await this.store.get(tenantId, id);
    return this.store.messages(tenantId, id);
  }

  async approvalsOf(tenantId: string, id: string): Promise<Approval[]> {
    await this.store.get(tenantId, id);
    return this.approvals.forTask(tenantId, id);
  }

  async decide(
    tenantId: string,
    id: string,
    decision: 'approved' | 'rejected',
    opts: Audited & { comment?: string | undefined; approvalId?: string | undefined },
  ): Promise<{ task: Task; approvals: Approval[] }> {
    await this.store.get(tenantId, id);
    const approvals = await this.approvals.decide(tenantId, id, {
      decision,
      by: opts.actor,
      comment: opts.comment ?? null,
      approvalId: opts.approvalId,
      requestId: opts.requestId,
    });
    return { task: await this.store.get(tenantId, id), approvals };
  }

  /** Cancels a task and its children: the row ends now; the workflow stops at its next step and the running step sees its signal abort. */
  async cancel(tenantId: string, id: string, by: Audited & { reason?: string | undefined }): Promise<Task> {
    const t = await this.store.get(tenantId, id);
    if (TERMINAL.includes(t.status)) {
      if (t.status === 'cancelled') return t;
      throw new ConflictError(`The task already ended (${t.status}).`, 'task_ended');
    }
    await this.#db.tx(async (tx) => {
      const reason = `cancelled by ${by.actor}${by.reason ? `: ${by.reason}` : ''}`;
      const ids = await tx.query<{ id: string }>(
        `WITH RECURSIVE tree AS (SELECT id FROM tasks WHERE tenant_id = $1 AND id = $2 UNION ALL SELECT c.id FROM tasks c JOIN tree ON c.parent_id = tree.id WHERE c.tenant_id = $1) SELECT id FROM tree`,
        [tenantId, id],
      );
      for (const r of ids.rows) {
        if (await this.store.setStatus(tx, tenantId, r.id, 'cancelled', reason))
          await this.store.event(tx, tenantId, r.id, 'finish', 'cancelled', { by: by.actor });
      }
      await tx.query(
        `UPDATE task_approvals SET status = 'expired', decided_at = now(), decided_by = $3 WHERE tenant_id = $1 AND task_id = $2 AND status = 'pending'`,
        [tenantId, id, by.actor],
      );
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'task.cancel',
        target: `task:${id}`,
        decision: 'success',
        detail: { reason: by.reason ?? null, tasks: ids.rows.length },
        requestId: by.requestId ?? null,
      });
    });
    await cancelWorkflow(id);
    return this.store.get(tenantId, id);
  }

  /**
   * Ends rows whose workflow ended without saying so (an error outside any step, or a cancel from the
   * DBOS side): the row is what people see and must not stay "executing" forever.
   */
  async reconcileEnded(): Promise<number> {
    const r = await this.#db.query<{ id: string; tenant_id: string; status: string }>(
      `SELECT t.id, t.tenant_id, w.status FROM tasks t JOIN dbos.workflow_status w ON w.workflow_uuid = t.id::text
        WHERE t.status NOT IN ('completed', 'failed', 'cancelled', 'expired') AND w.status IN ('ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED') LIMIT 100`,
    );
    for (const t of r.rows) {
      const st = t.status === 'CANCELLED' ? 'cancelled' : 'failed';
      const ok = await this.store.setStatus(this.#db, t.tenant_id, t.id, st, `workflow ended ${t.status.toLowerCase()}`);
      if (ok) await this.store.event(this.#db, t.tenant_id, t.id, 'finish', st, { workflowStatus: t.status });
    }
    return r.rows.length;
  }

  /** DBOS's view of the task's workflow, for diagnostics. */
  workflowStatus(id: string): Promise<string | undefined> {
    return workflowStatus(id);
  }
}
