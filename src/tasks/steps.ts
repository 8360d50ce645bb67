import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Db, Queryable } from '../db/pool.ts';
import { stepSignal } from '../durable/engine.ts';
import { ConflictError } from '../errors.ts';
import { NoExecutorError, type ExecutorClaims } from '../pools/executors.ts';
import type { PoolService } from '../pools/service.ts';
import type { ExecutorClaim } from '../pools/types.ts';
import { policyMet, type SwarmPolicy, type SwarmStep } from '../swarms/types.ts';
import type { AgentService } from './agents.ts';
import type { ApprovalService } from './approvals.ts';
import type { DelegationRequest } from './delegation.ts';
import { parseDelegation } from './delegation.ts';
import { recall, remember } from './memory.ts';
import type { TaskStore } from './store.ts';
import type { Agent, Approval, TaskExecutor, TaskSettings, TaskStatus, TurnResult } from './types.ts';

/** What a workflow run knows about its task (its DBOS arguments). */
export interface TaskRunArgs {
  tenantId: string;
  taskId: string;
  /** 0 for a task people created; children are one deeper. */
  depth: number;
  /** Epoch ms by which the whole delegated chain must be done (set by the root); null on the root. */
  chainDeadlineMs: number | null;
  /** A child's parent task (its workflow id): told the child's outcome as soon as it ends. */
  parentId?: string;
}

/** Finds the memories a task starts with (its agent's best matches of the input). */
export type RecallFn = (
  tenantId: string,
  agentId: string,
  text: string,
  ctx: { actor: string; agent: string; taskId: string | null },
) => Promise<{ id: number; content: string }[]>;

/** What dispatch found: the agent, the task's input and capability, and the memories it recalled. */
export interface Dispatched {
  agent: Agent;
  input: string;
  capability: string | null;
  memories: string[];
  /** When the work began (epoch ms), recorded with the step: the task's time budget counts from here. */
  startedAt: number;
  /** The executor pool and shard whose executors run its turns; null: the tenant's shared instance. */
  pool?: { poolId: string; shard: number } | null;
}

/** A swarm as its dispatch read it: the rule's steps and policy, the parent's input and shard key. */
export interface SwarmPlan {
  id: string;
  name: string;
  steps: SwarmStep[];
  policy: SwarmPolicy;
  quorum: number | null;
  input: string;
  shardKey: string | null;
}

/** What executor pools give the workflow: routing (pools), executor claims, and who this replica is. */
export interface PoolDispatch {
  pools: PoolService;
  claims: ExecutorClaims;
  owner: string;
}

/** An approval the task waits for. */
export type Parked = Pick<Approval, 'id' | 'tool' | 'expiresAt'>;

/** What evaluating a turn's output decided. */
export interface Evaluation {
  output: string;
  delegation: DelegationRequest | null;
  confidence: number;
}

export interface TaskOutcome {
  taskId: string;
  status: TaskStatus;
  output: string | null;
  reason: string;
}

/**
 * The bodies of the workflow's steps (issue 8): each one is a DBOS step, so it runs once per task
 * unless it failed or the process died inside it. They write the task row, the trace and messages.
 */
export class TaskSteps {
  readonly db: Db;
  readonly store: TaskStore;
  readonly agents: AgentService;
  readonly approvals: ApprovalService;
  readonly settings: TaskSettings;
  readonly log: Logger;
  /** Swappable: the gateway executor in production; tests install stand-ins. */
  executor: TaskExecutor;
  /** Writes the broker's queued usage rows (so a task's tokens are counted when it is evaluated). */
  readonly flushUsage: () => Promise<void>;
  readonly #recall: RecallFn;
  readonly pools: PoolDispatch | undefined;

  constructor(o: {
    db: Db;
    store: TaskStore;
    agents: AgentService;
    approvals: ApprovalService;
    settings: TaskSettings;
    log: Logger;
    executor: TaskExecutor;
    flushUsage: () => Promise<void>;
    recall?: RecallFn;
    pools?: PoolDispatch;
  }) {
    this.pools = o.pools;
    this.db = o.db;
    this.store = o.store;
    this.agents = o.agents;
    this.approvals = o.approvals;
    this.settings = o.settings;
    this.log = o.log;
    this.executor = o.executor;
    this.flushUsage = o.flushUsage;
    this.#recall = o.recall ?? ((tenantId, agentId, text) => recall(this.db, tenantId, agentId, text));
  }

  trace(a: TaskRunArgs, step: string, kind: string, detail: Record<string, unknown> = {}): Promise<void> {
    return this.store.event(this.db, a.tenantId, a.taskId, step, kind, detail);
  }

  /**
   * Picks the agent (capability match and trust), recalls its memories for the input and marks the task
   * dispatched: one step and one write transaction (bench: a task costs its SQL round trips and commits).
   */
  async dispatch(a: TaskRunArgs): Promise<Dispatched | { error: string } | { swarm: SwarmPlan; startedAt: number }> {
    const t = await this.store.get(a.tenantId, a.taskId);
    if (t.swarmRuleId) {
      // A swarm: no agent of its own; its rule (read now, so the run keeps it even if the rule changes) decomposes it.
      const r = await this.db.query<{ id: string; name: string; steps: SwarmStep[]; policy: SwarmPolicy; quorum: number | null }>(
        'SELECT id, name, steps, policy, quorum FROM swarm_rules WHERE tenant_id = $1 AND id = $2',
        [a.tenantId, t.swarmRuleId],
      );
      const rule = r.rows[0];
      if (!rule) return { error: 'its swarm rule was removed before it started' };
      await this.db.tx(async (tx) => {
        if (await this.#dispatchedBefore(tx, a)) return;
        await this.store.setStatus(tx, a.tenantId, a.taskId, 'dispatched', `swarm rule ${rule.name}`, { dispatched_at: new Date() });
        await this.store.event(tx, a.tenantId, a.taskId, 'dispatch', 'completed', {
          swarmRule: rule.name,
          policy: rule.policy,
          ...(rule.quorum ? { quorum: rule.quorum } : {}),
        });
      });
      return { swarm: { ...rule, input: t.input, shardKey: t.shardKey }, startedAt: Date.now() };
    }
    // This step again after its transaction committed but before DBOS recorded it (a crash or a takeover in
    // between, docs/adr/0009-replicas.md): it keeps the agent and pool it chose then and writes nothing twice.
    const before = await this.#dispatchedBefore(this.db, a, false);
    if (before?.agentId) {
      const agent = await this.agents.get(a.tenantId, before.agentId).catch(() => null);
      if (agent) {
        const memories = await this.#recall(a.tenantId, agent.id, t.input, { actor: `task:${a.taskId}`, agent: agent.name, taskId: a.taskId });
        const pool = before.poolId && typeof before.shard === 'number' ? { poolId: before.poolId, shard: before.shard } : null;
        return { agent, input: t.input, capability: t.capability, memories: memories.map((x) => x.content), startedAt: before.at.getTime(), pool };
      }
    }
    const pick = await this.agents.pick(a.tenantId, { agent: t.requestedAgent, capability: t.capability, agentType: t.agentType });
    if ('error' in pick) return { error: pick.error };
    // A task created before its type was known (or a child task) is routed now, by its agent's type.
    let pool = t.poolId !== null && t.shard !== null ? { poolId: t.poolId, shard: t.shard } : null;
    const routed: Record<string, unknown> = { agent_type: pick.agent.agentType };
    if (!pool && this.pools) {
      let r;
      try {
        r = await this.pools.pools.route(this.db, a.tenantId, { agentType: pick.agent.agentType, shardKey: t.shardKey, taskId: t.id });
      } catch (err) {
        if (err instanceof ConflictError) return { error: err.message };
        throw err;
      }
      if (r.pool && r.shard !== null) {
        pool = { poolId: r.pool.id, shard: r.shard };
        Object.assign(routed, { pool_id: pool.poolId, shard: pool.shard });
      }
    }
    const memories = await this.#recall(a.tenantId, pick.agent.id, t.input, { actor: `task:${a.taskId}`, agent: pick.agent.name, taskId: a.taskId });
    await this.db.tx(async (tx) => {
      if (await this.#dispatchedBefore(tx, a)) return;
      await this.store.setStatus(tx, a.tenantId, a.taskId, 'dispatched', `agent ${pick.agent.name}: ${pick.reason}`, {
        agent_id: pick.agent.id,
        dispatched_at: new Date(),
        ...routed,
      });
      await this.store.event(tx, a.tenantId, a.taskId, 'dispatch', 'completed', {
        agentId: pick.agent.id,
        agent: pick.agent.name,
        agentType: pick.agent.agentType,
        riskClass: pick.agent.riskClass,
        reason: pick.reason,
        executor: this.executor.name,
        ...(pool ? { poolId: pool.poolId, shard: pool.shard } : {}),
      });
      await this.store.event(tx, a.tenantId, a.taskId, 'recall', 'completed', { memories: memories.length, ids: memories.map((x) => x.id) });
    });
    return { agent: pick.agent, input: t.input, capability: t.capability, memories: memories.map((x) => x.content), startedAt: Date.now(), pool };
  }

  /**
   * The dispatch this task's workflow already recorded, if any (read under the task's row lock inside a
   * transaction, so two runs of the step cannot both write it).
   */
  async #dispatchedBefore(q: Queryable, a: TaskRunArgs, lock = true): Promise<{ agentId?: string; poolId?: string; shard?: number; at: Date } | null> {
    if (lock) await q.query('SELECT 1 FROM tasks WHERE tenant_id = $1 AND id = $2 FOR UPDATE', [a.tenantId, a.taskId]);
    const r = await q.query<{ detail: { agentId?: string; poolId?: string; shard?: number }; at: Date }>(
      `SELECT detail, created_at AS at FROM task_events WHERE tenant_id = $1 AND task_id = $2 AND step = 'dispatch' AND kind = 'completed' ORDER BY id LIMIT 1`,
      [a.tenantId, a.taskId],
    );
    const row = r.rows[0];
    return row ? { ...row.detail, at: row.at } : null;
  }

  /**
   * Waits for a free executor of the task's pool and shard (docs/adr/0014-executor-pools.md) and holds it
   * for the next execute step; an error when the task can never get one (its pool removed, a risk mismatch).
   */
  async claimExecutor(a: TaskRunArgs, d: Dispatched): Promise<{ claim: ExecutorClaim; waitedMs: number } | { error: string }> {
    const t0 = Date.now();
    const p = this.pools;
    if (!p || !d.pool) return { error: 'no executor pool' };
    const pool = d.pool;
    let claim: ExecutorClaim;
    try {
      claim = await p.claims.claim({
        tenantId: a.tenantId,
        poolId: pool.poolId,
        shard: pool.shard,
        taskId: a.taskId,
        owner: p.owner,
        riskClass: d.agent.riskClass,
        signal: stepSignal(),
        onWait: (why) => void this.trace(a, 'dispatch', 'executor_wait', { poolId: pool.poolId, shard: pool.shard, why }).catch(() => undefined),
      });
    } catch (err) {
      if (err instanceof NoExecutorError) return { error: err.message };
      throw err;
    }
    await this.db.tx(async (tx) => {
      await tx.query('UPDATE tasks SET executor_id = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2', [a.tenantId, a.taskId, claim.id]);
      await this.store.event(tx, a.tenantId, a.taskId, 'dispatch', 'executor', {
        executorId: claim.id,
        poolId: claim.poolId,
        shard: claim.shard,
        slot: claim.slot,
        gateway: claim.gateway,
      });
    });
    return { claim, waitedMs: Date.now() - t0 };
  }

  async execute(
    a: TaskRunArgs,
    agent: Agent,
    input: string,
    prompt: string,
    turn: number,
    attempt: number,
    executor?: ExecutorClaim,
    approvedExec: readonly string[] = [],
  ): Promise<TurnResult> {
    if (!executor) return this.#execute(a, agent, input, prompt, turn, attempt, undefined, approvedExec);
    // The executor stays this task's while the turn runs (the lease renewed; released after, whatever happens).
    const p = this.pools;
    if (!p) throw new Error('executor pools are not configured in this process');
    if (!(await p.claims.renew(executor, a.taskId)))
      throw new Error(`lost executor ${executor.gateway} of shard ${executor.shard} before the turn (its lease lapsed); claiming again`);
    const renew = setInterval(() => void p.claims.renew(executor, a.taskId).catch(() => undefined), Math.max(100, Math.floor(p.claims.ttlMs / 3)));
    renew.unref();
    try {
      return await this.#execute(a, agent, input, prompt, turn, attempt, executor, approvedExec);
    } finally {
      clearInterval(renew);
      await p.claims
        .release(executor, a.taskId)
        .catch((err: unknown) => this.log.warn({ task_id: a.taskId, err: (err as Error).message }, 'could not release a pool executor; its lease lapses'));
    }
  }

  async #execute(
    a: TaskRunArgs,
    agent: Agent,
    input: string,
    prompt: string,
    turn: number,
    attempt: number,
    executor: ExecutorClaim | undefined,
    approvedExec: readonly string[],
  ): Promise<TurnResult> {
    const moved = await this.db.tx(async (tx) => {
      const ok = await this.store.setStatus(tx, a.tenantId, a.taskId, 'executing', turn > 1 ? 'resumed after approval' : `attempt ${attempt}`);
      if (!ok) return false;
      await tx.query('UPDATE tasks SET attempts = attempts + 1 WHERE tenant_id = $1 AND id = $2', [a.tenantId, a.taskId]);
      await this.store.event(tx, a.tenantId, a.taskId, 'execute', 'started', { turn, attempt, executor: this.executor.name });
      await this.store.message(tx, a.tenantId, a.taskId, 'user', prompt);
      return true;
    });
    if (!moved) throw new Error('the task already ended (cancelled)');
    const signal = stepSignal();
    const res = await this.executor.run(
      {
        tenantId: a.tenantId,
        taskId: a.taskId,
        agent,
        sessionKey: `agent:main:task-${a.taskId}`,
        input,
        prompt,
        attempt,
        ...(executor ? { executor } : {}),
        ...(approvedExec.length ? { approvedExec } : {}),
      },
      { signal, trace: (kind, detail) => this.trace(a, 'execute', kind, detail ?? {}) },
    );
    signal.throwIfAborted();
    // The answer and the "completed" trace event are written by the next step (settle), in its one
    // transaction: the answer is already durable as this step's recorded result.
    return res;
  }

  /**
   * After a turn: records its answer and the approvals it left behind; when any is pending (or decided but not yet acted
   * on), parks the task (waiting_approval) and returns them. Otherwise evaluates the turn's output in the
   * same transaction: output, tokens and cost from the broker's usage rows, a confidence score, the
   * agent's skill outcome, a memory, and (without delegation) the task's completion.
   */
  async settle(
    a: TaskRunArgs,
    d: Dispatched,
    turn: { turn: number; attempt: number; result: TurnResult },
    attempts: number,
    canDelegate: boolean,
  ): Promise<{ park: Parked[] } | { evaluated: Evaluation }> {
    await this.flushUsage();
    const { output, approvals: seen } = turn.result;
    const parsed = parseDelegation(output);
    const text = parsed.rest;
    const confidence = confidenceOf(text, attempts, parsed.error !== undefined);
    const delegation = canDelegate ? (parsed.request ?? null) : null;
    const skill = d.capability ?? d.agent.agentType;
    const r = await this.db.tx(async (tx): Promise<{ park: Parked[]; created: Approval[] } | { evaluated: Evaluation }> => {
      // This step again for a turn it already settled: the process (or replica) died after this transaction
      // committed but before DBOS recorded the step, and the workflow's new run repeats it. What it wrote
      // then (the message, the events, the agent's outcome, the memory) is not written twice.
      await tx.query('SELECT 1 FROM tasks WHERE tenant_id = $1 AND id = $2 FOR UPDATE', [a.tenantId, a.taskId]);
      const again =
        ((
          await tx.query(
            `SELECT 1 FROM task_events WHERE tenant_id = $1 AND task_id = $2 AND step = 'execute' AND kind = 'completed' AND detail->>'turn' = $3 AND detail->>'attempt' = $4 LIMIT 1`,
            [a.tenantId, a.taskId, String(turn.turn), String(turn.attempt)],
          )
        ).rowCount ?? 0) > 0;
      if (!again) {
        await this.store.message(tx, a.tenantId, a.taskId, 'assistant', output);
        await this.store.event(tx, a.tenantId, a.taskId, 'execute', 'completed', {
          turn: turn.turn,
          attempt: turn.attempt,
          outputChars: output.length,
          approvalsSeen: seen?.length ?? 0,
        });
      }
      const c = await this.approvals.collect(tx, a.tenantId, a.taskId, this.settings.approvalTtlSeconds, seen);
      // Approvals already decided but not yet acted on by this workflow (no "approved" trace names them)
      // count too: after a crash, this step can run again after a person decided, and the decision must
      // still lead to the resumed turn rather than be skipped (found by test/tasks-restart.test.ts).
      const unconsumed = await tx.query<{ id: string; tool: string; expires_at: Date }>(
        `SELECT a.id, a.tool, a.expires_at FROM task_approvals a
          WHERE a.tenant_id = $1 AND a.task_id = $2 AND a.status IN ('approved', 'rejected')
            AND NOT EXISTS (SELECT 1 FROM task_events e WHERE e.tenant_id = a.tenant_id AND e.task_id = a.task_id
                             AND e.step = 'approval' AND e.kind = 'approved'
                             AND e.detail->'approvals' @> jsonb_build_array(jsonb_build_object('id', a.id::text)))
          ORDER BY a.created_at, a.id`,
        [a.tenantId, a.taskId],
      );
      const park = [
        ...c.pending.map((p) => ({ id: p.id, tool: p.tool, expiresAt: p.expiresAt })),
        ...unconsumed.rows.filter((u) => !c.pending.some((p) => p.id === u.id)).map((u) => ({ id: u.id, tool: u.tool, expiresAt: u.expires_at.toISOString() })),
      ];
      if (park.length > 0) {
        if (c.pending.length > 0) {
          await this.store.setStatus(
            tx,
            a.tenantId,
            a.taskId,
            'waiting_approval',
            `waiting for a person to approve ${c.pending.map((p) => p.tool).join(', ')}`,
          );
          // Only for approvals this run created: when the process died after this transaction committed but
          // before DBOS recorded the step, the step runs again and finds them already there (no second
          // "requested" in the trace; found by test/tasks-restart.test.ts in CI).
          if (c.created.length > 0)
            await this.store.event(tx, a.tenantId, a.taskId, 'approval', 'requested', {
              approvals: c.created.map((p) => ({ id: p.id, tool: p.tool, expiresAt: p.expiresAt })),
            });
        }
        return { park, created: c.created };
      }
      if (again) return { evaluated: { output: text, delegation, confidence } };
      const u = await this.store.usage(tx, a.tenantId, a.taskId);
      await tx.query(
        'UPDATE tasks SET output = $3, confidence = $4, input_tokens = $5, output_tokens = $6, cost_usd = $7, updated_at = now() WHERE tenant_id = $1 AND id = $2',
        [a.tenantId, a.taskId, text, confidence, u.inputTokens, u.outputTokens, u.costUsd],
      );
      await this.agents.recordOutcome(tx, a.tenantId, d.agent.id, skill, text.length > 0);
      await remember(tx, {
        tenantId: a.tenantId,
        agentId: d.agent.id,
        taskId: a.taskId,
        content: `Task: ${d.input.slice(0, 500)}\nResult: ${text.slice(0, 1500)}`,
        importance: confidence * 0.8,
      });
      await this.store.event(tx, a.tenantId, a.taskId, 'evaluate', 'completed', {
        confidence,
        skill,
        inputTokens: u.inputTokens,
        outputTokens: u.outputTokens,
        costUsd: u.costUsd,
        modelCalls: u.calls,
        ...(parsed.error ? { delegationError: parsed.error } : {}),
        ...(parsed.request && !canDelegate ? { delegationRefused: 'maximum depth reached' } : {}),
      });
      if (!delegation) {
        await this.store.setStatus(tx, a.tenantId, a.taskId, 'completed', 'done');
        await this.store.event(tx, a.tenantId, a.taskId, 'finish', 'completed', {});
      }
      return { evaluated: { output: text, delegation, confidence } };
    });
    if ('evaluated' in r) return r;
    for (const p of r.created)
      void this.approvals.webhooks.deliver(a.tenantId, {
        type: 'approval.requested',
        taskId: a.taskId,
        approvalId: p.id,
        kind: p.kind,
        tool: p.tool,
        summary: p.summary,
        expiresAt: p.expiresAt,
      });
    return { park: r.park };
  }

  async approvalState(a: TaskRunArgs, approvalId: string): Promise<{ status: Approval['status']; by: string | null; comment: string | null }> {
    const r = await this.db.query<{ status: Approval['status']; decided_by: string | null; comment: string | null }>(
      'SELECT status, decided_by, comment FROM task_approvals WHERE tenant_id = $1 AND id = $2',
      [a.tenantId, approvalId],
    );
    const row = r.rows[0];
    return { status: row?.status ?? 'expired', by: row?.decided_by ?? null, comment: row?.comment ?? null };
  }

  async expireApproval(a: TaskRunArgs, approvalId: string): Promise<void> {
    await this.db.tx((tx) => this.approvals.expire(tx, a.tenantId, approvalId));
  }

  /**
   * Marks the approvals acted on, and returns the exec commands among them: the next turn resolves them at once
   * if the gateway asks again, because the turn that asked may have been lost with its worker (see
   * GatewayExecutor, "a change of worker").
   */
  async resumed(a: TaskRunArgs, decisions: { id: string; by: string }[]): Promise<{ exec: string[] }> {
    await this.trace(a, 'approval', 'approved', { approvals: decisions });
    const r = await this.db.query<{ summary: string }>(
      `SELECT summary FROM task_approvals WHERE tenant_id = $1 AND task_id = $2 AND id = ANY ($3::uuid[]) AND kind = 'exec' AND status = 'approved' ORDER BY created_at, id`,
      [a.tenantId, a.taskId, decisions.map((d) => d.id)],
    );
    return { exec: r.rows.map((x) => x.summary) };
  }

  /**
   * Decomposes a swarm: one child task per step of its rule, for the step's agent type and capability (each
   * routed to that type's pool at its dispatch, sharing the parent's shard key), and marks the parent delegated.
   */
  async decompose(a: TaskRunArgs, plan: SwarmPlan): Promise<string[]> {
    return this.db.tx(async (tx) => {
      const parent = await this.store.get(a.tenantId, a.taskId, tx);
      const children: { id: string; agentType: string; capability: string }[] = [];
      for (const st of plan.steps) {
        const id = randomUUID();
        const input = st.input ? st.input.replaceAll('{{input}}', plan.input) : plan.input;
        await this.store.insert(tx, {
          id,
          tenantId: a.tenantId,
          parentId: a.taskId,
          rootId: parent.rootId,
          requestedAgent: null,
          capability: st.capability,
          input,
          priority: parent.priority,
          idempotencyKey: null,
          createdBy: `task:${a.taskId}`,
          queueName: null,
          agentType: st.agentType,
          shardKey: plan.shardKey,
        });
        await this.store.event(tx, a.tenantId, id, 'create', 'completed', { parentId: a.taskId, swarmRule: plan.name, agentType: st.agentType });
        children.push({ id, agentType: st.agentType, capability: st.capability });
      }
      await this.store.setStatus(
        tx,
        a.tenantId,
        a.taskId,
        'delegated',
        `swarm of ${children.length} child task(s), policy ${plan.policy}${plan.quorum ? ` ${plan.quorum}` : ''}`,
      );
      await this.store.event(tx, a.tenantId, a.taskId, 'swarm', 'decomposed', { rule: plan.name, policy: plan.policy, quorum: plan.quorum, children });
      return children.map((c) => c.id);
    });
  }

  /** Creates the child tasks (rows) and marks the parent delegated; the workflow starts them. */
  async delegate(a: TaskRunArgs, req: DelegationRequest): Promise<string[]> {
    return this.db.tx(async (tx) => {
      const parent = await this.store.get(a.tenantId, a.taskId, tx);
      const ids: string[] = [];
      for (const c of req.tasks) {
        const id = randomUUID();
        await this.store.insert(tx, {
          id,
          tenantId: a.tenantId,
          parentId: a.taskId,
          rootId: parent.rootId,
          requestedAgent: c.agent ?? null,
          capability: c.capability ?? null,
          input: c.input,
          priority: parent.priority,
          idempotencyKey: null,
          createdBy: `task:${a.taskId}`,
          queueName: null,
          agentType: c.agentType ?? null,
          shardKey: parent.shardKey,
        });
        await this.store.event(tx, a.tenantId, id, 'create', 'completed', { parentId: a.taskId });
        ids.push(id);
      }
      await this.store.setStatus(tx, a.tenantId, a.taskId, 'delegated', `waiting for ${ids.length} child task(s)`);
      await this.store.event(tx, a.tenantId, a.taskId, 'delegate', 'started', { children: ids });
      return ids;
    });
  }

  /**
   * Fan-in: the parent's output is its own text and each completed child's (failed ones named); its status
   * follows the policy (all: every child completed; any: one; quorum: at least that many).
   */
  async aggregate(
    a: TaskRunArgs,
    own: string,
    children: TaskOutcome[],
    policy: { policy: SwarmPolicy; quorum: number | null; step?: 'delegate' | 'swarm' } = { policy: 'all', quorum: null },
  ): Promise<TaskOutcome> {
    const failed = children.filter((c) => c.status !== 'completed');
    const done = children.length - failed.length;
    const met = policyMet(policy.policy, policy.quorum, done, children.length);
    const output = [
      own,
      ...children.map((c) => (c.status === 'completed' ? `[child ${c.taskId}] ${c.output ?? ''}` : `[child ${c.taskId} ${c.status}] ${c.reason}`)),
    ]
      .filter((x) => x.length > 0)
      .join('\n\n');
    const step = policy.step ?? 'delegate';
    return this.db.tx(async (tx) => {
      await this.store.event(tx, a.tenantId, a.taskId, step, step === 'swarm' ? 'aggregated' : 'completed', {
        policy: policy.policy,
        ...(policy.quorum ? { quorum: policy.quorum } : {}),
        completed: done,
        failed: failed.length,
        met,
        children: children.map((c) => ({ id: c.taskId, status: c.status })),
      });
      const status: TaskStatus = met ? 'completed' : 'failed';
      const rule =
        policy.policy === 'all' ? '' : ` (policy ${policy.policy}${policy.quorum ? ` ${policy.quorum}` : ''}: ${done} of ${children.length} completed)`;
      const reason = failed.length ? `child task(s) ${failed.map((f) => `${f.taskId} ${f.status}`).join(', ')}${rule}` : 'done';
      await this.store.setStatus(tx, a.tenantId, a.taskId, status, reason, { output });
      await this.store.event(tx, a.tenantId, a.taskId, 'finish', status, { reason });
      return { taskId: a.taskId, status, output, reason };
    });
  }

  /** The outcomes of those children that ended (their rows), for a parent that heard nothing from them. */
  async childOutcomes(a: TaskRunArgs, ids: string[]): Promise<TaskOutcome[]> {
    const r = await this.db.query<{ id: string; status: TaskStatus; output: string | null; status_reason: string }>(
      `SELECT id, status, output, status_reason FROM tasks WHERE tenant_id = $1 AND parent_id = $2 AND id = ANY ($3::uuid[]) AND status IN ('completed', 'failed', 'cancelled', 'expired')`,
      [a.tenantId, a.taskId, ids],
    );
    return r.rows.map((x) => ({ taskId: x.id, status: x.status, output: x.output, reason: x.status_reason }));
  }

  /**
   * Cancels children (and everything below them) whose outcome the parent's policy no longer needs; their
   * workflows are cancelled by the caller. The outcomes as they stand after: a child that ended first keeps its own.
   */
  async cancelChildren(a: TaskRunArgs, ids: string[], why: string, step: 'delegate' | 'swarm'): Promise<TaskOutcome[]> {
    return this.db.tx(async (tx) => {
      const reason = `cancelled: ${why}`;
      const tree = await tx.query<{ id: string }>(
        `WITH RECURSIVE tree AS (SELECT id FROM tasks WHERE tenant_id = $1 AND parent_id = $2 AND id = ANY ($3::uuid[]) UNION ALL SELECT c.id FROM tasks c JOIN tree ON c.parent_id = tree.id WHERE c.tenant_id = $1) SELECT id FROM tree`,
        [a.tenantId, a.taskId, ids],
      );
      for (const t of tree.rows) {
        if (await this.store.setStatus(tx, a.tenantId, t.id, 'cancelled', reason))
          await this.store.event(tx, a.tenantId, t.id, 'finish', 'cancelled', { by: `task:${a.taskId}`, reason: why });
      }
      await tx.query(
        `UPDATE task_approvals SET status = 'expired', decided_at = now(), decided_by = $3 WHERE tenant_id = $1 AND task_id = ANY ($2::uuid[]) AND status = 'pending'`,
        [a.tenantId, tree.rows.map((t) => t.id), `task:${a.taskId}`],
      );
      await this.store.event(tx, a.tenantId, a.taskId, step, 'children_cancelled', { children: ids, reason: why });
      const r = await tx.query<{ id: string; status: TaskStatus; output: string | null; status_reason: string }>(
        'SELECT id, status, output, status_reason FROM tasks WHERE tenant_id = $1 AND id = ANY ($2::uuid[])',
        [a.tenantId, ids],
      );
      return r.rows.map((x) => ({ taskId: x.id, status: x.status, output: x.output, reason: x.status_reason }));
    });
  }

  async finish(a: TaskRunArgs, status: TaskStatus, reason: string, agent: Agent | null): Promise<TaskOutcome> {
    return this.db.tx(async (tx) => {
      // Already finished so (this step again after a crash between its commit and its checkpoint): as it was.
      const before = await this.store.get(a.tenantId, a.taskId, tx);
      if (before.status === status && before.statusReason === reason)
        return { taskId: a.taskId, status: before.status, output: before.output, reason: before.statusReason };
      await this.store.setStatus(tx, a.tenantId, a.taskId, status, reason);
      if (agent && status === 'failed') {
        const t = await this.store.get(a.tenantId, a.taskId, tx);
        await this.agents.recordOutcome(tx, a.tenantId, agent.id, t.capability ?? agent.agentType, false);
      }
      await this.store.event(tx, a.tenantId, a.taskId, 'finish', status, { reason });
      const t = await this.store.get(a.tenantId, a.taskId, tx);
      return { taskId: a.taskId, status: t.status, output: t.output, reason: t.statusReason };
    });
  }
}

/**
 * A coarse confidence in [0, 1]: an empty answer is 0; a short one, retries and a malformed delegation
 * block lower it. Stored per task and used as the importance of the memory the task leaves.
 */
export function confidenceOf(text: string, attempts: number, malformed: boolean): number {
  if (text.trim().length === 0) return 0;
  let c = 0.9;
  if (text.trim().length < 20) c -= 0.2;
  c -= 0.15 * Math.max(0, attempts - 1);
  if (malformed) c -= 0.2;
  return Math.round(Math.min(1, Math.max(0.05, c)) * 100) / 100;
}
