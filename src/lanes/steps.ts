import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { appendAudit } from '../audit/log.ts';
import type { ObjectStore } from '../backup/types.ts';
import type { Db } from '../db/pool.ts';
import type { GatewayGate } from '../ingress/access.ts';
import type { TaskService } from '../tasks/service.ts';
import type { Task } from '../tasks/types.ts';
import type { LaneService } from './service.ts';
import { runCheck } from './checks.ts';
import { buildSummary, runPrefix } from './summary.ts';
import type { LaneStep, RunStatus } from './types.ts';

/** A run's workflow arguments: the lane's steps as they were when the run was created. */
export interface LaneRunArgs {
  tenantId: string;
  runId: string;
  steps: LaneStep[];
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

/**
 * The lane workflow's step bodies (src/lanes/workflow.ts). Each is one checkpointed DBOS step: idempotent,
 * because a step interrupted by a crash runs again.
 */
export class LaneSteps {
  readonly #db: Db;
  readonly #lanes: LaneService;
  readonly #tasks: TaskService;
  readonly #store: ObjectStore;
  readonly #gate: GatewayGate;
  readonly #flushUsage: () => Promise<void>;
  readonly #approvalTtlSeconds: number;
  readonly #tmpDir: string;
  readonly #log: Logger;

  constructor(o: {
    db: Db;
    lanes: LaneService;
    tasks: TaskService;
    store: ObjectStore;
    gate: GatewayGate;
    flushUsage: () => Promise<void>;
    approvalTtlSeconds: number;
    tmpDir: string;
    log: Logger;
  }) {
    this.#db = o.db;
    this.#lanes = o.lanes;
    this.#tasks = o.tasks;
    this.#store = o.store;
    this.#gate = o.gate;
    this.#flushUsage = o.flushUsage;
    this.#approvalTtlSeconds = o.approvalTtlSeconds;
    this.#tmpDir = o.tmpDir;
    this.#log = o.log;
  }

  /** The run starts: refused (recorded failed) while the tenant is suspended, through the gate tasks use. */
  async begin(a: LaneRunArgs): Promise<{ ok: true } | { error: string }> {
    try {
      await this.#gate.admitSystem(a.tenantId, 'task', { actor: 'system:lanes' });
    } catch (err) {
      return { error: message(err) };
    }
    const r = await this.#db.query(
      `UPDATE lane_runs SET status = 'running', started_at = coalesce(started_at, now()) WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'running') RETURNING 1`,
      [a.tenantId, a.runId],
    );
    if (r.rowCount === 0) return { error: 'the run had already ended' };
    return { ok: true };
  }

  /** Parks step `i` for a person: returns when the approval expires (epoch ms). */
  async park(a: LaneRunArgs, i: number): Promise<number> {
    await this.#db.tx(async (tx) => {
      await tx.query(
        `UPDATE lane_run_steps SET status = 'waiting_approval', started_at = coalesce(started_at, now()) WHERE tenant_id = $1 AND run_id = $2 AND idx = $3 AND status = 'pending'`,
        [a.tenantId, a.runId, i],
      );
      await tx.query(`UPDATE lane_runs SET status = 'waiting_approval' WHERE tenant_id = $1 AND id = $2 AND status = 'running'`, [a.tenantId, a.runId]);
    });
    return Date.now() + this.#approvalTtlSeconds * 1000;
  }

  async approvalState(a: LaneRunArgs, i: number): Promise<{ decision: 'approved' | 'rejected' | null; reason: string }> {
    const r = await this.#db.query<{ status: string; decided_by: string | null; status_reason: string }>(
      'SELECT status, decided_by, status_reason FROM lane_run_steps WHERE tenant_id = $1 AND run_id = $2 AND idx = $3',
      [a.tenantId, a.runId, i],
    );
    const row = r.rows[0];
    if (!row || row.decided_by === null) return { decision: null, reason: '' };
    if (row.status === 'failed') return { decision: 'rejected', reason: row.status_reason };
    await this.#db.query(`UPDATE lane_runs SET status = 'running' WHERE tenant_id = $1 AND id = $2 AND status = 'waiting_approval'`, [a.tenantId, a.runId]);
    return { decision: 'approved', reason: row.status_reason };
  }

  async expireApproval(a: LaneRunArgs, i: number): Promise<string> {
    const reason = `approval expired unanswered after ${this.#approvalTtlSeconds} s`;
    await this.#db.tx(async (tx) => {
      const r = await tx.query(
        `UPDATE lane_run_steps SET status = 'failed', status_reason = $4, finished_at = now() WHERE tenant_id = $1 AND run_id = $2 AND idx = $3 AND status = 'waiting_approval' AND decided_by IS NULL`,
        [a.tenantId, a.runId, i, reason],
      );
      if (r.rowCount)
        await appendAudit(tx, {
          actor: 'system:lanes',
          tenantId: a.tenantId,
          action: 'lane.step.expire',
          target: `lane-run:${a.runId}`,
          decision: 'deny',
          detail: { step: i },
          requestId: null,
        });
    });
    return reason;
  }

  /** Creates step `i`'s task (idempotent on the run and step); the workflow enqueues it. */
  async createTask(a: LaneRunArgs, i: number): Promise<{ task: Pick<Task, 'id' | 'tenantId' | 'priority' | 'shard'>; queue: string } | { error: string }> {
    const step = a.steps[i];
    if (!step) return { error: 'no such step' };
    let r: Awaited<ReturnType<TaskService['insert']>>;
    try {
      r = await this.#tasks.insert(
        a.tenantId,
        { ...(step.agent ? { agent: step.agent } : {}), ...(step.capability ? { capability: step.capability } : {}), input: step.input ?? '' },
        { actor: `lane-run:${a.runId}`, idempotencyKey: `lane-run:${a.runId}:${i}` },
      );
    } catch (err) {
      return { error: message(err) };
    }
    let queue = r.queue;
    if (!r.created)
      queue =
        (await this.#db.query<{ queue_name: string }>('SELECT queue_name FROM tasks WHERE tenant_id = $1 AND id = $2', [a.tenantId, r.task.id])).rows[0]
          ?.queue_name ?? '';
    await this.#db.tx(async (tx) => {
      await tx.query(
        `UPDATE lane_run_steps SET status = 'running', task_id = $4, started_at = coalesce(started_at, now()) WHERE tenant_id = $1 AND run_id = $2 AND idx = $3`,
        [a.tenantId, a.runId, i, r.task.id],
      );
      await tx.query(`UPDATE lane_runs SET status = 'running' WHERE tenant_id = $1 AND id = $2 AND status IN ('running', 'waiting_approval')`, [
        a.tenantId,
        a.runId,
      ]);
    });
    return { task: { id: r.task.id, tenantId: r.task.tenantId, priority: r.task.priority, shard: r.task.shard }, queue };
  }

  /** Records step `i` from its task: status, timings, tokens, cost, model calls (its usage rows), its output as an artifact. */
  async recordStep(a: LaneRunArgs, i: number, taskId: string): Promise<{ ok: boolean; reason: string }> {
    await this.#flushUsage();
    const task = await this.#tasks.get(a.tenantId, taskId);
    const u = await this.#db.query<{ i: string; o: string; c: string; n: number }>(
      `SELECT coalesce(sum(input_tokens), 0) AS i, coalesce(sum(output_tokens), 0) AS o, coalesce(sum(cost_usd), 0) AS c, count(*)::int AS n
         FROM llm_usage WHERE tenant_id = $1 AND task_id IN (SELECT id::text FROM tasks WHERE tenant_id = $1 AND root_id = $2)`,
      [a.tenantId, taskId],
    );
    const usage = u.rows[0] ?? { i: '0', o: '0', c: '0', n: 0 };
    const ok = task.status === 'completed';
    const reason = ok ? '' : `task ${task.status}${task.statusReason ? `: ${task.statusReason}` : ''}`;
    const step = a.steps[i];
    if (ok && task.output && step) {
      const run = await this.#lanes.getRun(a.tenantId, a.runId);
      await this.#put(a, `${runPrefix(a.tenantId, run.lane, run.createdAt)}/step-${i}-${step.name}.txt`, task.output, i);
    }
    await this.#db.query(
      `UPDATE lane_run_steps SET status = $4, status_reason = $5, input_tokens = $6, output_tokens = $7, cost_usd = $8, model_calls = $9, finished_at = coalesce($10, now()) WHERE tenant_id = $1 AND run_id = $2 AND idx = $3`,
      [a.tenantId, a.runId, i, ok ? 'succeeded' : 'failed', reason, usage.i, usage.o, usage.c, usage.n, task.finishedAt],
    );
    return { ok, reason };
  }

  /**
   * Runs check step `i` (src/lanes/checks.ts): Clawplane computes its findings from its own rows, no task and no
   * model call; they are stored on the step row and as the step's artifact (`step-<i>-<name>.json`). The step
   * succeeds when the check ran, whatever it found (findings are its result); one that cannot run fails it.
   */
  async runCheck(a: LaneRunArgs, i: number): Promise<{ ok: boolean; reason: string; findings: { warn: number; fail: number } }> {
    const step = a.steps[i];
    const none = { warn: 0, fail: 0 };
    if (!step?.check) return { ok: false, reason: 'no such check step', findings: none };
    await this.#db.tx(async (tx) => {
      await tx.query(
        `UPDATE lane_run_steps SET status = 'running', started_at = coalesce(started_at, now()) WHERE tenant_id = $1 AND run_id = $2 AND idx = $3 AND status IN ('pending', 'waiting_approval')`,
        [a.tenantId, a.runId, i],
      );
      await tx.query(`UPDATE lane_runs SET status = 'running' WHERE tenant_id = $1 AND id = $2 AND status IN ('running', 'waiting_approval')`, [
        a.tenantId,
        a.runId,
      ]);
    });
    let findings: Awaited<ReturnType<typeof runCheck>>;
    try {
      // The budget check reads the usage rows: what the broker has buffered counts too.
      if (step.check === 'budgets') await this.#flushUsage();
      findings = await runCheck(this.#db, a.tenantId, step.check, new Date());
      const run = await this.#lanes.getRun(a.tenantId, a.runId);
      await this.#put(a, `${runPrefix(a.tenantId, run.lane, run.createdAt)}/step-${i}-${step.name}.json`, `${JSON.stringify(findings, null, 2)}\n`, i);
    } catch (err) {
      const reason = `check "${step.check}" could not run: ${message(err)}`;
      await this.#db.query(
        `UPDATE lane_run_steps SET status = 'failed', status_reason = $4, finished_at = now() WHERE tenant_id = $1 AND run_id = $2 AND idx = $3`,
        [a.tenantId, a.runId, i, reason],
      );
      return { ok: false, reason, findings: none };
    }
    const count = (sev: string) => findings.filter((f) => f.severity === sev).length;
    const counts = { warn: count('warn'), fail: count('fail') };
    const reason =
      counts.warn + counts.fail
        ? `found ${[counts.fail ? `${counts.fail} failing` : '', counts.warn ? `${counts.warn} warning` : ''].filter(Boolean).join(' and ')}`
        : 'all ok';
    await this.#db.query(
      `UPDATE lane_run_steps SET status = 'succeeded', status_reason = $4, findings = $5, finished_at = now() WHERE tenant_id = $1 AND run_id = $2 AND idx = $3`,
      [a.tenantId, a.runId, i, reason, JSON.stringify(findings)],
    );
    return { ok: true, reason, findings: counts };
  }

  /** Writes one object to the store and records it for billing (idempotent on the key). */
  async #put(a: LaneRunArgs, key: string, body: string, step: number | null): Promise<number> {
    await mkdir(this.#tmpDir, { recursive: true, mode: 0o700 });
    const file = path.join(this.#tmpDir, `${a.runId}-${step ?? 'summary'}.tmp`);
    try {
      await writeFile(file, body, { mode: 0o600 });
      const size = await this.#store.put(key, file);
      await this.#db.query(
        `INSERT INTO lane_artifacts (tenant_id, run_id, object_key, size_bytes) VALUES ($1, $2, $3, $4) ON CONFLICT (object_key) DO UPDATE SET size_bytes = EXCLUDED.size_bytes`,
        [a.tenantId, a.runId, key, size],
      );
      return size;
    } finally {
      await rm(file, { force: true });
    }
  }

  /**
   * Ends the run: the failed step (when `failedAt` is given and it has no end yet) is marked failed, every step
   * still pending is skipped with the reason, then summary.json is written and the run row gets its totals.
   */
  async finish(
    a: LaneRunArgs,
    status: Extract<RunStatus, 'succeeded' | 'failed'>,
    reason: string,
    failedAt?: number,
  ): Promise<{ status: string; reason: string }> {
    await this.#db.tx(async (tx) => {
      if (failedAt !== undefined) {
        await tx.query(
          `UPDATE lane_run_steps SET status = 'failed', status_reason = CASE WHEN status_reason = '' THEN $4 ELSE status_reason END, finished_at = coalesce(finished_at, now()) WHERE tenant_id = $1 AND run_id = $2 AND idx = $3 AND status NOT IN ('succeeded', 'failed')`,
          [a.tenantId, a.runId, failedAt, reason],
        );
      }
      await tx.query(
        `UPDATE lane_run_steps SET status = 'skipped', status_reason = $3 WHERE tenant_id = $1 AND run_id = $2 AND status IN ('pending', 'waiting_approval', 'running')`,
        [a.tenantId, a.runId, `skipped: ${reason || 'the run ended'}`],
      );
    });
    const run = await this.#lanes.getRun(a.tenantId, a.runId);
    const finishedAt = run.finishedAt ?? new Date().toISOString();
    const prefix = runPrefix(a.tenantId, run.lane, run.createdAt);
    const arts = await this.#db.query<{ object_key: string; size_bytes: string }>(
      'SELECT object_key, size_bytes FROM lane_artifacts WHERE tenant_id = $1 AND run_id = $2',
      [a.tenantId, a.runId],
    );
    const byStep = new Map<number, number>();
    for (const x of arts.rows) {
      const m = /\/step-(\d+)-[^/]*$/.exec(x.object_key);
      if (m) byStep.set(Number(m[1]), Number(x.size_bytes));
    }
    const checks = new Map(a.steps.flatMap((st, i) => (st.check ? [[i, st.check] as const] : [])));
    const summary = buildSummary(run, status, reason, finishedAt, byStep, checks);
    const key = `${prefix}/summary.json`;
    let summaryKey: string | null = key;
    try {
      await this.#put(a, key, `${JSON.stringify(summary, null, 2)}\n`, null);
    } catch (err) {
      // The run's rows keep everything the summary says; a store that is down must not leave the run open.
      this.#log.error({ tenant_id: a.tenantId, run_id: a.runId, err: message(err) }, 'lane summary could not be written');
      summaryKey = null;
    }
    await this.#db.tx(async (tx) => {
      const r = await tx.query(
        `UPDATE lane_runs SET status = $3, status_reason = $4, finished_at = $5, summary_key = $6, artifact_bytes = $7, input_tokens = $8, output_tokens = $9, cost_usd = $10, model_calls = $11
          WHERE tenant_id = $1 AND id = $2 AND status NOT IN ('succeeded', 'failed', 'cancelled')`,
        [
          a.tenantId,
          a.runId,
          status,
          reason,
          finishedAt,
          summaryKey,
          summary.artifactBytes,
          summary.tokens.input,
          summary.tokens.output,
          summary.costUsd,
          summary.modelCalls,
        ],
      );
      const findings = summary.findings.warn + summary.findings.fail ? { findings: summary.findings } : {};
      if (r.rowCount)
        await appendAudit(tx, {
          actor: 'system:lanes',
          tenantId: a.tenantId,
          action: 'lane.run.finish',
          target: `lane-run:${a.runId}`,
          decision: status === 'succeeded' ? 'success' : 'failure',
          detail: { lane: run.lane, status, reason, jobCount: summary.jobCount, costUsd: summary.costUsd, ...findings },
          requestId: null,
        });
    });
    return { status, reason };
  }
}
