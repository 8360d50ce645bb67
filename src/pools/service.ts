import { z } from 'zod';
import { appendAudit } from '../audit/log.ts';
import type { Db, Queryable } from '../db/pool.ts';
import { ConflictError, NotFoundError, QuotaExceededError, ValidationError } from '../errors.ts';
import { riskOf } from '../tasks/agents.ts';
import type { AgentType } from '../tasks/types.ts';
import { placement, sandboxesFor } from './placement.ts';
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

  constructor(db: Db) {
    this.#db = db;
  }

  async list(tenantId: string): Promise<Pool[]> {
    const r = await this.#db.query<PoolRow>('SELECT * FROM executor_pools WHERE tenant_id = $1 ORDER BY agent_type', [tenantId]);
    return this.#withFigures(tenantId, r.rows);
  }

  /** By id or agent type. */
  async get(tenantId: string, ref: string, q: Queryable = this.#db): Promise<Pool> {
    return (await this.#withFigures(tenantId, [await this.#row(tenantId, ref, q)], q))[0] as Pool;
  }

  async #row(tenantId: string, ref: string, q: Queryable = this.#db, lock = false): Promise<PoolRow> {
    const by = UUID.test(ref) ? 'id' : 'agent_type';
    const r = await q.query<PoolRow>(`SELECT * FROM executor_pools WHERE tenant_id = $1 AND ${by} = $2${lock ? ' FOR UPDATE' : ''}`, [tenantId, ref]);
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
    }>('SELECT * FROM pool_executors WHERE tenant_id = $1 AND pool_id = $2 AND slot < $3 ORDER BY shard, slot', [tenantId, p.id, p.max_executors]);
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

  async update(tenantId: string, ref: string, raw: z.input<typeof poolPatch>, by: Audited): Promise<Pool> {
    const patch = poolPatch.parse(raw);
    return this.#db
      .tx(async (tx) => {
        const cur = await this.#row(tenantId, ref, tx, true);
        const next = {
          maxExecutors: patch.maxExecutors ?? cur.max_executors,
          cpuMillis: patch.cpuMillis ?? cur.cpu_millis,
          memoryMb: patch.memoryMb ?? cur.memory_mb,
        };
        if (next.maxExecutors < cur.min_executors)
          throw new ValidationError("maxExecutors must be at least the pool's minExecutors.", [
            { path: 'maxExecutors', message: `at least ${cur.min_executors}` },
          ]);
        const reserve = (x: { maxExecutors: number; cpuMillis: number; memoryMb: number }) => ({
          cpu: cur.shards * x.maxExecutors * x.cpuMillis,
          mem: cur.shards * x.maxExecutors * x.memoryMb,
        });
        const before = reserve({ maxExecutors: cur.max_executors, cpuMillis: cur.cpu_millis, memoryMb: cur.memory_mb });
        const after = reserve(next);
        const boxes = (max: number) => sandboxesFor(cur.shards, max, cur.executors_per_sandbox);
        await this.#checkQuotas(tx, tenantId, {
          sandboxes: boxes(next.maxExecutors) - boxes(cur.max_executors),
          cpuMillis: after.cpu - before.cpu,
          memoryMb: after.mem - before.mem,
        });
        await tx.query(
          'UPDATE executor_pools SET max_executors = $3, cpu_millis = $4, memory_mb = $5, scale_down_after_seconds = $6, updated_at = now() WHERE tenant_id = $1 AND id = $2',
          [tenantId, cur.id, next.maxExecutors, next.cpuMillis, next.memoryMb, patch.scaleDownAfterSeconds ?? cur.scale_down_after_seconds],
        );
        // Room to grow into (a lower max leaves the slots above it to the scaler, which stops them once idle).
        if (next.maxExecutors > cur.max_executors) await this.#addSlots(tx, cur, cur.max_executors, next.maxExecutors, 0);
        await appendAudit(tx, {
          actor: by.actor,
          tenantId,
          action: 'pool.update',
          target: `pool:${cur.id}`,
          decision: 'success',
          detail: { ...patch },
          requestId: by.requestId ?? null,
        });
        return this.get(tenantId, cur.id, tx);
      })
      .catch(async (err: unknown) => {
        if (err instanceof QuotaExceededError) await this.#refused(tenantId, 'pool.update', err, by);
        throw err;
      });
  }

  /**
   * pause: keep the queue, start no new turn; drain: the same, and refuse new tasks (the pool is drained
   * once nothing is in flight); resume: take work again.
   */
  async setState(tenantId: string, ref: string, to: PoolState, by: Audited): Promise<Pool> {
    return this.#db.tx(async (tx) => {
      const cur = await this.#row(tenantId, ref, tx, true);
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
      const cur = await this.#row(tenantId, ref, tx, true);
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
    const t = await tx.query<{ slug: string; max_instances: number; max_cpu_millis: number; max_memory_mb: number }>(
      'SELECT slug, max_instances, max_cpu_millis, max_memory_mb FROM tenants WHERE id = $1 FOR UPDATE',
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
