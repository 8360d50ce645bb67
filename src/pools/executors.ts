import type { Db } from '../db/pool.ts';
import type { AgentType, RiskClass } from '../tasks/types.ts';
import { poolSandboxName } from './placement.ts';
import { shardOf, type ExecutorClaim, type PoolState } from './types.ts';

/** How often a turn waiting for a free executor of its shard (or for its pool to resume) asks again. */
const CLAIM_POLL_MS = 100;

/** Why a task can never get an executor of its pool (the task fails with this reason). */
export class NoExecutorError extends Error {}

/** Sleeps unless the signal aborts; the abort listener goes with the timer (a claim may poll for hours on one signal). */
const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error);
    const onAbort = () => (clearTimeout(t), reject(signal.reason as Error));
    const t = setTimeout(() => (signal.removeEventListener('abort', onAbort), resolve()), ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });

/**
 * The dispatcher's half of executor pools (docs/adr/0014-executor-pools.md): a task's turn takes one free
 * executor of its pool and shard — `FOR UPDATE SKIP LOCKED` on the executor rows, so replicas claiming at
 * the same time never get the same one — and holds it under a lease (the task id is the holder, renewed
 * while the turn runs; a dead worker's lease lapses) until the turn ends. Only an active pool hands out
 * executors; paused and draining pools let in-flight turns finish and start none.
 */
export class ExecutorClaims {
  readonly #db: Db;
  readonly ttlMs: number;

  constructor(db: Db, ttlMs: number) {
    this.#db = db;
    this.ttlMs = ttlMs;
  }

  /**
   * Takes a free executor of the shard now, or null (none free, none scaled up, or the pool is not active).
   * Only active slots below maxExecutors are handed out, lowest sandbox and slot first: work packs onto the
   * first executors and the last ones scaled up go idle first, so scaling down finds them.
   */
  async tryClaim(tenantId: string, poolId: string, shard: number, taskId: string, owner: string): Promise<ExecutorClaim | null> {
    const r = await this.#db.query<{
      id: string;
      pool_id: string;
      shard: number;
      slot: number;
      sandbox: number;
      gateway: string;
      agent_type: AgentType;
      risk_class: RiskClass;
      gateways: number;
    }>(
      `WITH free AS (
         SELECT x.id FROM pool_executors x JOIN executor_pools p ON p.id = x.pool_id AND p.tenant_id = x.tenant_id
          WHERE x.tenant_id = $1 AND x.pool_id = $2 AND x.shard = $3 AND p.state = 'active' AND x.active AND x.slot < p.max_executors
            AND (x.task_id IS NULL OR x.task_id = $4 OR x.lease_until < now())
          ORDER BY (x.task_id IS NOT DISTINCT FROM $4::uuid) DESC, x.sandbox, x.slot
          LIMIT 1 FOR UPDATE OF x SKIP LOCKED)
       UPDATE pool_executors e SET task_id = $4, claimed_by = $5, lease_until = now() + make_interval(secs => $6::double precision / 1000), turns = e.turns + 1
         FROM free, executor_pools p WHERE e.id = free.id AND p.id = e.pool_id
       RETURNING e.id, e.pool_id, e.shard, e.slot, e.sandbox, e.gateway, p.agent_type, p.risk_class, p.executors_per_sandbox AS gateways`,
      [tenantId, poolId, shard, taskId, owner, this.ttlMs],
    );
    const x = r.rows[0];
    if (!x) return null;
    return {
      id: x.id,
      poolId: x.pool_id,
      shard: x.shard,
      slot: x.slot,
      sandbox: x.sandbox,
      gateway: x.gateway,
      instanceName: poolSandboxName(x.agent_type, x.sandbox),
      gateways: x.gateways,
      riskClass: x.risk_class,
    };
  }

  /**
   * Waits for an executor of the shard (while the pool is paused, draining or busy). A high-risk agent's
   * turn is only ever given a high-risk pool's executor and a standard one only a standard pool's, whatever
   * the task row says (isolation by risk, checked here at the last step before the turn).
   */
  async claim(o: {
    tenantId: string;
    poolId: string;
    shard: number;
    taskId: string;
    owner: string;
    riskClass: RiskClass;
    signal: AbortSignal;
    onWait?: (why: string) => void;
  }): Promise<ExecutorClaim> {
    let waiting: string | undefined;
    for (;;) {
      o.signal.throwIfAborted();
      // The task's shard is read at each try: a changed shard count re-routes waiting tasks (PoolService.update).
      const p = await this.#db.query<{ state: PoolState; risk_class: RiskClass; shards: number; shard: number | null; shard_key: string | null }>(
        `SELECT p.state, p.risk_class, p.shards, t.shard, t.shard_key FROM executor_pools p
           LEFT JOIN tasks t ON t.tenant_id = p.tenant_id AND t.id = $3 AND t.pool_id = p.id
          WHERE p.tenant_id = $1 AND p.id = $2`,
        [o.tenantId, o.poolId, o.taskId],
      );
      const pool = p.rows[0];
      if (!pool) throw new NoExecutorError('the executor pool of this task was removed');
      if (pool.risk_class !== o.riskClass) throw new NoExecutorError(`a ${o.riskClass}-risk agent's task may not run in a ${pool.risk_class}-risk pool`);
      let shard = pool.shard ?? o.shard;
      if (shard >= pool.shards) {
        // Created while the shard count was being lowered (routed by the old count): routed again by the new one.
        shard = shardOf(pool.shard_key ?? o.taskId, pool.shards);
        await this.#db.query('UPDATE tasks SET shard = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2', [o.tenantId, o.taskId, shard]);
      }
      if (pool.state === 'active') {
        const c = await this.tryClaim(o.tenantId, o.poolId, shard, o.taskId, o.owner);
        if (c) return c;
      }
      // busy: every running executor of the shard has a turn (the scaler adds one while there is room).
      const why = pool.state === 'active' ? 'busy' : pool.state;
      if (why !== waiting) o.onWait?.(why);
      waiting = why;
      await sleep(CLAIM_POLL_MS + Math.floor(Math.random() * CLAIM_POLL_MS), o.signal);
    }
  }

  /** Renews the lease; false when the executor is no longer this task's (its lease lapsed and another took it). */
  async renew(c: { id: string }, taskId: string): Promise<boolean> {
    const r = await this.#db.query(
      `UPDATE pool_executors SET lease_until = now() + make_interval(secs => $3::double precision / 1000) WHERE id = $1 AND task_id = $2`,
      [c.id, taskId, this.ttlMs],
    );
    return r.rowCount === 1;
  }

  async release(c: { id: string }, taskId: string): Promise<void> {
    await this.#db.query('UPDATE pool_executors SET task_id = NULL, claimed_by = NULL, lease_until = NULL, idle_since = now() WHERE id = $1 AND task_id = $2', [
      c.id,
      taskId,
    ]);
  }
}
