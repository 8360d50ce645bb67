import { z } from 'zod';
import { appendAudit } from '../audit/log.ts';
import type { Db, Queryable } from '../db/pool.ts';
import { ConflictError, NotFoundError, QuotaExceededError, ValidationError } from '../errors.ts';
import { riskOf } from '../tasks/agents.ts';
import type { AgentType } from '../tasks/types.ts';
import { sandboxesHeld, sandboxQuotaError } from '../tenancy/tenants.ts';
import { placement, poolSandboxName, replace, sandboxesFor } from './placement.ts';
import { poolInput, poolPatch, shardOf, type Pool, type PoolExecutor, type PoolInput, type PoolState } from './types.ts';

interface PoolRow {
  id: string;
  tenant_id: string;
  agent_type: AgentType;
  risk_class: 'standard' | 'high';
  min_executors: number;
  max_executors: number;
  shards: number;
  cpu_millis: number;
  memory_mb: number;
  executors_per_sandbox: number;
  scale_down_after_seconds: number;
  state: PoolState;
  instance_id: string | null;
  created_at: Date;
  updated_at: Date;
}

export interface Audited {
  actor: string;
  requestId?: string | undefined;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Where a new task goes: its agent type, and its pool and shard when the type has a pool. */
export interface Route {
  agentType: AgentType | null;
  /** perShard: executors a shard may run at most (its queue partition's concurrency). */
  pool: { id: string; shards: number; perShard: number; state: PoolState } | null;
  shard: number | null;
  shardKey: string | null;
}

/**
 * Pools as the API sees them (create with quota checks, list, pause, drain, resume, remove) and the routing
 * of new tasks to a pool and shard. Each change is audited in its own transaction.
 */
export class PoolService {
  readonly #db: Db;
  readonly #publish: ((tx: Queryable, instanceIds: string[]) => Promise<void>) | undefined;

  /** publish: inside a change's transaction, for the pool sandboxes whose running executors it changed (instance.changed to every replica). */
  constructor(db: Db, o: { publish?: (tx: Queryable, instanceIds: string[]) => Promise<void> } = {}) {
    this.#db = db;
    this.#publish = o.publish;
  }

  async list(tenantId: string): Promise<Pool[]> {
    const r = await this.#db.query<PoolRow>('SELECT * FROM executor_pools WHERE tenant_id = $1 ORDER BY agent_type', [tenantId]);
    return this.#withFigures(tenantId, r.rows);
  }

  /** By id or agent type. */
  async get(tenantId: string, ref: string, q: Queryable = this.#db): Promise<Pool> {
    return (await this.#withFigures(tenantId, [await this.#row(tenantId, ref, q)], q))[0] as Pool;
  }

  /**
   * `lock`: 'change' takes FOR NO KEY UPDATE, which (unlike FOR UPDATE) leaves the foreign-key checks of tasks
   * pointing at the pool free: a task's dispatch holds its row and sets its pool_id (a KEY SHARE lock on the
   * pool) while a change of shards re-routes that same task row, which deadlocked under FOR UPDATE (measured on
   * PostgreSQL 15, 1 run in 5). 'remove' takes FOR UPDATE: the row goes.
   */
  async #row(tenantId: string, ref: string, q: Queryable = this.#db, lock?: 'change' | 'remove'): Promise<PoolRow> {
    const by = UUID.test(ref) ? 'id' : 'agent_type';
    const clause = lock === 'change' ? ' FOR NO KEY UPDATE' : lock === 'remove' ? ' FOR UPDATE' : '';
    const r = await q.query<PoolRow>(`SELECT * FROM executor_pools WHERE tenant_id = $1 AND ${by} = $2${clause}`, [tenantId, ref]);
    if (!r.rows[0]) throw new NotFoundError('Executor pool');
    return r.rows[0];
  }

  async #withFigures(tenantId: string, rows: PoolRow[], q: Queryable = this.#db): Promise<Pool[]> {
    if (rows.length === 0) return [];
    const ids = rows.map((r) => r.id);
    const depth = await q.query<{ pool_id: string; shard: number; n: number }>(
      `SELECT pool_id, shard, count(*)::int AS n FROM tasks WHERE tenant_id = $1 AND pool_id = ANY ($2::uuid[]) AND status IN ('queued', 'dispatched') GROUP BY pool_id, shard`,
      [tenantId, ids],
    );
    const busy = await q.query<{ pool_id: string; n: number }>(
      `SELECT pool_id, count(*)::int AS n FROM pool_executors WHERE tenant_id = $1 AND pool_id = ANY ($2::uuid[]) AND task_id IS NOT NULL AND lease_until > now() GROUP BY pool_id`,
      [tenantId, ids],
    );
    const active = await q.query<{ pool_id: string; shard: number; n: number; sandboxes: number[] }>(
      `SELECT pool_id, shard, count(*)::int AS n, array_agg(DISTINCT sandbox) AS sandboxes FROM pool_executors WHERE tenant_id = $1 AND pool_id = ANY ($2::uuid[]) AND active GROUP BY pool_id, shard`,
      [tenantId, ids],
    );
    return rows.map((r) => {
      const queueDepth = Array.from({ length: r.shards }, (_, s) => depth.rows.find((d) => d.pool_id === r.id && d.shard === s)?.n ?? 0);
      const inFlight = busy.rows.find((b) => b.pool_id === r.id)?.n ?? 0;
      const mine = active.rows.filter((a) => a.pool_id === r.id);
      const activeExecutors = Array.from({ length: r.shards }, (_, s) => mine.find((a) => a.shard === s)?.n ?? 0);
      return {
        id: r.id,
        tenantId: r.tenant_id,
        agentType: r.agent_type,
        riskClass: r.risk_class,
        minExecutors: r.min_executors,
        maxExecutors: r.max_executors,
        shards: r.shards,
        cpuMillis: r.cpu_millis,
        memoryMb: r.memory_mb,
        executorsPerSandbox: r.executors_per_sandbox,
        scaleDownAfterSeconds: r.scale_down_after_seconds,
        state: r.state,
        drained: r.state === 'draining' && inFlight === 0,
        instanceId: r.instance_id,
        queueDepth,
        inFlight,
        activeExecutors,
        sandboxes: new Set(mine.flatMap((a) => a.sandboxes)).size,
        createdAt: r.created_at.toISOString(),
        updatedAt: r.updated_at.toISOString(),
      };
    });
  }

  async executors(tenantId: string, ref: string): Promise<PoolExecutor[]> {
    const p = await this.#row(tenantId, ref);
    const r = await this.#db.query<{
      id: string;
      pool_id: string;
      shard: number;
      slot: number;
      sandbox: number;
      gateway: string;
      active: boolean;
      task_id: string | null;
      lease_until: Date | null;
      turns: number;
    }>(
      // Every slot of the pool's shape, and any still running outside it (above a lowered max, of a removed shard) until the scaler stops it.
      'SELECT * FROM pool_executors WHERE tenant_id = $1 AND pool_id = $2 AND ((slot < $3 AND shard < $4) OR active) ORDER BY shard, slot',
      [tenantId, p.id, p.max_executors, p.shards],
    );
    const now = Date.now();
    return r.rows.map((e) => ({
      id: e.id,
      poolId: e.pool_id,
      shard: e.shard,
      slot: e.slot,
      sandbox: e.sandbox,
      gateway: e.gateway,
      active: e.active,
      taskId: e.task_id && e.lease_until && e.lease_until.getTime() > now ? e.task_id : null,
      turns: e.turns,
    }));
  }

  /**
   * Creates a pool and a row for every executor it may scale to (greatest(min, 1) per shard running). Refused
   * beyond the tenant's quotas, naming the quota: maxInstances (the sandboxes the pool needs at max),
   * maxCpuMillis and maxMemoryMb (what every pool may grow to: shards × maxExecutors).
   */
  async create(tenantId: string, raw: PoolInput, by: Audited): Promise<Pool> {
    const input = poolInput.parse(raw);
    const perShard = Math.max(input.minExecutors, 1);
    return this.#db
      .tx(async (tx) => {
        // Lock the tenant row: concurrent creates (and instance deploys, which lock it too) must not both slip under a quota.
        const dup = await tx.query('SELECT 1 FROM executor_pools WHERE tenant_id = $1 AND agent_type = $2', [tenantId, input.agentType]);
        if (dup.rowCount)
          throw new ConflictError(`This tenant already has a pool for agent type "${input.agentType}": change or remove that one.`, 'pool_exists');
        await this.#checkQuotas(tx, tenantId, {
          sandboxes: sandboxesFor(input.shards, input.maxExecutors, input.executorsPerSandbox),
          cpuMillis: input.shards * input.maxExecutors * input.cpuMillis,
          memoryMb: input.shards * input.maxExecutors * input.memoryMb,
        });
        const r = await tx.query<PoolRow>(
          `INSERT INTO executor_pools (tenant_id, agent_type, risk_class, min_executors, max_executors, shards, cpu_millis, memory_mb, executors_per_sandbox, scale_down_after_seconds)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *`,
          [
            tenantId,
            input.agentType,
            riskOf(input.agentType),
            input.minExecutors,
            input.maxExecutors,
            input.shards,
            input.cpuMillis,
            input.memoryMb,
            input.executorsPerSandbox,
            input.scaleDownAfterSeconds,
          ],
        );
        const pool = r.rows[0] as PoolRow;
        await this.#addSlots(tx, pool, 0, input.maxExecutors, perShard);
        await appendAudit(tx, {
          actor: by.actor,
          tenantId,
          action: 'pool.create',
          target: `pool:${pool.id}`,
          decision: 'success',
          detail: { ...input },
          requestId: by.requestId ?? null,
        });
        return this.get(tenantId, pool.id, tx);
      })
      .catch(async (err: unknown) => {
        if (err instanceof QuotaExceededError) await this.#refused(tenantId, 'pool.create', err, by);
        throw err;
      });
  }

  /** Rows for slots [from, to) of every shard, placed by placement.ts; the first `running` slots start active. */
  async #addSlots(tx: Queryable, pool: PoolRow, from: number, to: number, running: number): Promise<void> {
    for (let slot = from; slot < to; slot++) {
      for (let s = 0; s < pool.shards; s++) {
        const at = placement(s, slot, pool.shards, pool.executors_per_sandbox);
        await tx.query(
          `INSERT INTO pool_executors (tenant_id, pool_id, shard, slot, gateway, sandbox, active, activated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $7 THEN now() END)
           ON CONFLICT (pool_id, shard, slot) DO NOTHING`,
          [pool.tenant_id, pool.id, s, slot, at.gateway, at.sandbox, slot < running],
        );
      }
    }
  }

  /**
   * Changes a pool's settings (docs/adr/0014-executor-pools.md, Changing a pool). Raising minExecutors starts
   * executors at once; a changed shard count re-routes the pool's unfinished tasks by the new count (a turn
   * running now finishes where it is); a changed shards or executorsPerSandbox places the executors again,
   * except those running or holding a turn, which stay where they run (the scaler stops those no longer
   * wanted once they are free). Quotas are checked on the difference, as at creation.
   */
  async update(tenantId: string, ref: string, raw: z.input<typeof poolPatch>, by: Audited): Promise<Pool> {
    const patch = poolPatch.parse(raw);
    const r = await this.#db
      .tx(async (tx) => {
        const cur = await this.#row(tenantId, ref, tx, 'change');
        const next: PoolRow = {
          ...cur,
          min_executors: patch.minExecutors ?? cur.min_executors,
          max_executors: patch.maxExecutors ?? cur.max_executors,
          shards: patch.shards ?? cur.shards,
          cpu_millis: patch.cpuMillis ?? cur.cpu_millis,
          memory_mb: patch.memoryMb ?? cur.memory_mb,
          executors_per_sandbox: patch.executorsPerSandbox ?? cur.executors_per_sandbox,
          scale_down_after_seconds: patch.scaleDownAfterSeconds ?? cur.scale_down_after_seconds,
        };
        if (next.max_executors < next.min_executors) {
          const field = patch.maxExecutors !== undefined ? 'maxExecutors' : 'minExecutors';
          throw new ValidationError(
            `${field} would leave maxExecutors (${next.max_executors}) below minExecutors (${next.min_executors}): change both together or keep max at least min.`,
            [{ path: field, message: field === 'maxExecutors' ? `at least ${next.min_executors}` : `at most ${next.max_executors}` }],
          );
        }
        const reserve = (x: PoolRow) => ({
          sandboxes: sandboxesFor(x.shards, x.max_executors, x.executors_per_sandbox),
          cpu: x.shards * x.max_executors * x.cpu_millis,
          mem: x.shards * x.max_executors * x.memory_mb,
        });
        const before = reserve(cur);
        const after = reserve(next);
        await this.#checkQuotas(tx, tenantId, {
          sandboxes: after.sandboxes - before.sandboxes,
          cpuMillis: after.cpu - before.cpu,
          memoryMb: after.mem - before.mem,
        });
        await tx.query(
          `UPDATE executor_pools SET min_executors = $3, max_executors = $4, shards = $5, cpu_millis = $6, memory_mb = $7, executors_per_sandbox = $8,
                  scale_down_after_seconds = $9, updated_at = now() WHERE tenant_id = $1 AND id = $2`,
          [
            tenantId,
            cur.id,
            next.min_executors,
            next.max_executors,
            next.shards,
            next.cpu_millis,
            next.memory_mb,
            next.executors_per_sandbox,
            next.scale_down_after_seconds,
          ],
        );
        // A new shape, or room to grow into (a lower max leaves the slots above it to the scaler, which stops them
        // once free). Placed as a whole: after a reshape, placement()'s formula no longer describes every row.
        if (next.shards !== cur.shards || next.executors_per_sandbox !== cur.executors_per_sandbox || next.max_executors > cur.max_executors)
          await this.#replace(tx, next);
        const started = await this.#startMin(tx, next);
        const stopped = next.shards < cur.shards ? await this.#stopRemovedShards(tx, next) : [];
        const rerouted = next.shards !== cur.shards ? await this.#reroute(tx, next, cur.shards) : 0;
        const sandboxes = [...new Set([...started, ...stopped])];
        if (sandboxes.length > 0 && this.#publish) {
          const inst = await tx.query<{ id: string }>('SELECT id FROM instances WHERE tenant_id = $1 AND name = ANY ($2::text[])', [
            tenantId,
            sandboxes.map((n) => poolSandboxName(cur.agent_type, n)),
          ]);
          if (inst.rows.length > 0)
            await this.#publish(
              tx,
              inst.rows.map((i) => i.id),
            );
        }
        await appendAudit(tx, {
          actor: by.actor,
          tenantId,
          action: 'pool.update',
          target: `pool:${cur.id}`,
          decision: 'success',
          detail: { ...patch, ...(next.shards !== cur.shards ? { rerouted } : {}) },
          requestId: by.requestId ?? null,
        });
        return this.get(tenantId, cur.id, tx);
      })
      .catch(async (err: unknown) => {
        if (err instanceof QuotaExceededError) await this.#refused(tenantId, 'pool.update', err, by);
        throw err;
      });
    return r;
  }

  /**
   * Places every slot of the pool's new shape (shards × maxExecutors) again: executors that run or hold a
   * turn stay where they are (a slot of a removed shard among them too, until the scaler stops it); the rest
   * take the lowest free positions of the new layout (placement.ts replace), in the sandboxes already
   * deployed only up to the gateways each declared. Free slots of removed shards are deleted.
   */
  async #replace(tx: Queryable, pool: PoolRow): Promise<void> {
    const rows = await tx.query<{ id: string; shard: number; slot: number; sandbox: number; gateway: string; kept: boolean }>(
      `SELECT id, shard, slot, sandbox, gateway,
              active OR (task_id IS NOT NULL AND lease_until > now())
                OR EXISTS (SELECT 1 FROM tasks t WHERE t.tenant_id = x.tenant_id AND t.executor_id = x.id AND t.status = 'waiting_approval') AS kept
         FROM pool_executors x WHERE tenant_id = $1 AND pool_id = $2 FOR UPDATE`,
      [pool.tenant_id, pool.id],
    );
    const wanted = (x: { shard: number; slot: number }) => x.shard < pool.shards && x.slot < pool.max_executors;
    const gone = rows.rows.filter((x) => !x.kept && !wanted(x)).map((x) => x.id);
    if (gone.length > 0) await tx.query('DELETE FROM pool_executors WHERE id = ANY ($1::uuid[])', [gone]);
    const kept = rows.rows.filter((x) => x.kept);
    const taken = new Set(kept.map((x) => `${x.sandbox}/${x.gateway}`));
    const byKey = new Map(rows.rows.map((x) => [`${x.shard}/${x.slot}`, x]));
    const todo: { shard: number; slot: number; id: string | undefined }[] = [];
    for (let slot = 0; slot < pool.max_executors; slot++)
      for (let shard = 0; shard < pool.shards; shard++) {
        const x = byKey.get(`${shard}/${slot}`);
        if (!x?.kept) todo.push({ shard, slot, id: x?.id });
      }
    const declared = await tx.query<{ name: string; executors: number }>(
      `SELECT name, executors FROM instances WHERE tenant_id = $1 AND desired_state <> 'destroyed' AND (name = $2 OR name LIKE $2 || '-%')`,
      [pool.tenant_id, poolSandboxName(pool.agent_type, 0)],
    );
    const capacity = (n: number) => declared.rows.find((i) => i.name === poolSandboxName(pool.agent_type, n))?.executors ?? pool.executors_per_sandbox;
    const at = replace(todo.length, taken, pool.executors_per_sandbox, capacity);
    // Two passes: a row may move to a position another moving row leaves (UNIQUE (pool_id, sandbox, gateway)).
    const moving = todo.flatMap((t) => (t.id ? [t.id] : []));
    if (moving.length > 0) await tx.query(`UPDATE pool_executors SET gateway = 'moving-' || id WHERE id = ANY ($1::uuid[])`, [moving]);
    for (const [i, t] of todo.entries()) {
      const p = at[i] as { sandbox: number; gateway: string };
      if (t.id) await tx.query('UPDATE pool_executors SET sandbox = $2, gateway = $3 WHERE id = $1', [t.id, p.sandbox, p.gateway]);
      else
        await tx.query('INSERT INTO pool_executors (tenant_id, pool_id, shard, slot, gateway, sandbox, active) VALUES ($1, $2, $3, $4, $5, $6, false)', [
          pool.tenant_id,
          pool.id,
          t.shard,
          t.slot,
          p.gateway,
          p.sandbox,
        ]);
    }
  }

  /** Starts the slots below minExecutors that are not running, in every shard: the sandboxes they run in. */
  async #startMin(tx: Queryable, pool: PoolRow): Promise<number[]> {
    const r = await tx.query<{ sandbox: number }>(
      `UPDATE pool_executors SET active = true, activated_at = now(), idle_since = now()
        WHERE tenant_id = $1 AND pool_id = $2 AND NOT active AND shard < $3 AND slot < $4 RETURNING sandbox`,
      [pool.tenant_id, pool.id, pool.shards, Math.min(pool.min_executors, pool.max_executors)],
    );
    return r.rows.map((x) => x.sandbox);
  }

  /**
   * Stops the free executors of shards that no longer exist (one that holds a turn finishes it; the scaler
   * stops it after): the sandboxes they ran in.
   */
  async #stopRemovedShards(tx: Queryable, pool: PoolRow): Promise<number[]> {
    const r = await tx.query<{ sandbox: number }>(
      `UPDATE pool_executors x SET active = false
        WHERE tenant_id = $1 AND pool_id = $2 AND shard >= $3 AND active AND (task_id IS NULL OR lease_until < now())
          AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.tenant_id = x.tenant_id AND t.executor_id = x.id AND t.status = 'waiting_approval')
        RETURNING sandbox`,
      [pool.tenant_id, pool.id, pool.shards],
    );
    return r.rows.map((x) => x.sandbox);
  }

  /**
   * Re-routes the pool's unfinished tasks by the new shard count (shardOf their shard key, else their id, as
   * at creation), so a key's tasks stay on one shard: a waiting task claims an executor of its new shard; one
   * running a turn finishes it where it is and takes its next turn there. Each moved task's trace says so.
   */
  async #reroute(tx: Queryable, pool: PoolRow, from: number): Promise<number> {
    const r = await tx.query<{ id: string; shard: number | null; shard_key: string | null }>(
      // FOR NO KEY UPDATE, in id order: a task's own steps insert its events (a KEY SHARE lock on its row by the
      // foreign key) while holding other rows, which deadlocked with FOR UPDATE here (PostgreSQL 15, 1 run in 5).
      `SELECT id, shard, shard_key FROM tasks WHERE tenant_id = $1 AND pool_id = $2 AND status NOT IN ('completed', 'failed', 'cancelled', 'expired') ORDER BY id FOR NO KEY UPDATE`,
      [pool.tenant_id, pool.id],
    );
    let moved = 0;
    for (const t of r.rows) {
      const to = shardOf(t.shard_key ?? t.id, pool.shards);
      if (to === t.shard) continue;
      await tx.query('UPDATE tasks SET shard = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2', [pool.tenant_id, t.id, to]);
      await tx.query('INSERT INTO task_events (tenant_id, task_id, step, kind, detail) VALUES ($1, $2, $3, $4, $5)', [
        pool.tenant_id,
        t.id,
        'dispatch',
        'rerouted',
        JSON.stringify({ poolId: pool.id, from: t.shard, to, shards: { from, to: pool.shards } }),
      ]);
      moved++;
    }
    return moved;
  }

  /**
   * pause: keep the queue, start no new turn; drain: the same, and refuse new tasks (the pool is drained
   * once nothing is in flight); resume: take work again.
   */
  async setState(tenantId: string, ref: string, to: PoolState, by: Audited): Promise<Pool> {
    return this.#db.tx(async (tx) => {
      const cur = await this.#row(tenantId, ref, tx, 'change');
      if (cur.state !== to) {
        await tx.query('UPDATE executor_pools SET state = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2', [tenantId, cur.id, to]);
        const action = to === 'active' ? 'pool.resume' : to === 'paused' ? 'pool.pause' : 'pool.drain';
        await appendAudit(tx, {
          actor: by.actor,
          tenantId,
          action,
          target: `pool:${cur.id}`,
          decision: 'success',
          detail: { from: cur.state, to },
          requestId: by.requestId ?? null,
        });
      }
      return this.get(tenantId, cur.id, tx);
    });
  }

  /** Removes a pool with nothing unfinished (drain it first); its tasks' history keeps their shard. */
  async remove(tenantId: string, ref: string, by: Audited): Promise<void> {
    await this.#db.tx(async (tx) => {
      const cur = await this.#row(tenantId, ref, tx, 'remove');
      const open = await tx.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM tasks WHERE tenant_id = $1 AND pool_id = $2 AND status NOT IN ('completed', 'failed', 'cancelled', 'expired')`,
        [tenantId, cur.id],
      );
      const n = open.rows[0]?.n ?? 0;
      if (n > 0) throw new ConflictError(`The pool still has ${n} unfinished task(s): drain it and wait until they end, or cancel them.`, 'pool_busy');
      await tx.query('DELETE FROM executor_pools WHERE tenant_id = $1 AND id = $2', [tenantId, cur.id]);
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'pool.delete',
        target: `pool:${cur.id}`,
        decision: 'success',
        detail: { agentType: cur.agent_type },
        requestId: by.requestId ?? null,
      });
    });
  }

  /**
   * The quotas a change must fit (the tenant row locked FOR UPDATE, as instance deploys do): sandboxes are
   * the tenant's instances that are not pool sandboxes plus the sandboxes every pool needs at its max; CPU
   * and memory what all pools may grow to.
   */
  async #checkQuotas(tx: Queryable, tenantId: string, add: { sandboxes: number; cpuMillis: number; memoryMb: number }): Promise<void> {
    const t = await tx.query<{ slug: string; max_instances: number; max_cpu_millis: number; max_memory_mb: number; max_sandboxes: number | null }>(
      'SELECT slug, max_instances, max_cpu_millis, max_memory_mb, max_sandboxes FROM tenants WHERE id = $1 FOR UPDATE',
      [tenantId],
    );
    const tenant = t.rows[0];
    if (!tenant) throw new NotFoundError('Tenant');
    const used = await tx.query<{ sandboxes: number; cpu: number; mem: number }>(
      `SELECT (SELECT count(*) FROM instances WHERE tenant_id = $1 AND name NOT LIKE 'pool-%')::int + COALESCE(sum(ceil(shards * max_executors / executors_per_sandbox::numeric)), 0)::int AS sandboxes,
              COALESCE(sum(shards * max_executors * cpu_millis), 0)::int AS cpu, COALESCE(sum(shards * max_executors * memory_mb), 0)::int AS mem
         FROM executor_pools WHERE tenant_id = $1`,
      [tenantId],
    );
    const u = used.rows[0] ?? { sandboxes: 0, cpu: 0, mem: 0 };
    const over = (quota: string, limit: number, requested: number, unit: string) => {
      throw new QuotaExceededError(
        `Tenant "${tenant.slug}" may reserve at most ${limit}${unit} (quota ${quota}); this change would need ${requested}${unit}: lower the pool's figures, remove something, or ask a platform admin to raise ${quota}.`,
        { quota, limit, requested },
      );
    };
    if (add.sandboxes > 0 && u.sandboxes + add.sandboxes > tenant.max_instances)
      over('maxInstances', tenant.max_instances, u.sandboxes + add.sandboxes, ' sandbox(es)');
    // maxSandboxes (ADR 0011): the instances set running and every pool at its max, this change included.
    if (add.sandboxes > 0 && tenant.max_sandboxes !== null) {
      const held = await sandboxesHeld(tx, tenantId);
      if (held + add.sandboxes > tenant.max_sandboxes)
        throw sandboxQuotaError(tenant.slug, tenant.max_sandboxes, held + add.sandboxes, "this pool's maxExecutors, shards and executorsPerSandbox");
    }
    if (add.cpuMillis > 0 && u.cpu + add.cpuMillis > tenant.max_cpu_millis) over('maxCpuMillis', tenant.max_cpu_millis, u.cpu + add.cpuMillis, ' millicores');
    if (add.memoryMb > 0 && u.mem + add.memoryMb > tenant.max_memory_mb) over('maxMemoryMb', tenant.max_memory_mb, u.mem + add.memoryMb, ' MiB');
  }

  async #refused(tenantId: string, action: string, err: QuotaExceededError, by: Audited): Promise<void> {
    await this.#db.tx((tx) =>
      appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action,
        target: 'pool',
        decision: 'refused',
        detail: { ...(err.details ?? {}), reason: err.message },
        requestId: by.requestId ?? null,
      }),
    );
  }

  /**
   * Routes a new task: the pool of its agent type (if the tenant has one) and its shard, from `shardKey`
   * or else the task id. A draining pool refuses new work (409 pool_draining); a paused one queues it.
   */
  async route(q: Queryable, tenantId: string, want: { agentType: AgentType | null; shardKey: string | null; taskId: string }): Promise<Route> {
    if (!want.agentType) return { agentType: null, pool: null, shard: null, shardKey: want.shardKey };
    const r = await q.query<PoolRow>('SELECT * FROM executor_pools WHERE tenant_id = $1 AND agent_type = $2', [tenantId, want.agentType]);
    const p = r.rows[0];
    if (!p) return { agentType: want.agentType, pool: null, shard: null, shardKey: want.shardKey };
    if (p.state === 'draining') throw new ConflictError(`The ${p.agent_type} pool is draining and takes no new tasks: resume it first.`, 'pool_draining');
    return {
      agentType: want.agentType,
      pool: { id: p.id, shards: p.shards, perShard: p.max_executors, state: p.state },
      shard: shardOf(want.shardKey ?? want.taskId, p.shards),
      shardKey: want.shardKey,
    };
  }
}
