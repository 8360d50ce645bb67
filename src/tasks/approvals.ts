import { appendAudit } from '../audit/log.ts';
import type { Db, Queryable } from '../db/pool.ts';
import { ConflictError, NotFoundError } from '../errors.ts';
import { sendToWorkflow } from '../durable/engine.ts';
import type { Approval, TurnResult } from './types.ts';
import type { ApprovalWebhooks } from './webhook.ts';

/**
 * Approvals (issue 8, item 4). A task parks when the broker answered a grant request of its sandbox with
 * requires_approval (a tool_approvals row whose context names the task) or when its executor saw the
 * gateway ask (exec). The workflow waits in DBOS recv on topic `approval:<id>` until the approval's
 * expiry; a decision is a DBOS send with the approval id as idempotency key, so double clicks are harmless.
 */
export const approvalTopic = (id: string) => `approval:${id}`;

export interface ApprovalDecision {
  decision: 'approved' | 'rejected';
  by: string;
  comment: string | null;
}

interface Row {
  id: string;
  task_id: string;
  tool_approval_id: string | null;
  kind: 'tool' | 'exec';
  tool: string;
  summary: string;
  status: Approval['status'];
  expires_at: Date;
  decided_by: string | null;
  decided_at: Date | null;
  comment: string | null;
  created_at: Date;
}

const toApproval = (r: Row): Approval => ({
  id: r.id,
  taskId: r.task_id,
  toolApprovalId: r.tool_approval_id,
  kind: r.kind,
  tool: r.tool,
  summary: r.summary,
  status: r.status,
  expiresAt: r.expires_at.toISOString(),
  decidedBy: r.decided_by,
  decidedAt: r.decided_at?.toISOString() ?? null,
  comment: r.comment,
  createdAt: r.created_at.toISOString(),
});

export class ApprovalService {
  readonly #db: Db;
  readonly webhooks: ApprovalWebhooks;
  readonly #decided: ((tenantId: string, taskId: string, a: Approval, decision: ApprovalDecision['decision'] | 'expired') => void)[] = [];

  constructor(o: { db: Db; webhooks: ApprovalWebhooks }) {
    this.#db = o.db;
    this.webhooks = o.webhooks;
  }

  /** Called after an approval was decided or expired (the gateway executor answers OpenClaw's exec approvals). */
  onDecided(fn: (tenantId: string, taskId: string, a: Approval, decision: ApprovalDecision['decision'] | 'expired') => void): void {
    this.#decided.push(fn);
  }

  /**
   * Records the approvals a turn left behind (broker tool approvals naming this task, exec approvals the
   * executor saw) and returns every pending approval of the task. Idempotent (a step may run again).
   */
  async collect(
    q: Queryable,
    tenantId: string,
    taskId: string,
    ttlSeconds: number,
    seen: TurnResult['approvals'] = [],
  ): Promise<{ pending: Approval[]; created: Approval[] }> {
    const created = await q.query<Row>(
      `INSERT INTO task_approvals (tenant_id, task_id, tool_approval_id, kind, tool, summary, expires_at)
       SELECT ta.tenant_id, $2, ta.id, 'tool', ta.tool, ta.explanation, now() + make_interval(secs => $3)
         FROM tool_approvals ta
        WHERE ta.tenant_id = $1 AND ta.status = 'pending' AND ta.context->>'taskId' = $4
       ON CONFLICT (task_id, tool_approval_id) DO NOTHING RETURNING *`,
      [tenantId, taskId, ttlSeconds, taskId],
    );
    const rows = [...created.rows];
    for (const e of seen) {
      const r = await q.query<Row>(
        `INSERT INTO task_approvals (tenant_id, task_id, kind, tool, summary, expires_at) VALUES ($1, $2, 'exec', $3, $4, now() + make_interval(secs => $5)) RETURNING *`,
        [tenantId, taskId, e.tool, e.summary.slice(0, 2000), ttlSeconds],
      );
      rows.push(...r.rows);
    }
    for (const a of rows) {
      await appendAudit(q, {
        actor: 'system',
        tenantId,
        action: 'task.approval.requested',
        target: `task:${taskId}`,
        decision: 'requires_approval',
        detail: { approvalId: a.id, tool: a.tool, kind: a.kind, toolApprovalId: a.tool_approval_id },
      });
    }
    return { pending: await this.forTask(tenantId, taskId, q, 'pending'), created: rows.map(toApproval) };
  }

  async forTask(tenantId: string, taskId: string, q: Queryable = this.#db, status?: Approval['status']): Promise<Approval[]> {
    const r = await q.query<Row>(
      `SELECT * FROM task_approvals WHERE tenant_id = $1 AND task_id = $2 ${status ? 'AND status = $3' : ''} ORDER BY created_at, id`,
      status ? [tenantId, taskId, status] : [tenantId, taskId],
    );
    return r.rows.map(toApproval);
  }

  /** The tenant's inbox: pending approvals, oldest first, with their task's input. */
  async inbox(tenantId: string, limit = 100): Promise<(Approval & { taskInput: string })[]> {
    const r = await this.#db.query<Row & { input: string }>(
      `SELECT a.*, t.input FROM task_approvals a JOIN tasks t ON t.id = a.task_id AND t.tenant_id = a.tenant_id
        WHERE a.tenant_id = $1 AND a.status = 'pending' ORDER BY a.created_at LIMIT $2`,
      [tenantId, limit],
    );
    return r.rows.map((x) => ({ ...toApproval(x), taskInput: x.input }));
  }

  /**
   * Approves or rejects a task's pending approvals (or the one named). A repeat of the same decision
   * answers with the recorded one (double click); the opposite decision after the fact is a conflict.
   */
  async decide(
    tenantId: string,
    taskId: string,
    d: ApprovalDecision & { approvalId?: string | undefined; requestId?: string | undefined },
  ): Promise<Approval[]> {
    const decided = await this.#db.tx(async (tx) => {
      const t = await tx.query('SELECT 1 FROM tasks WHERE tenant_id = $1 AND id = $2 FOR UPDATE', [tenantId, taskId]);
      if (!t.rowCount) throw new NotFoundError('Task');
      const all = await this.forTask(tenantId, taskId, tx);
      const targets = all.filter((a) => (d.approvalId ? a.id === d.approvalId : true));
      if (d.approvalId && targets.length === 0) throw new NotFoundError('Approval');
      const pending = targets.filter((a) => a.status === 'pending');
      if (pending.length === 0) {
        const last = targets.at(-1);
        if (last && last.status === d.decision) return { changed: [] as Approval[], answer: targets };
        throw new ConflictError(
          last
            ? `The approval was already ${last.status}${last.decidedBy ? ` by ${last.decidedBy}` : ''}.`
            : 'The task has no approval waiting for a decision.',
          'no_pending_approval',
        );
      }
      const changed: Approval[] = [];
      for (const a of pending) {
        const r = await tx.query<Row>(
          `UPDATE task_approvals SET status = $3, decided_by = $4, decided_at = now(), comment = $5 WHERE tenant_id = $1 AND id = $2 AND status = 'pending' RETURNING *`,
          [tenantId, a.id, d.decision, d.by, d.comment],
        );
        if (a.toolApprovalId) {
          await tx.query(`UPDATE tool_approvals SET status = $3, decided_at = now(), decided_by = $4 WHERE tenant_id = $1 AND id = $2 AND status = 'pending'`, [
            tenantId,
            a.toolApprovalId,
            d.decision === 'approved' ? 'approved' : 'denied',
            d.by,
          ]);
        }
        await appendAudit(tx, {
          actor: d.by,
          tenantId,
          action: 'task.approval.decided',
          target: `task:${taskId}`,
          decision: d.decision,
          detail: { approvalId: a.id, tool: a.tool, comment: d.comment },
          requestId: d.requestId ?? null,
        });
        if (r.rows[0]) changed.push(toApproval(r.rows[0]));
      }
      return { changed, answer: changed };
    });
    for (const a of decided.changed) {
      await sendToWorkflow(taskId, approvalTopic(a.id), { decision: d.decision, by: d.by, comment: d.comment } satisfies ApprovalDecision, approvalTopic(a.id));
      for (const fn of this.#decided) fn(tenantId, taskId, a, d.decision);
      void this.webhooks.deliver(tenantId, {
        type: 'approval.decided',
        taskId,
        approvalId: a.id,
        tool: a.tool,
        decision: d.decision,
        decidedBy: d.by,
        comment: d.comment,
      });
    }
    return decided.answer;
  }

  /** Marks an unanswered approval expired (the workflow's recv timed out). */
  async expire(q: Queryable, tenantId: string, approvalId: string): Promise<void> {
    const r = await q.query<Row>(
      `UPDATE task_approvals SET status = 'expired', decided_at = now(), decided_by = 'system' WHERE tenant_id = $1 AND id = $2 AND status = 'pending' RETURNING *`,
      [tenantId, approvalId],
    );
    const a = r.rows[0];
    if (a?.tool_approval_id)
      await q.query(
        `UPDATE tool_approvals SET status = 'expired', decided_at = now(), decided_by = 'system' WHERE tenant_id = $1 AND id = $2 AND status = 'pending'`,
        [tenantId, a.tool_approval_id],
      );
    if (a)
      await appendAudit(q, {
        actor: 'system',
        tenantId,
        action: 'task.approval.decided',
        target: `task:${a.task_id}`,
        decision: 'expired',
        detail: { approvalId },
      });
    if (a) for (const fn of this.#decided) fn(tenantId, a.task_id, toApproval(a), 'expired');
  }
}
