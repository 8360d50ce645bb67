import type { Logger } from 'pino';
import { appendAudit } from '../audit/log.ts';
import type { Db, Queryable } from '../db/pool.ts';
import type { AgentType } from '../tasks/types.ts';
import { poolSandboxName } from './placement.ts';
import type { PoolState } from './types.ts';

/** What one scaling decision changed on a shard of a pool. */
export interface ScaleChange {
  tenantId: string;
  poolId: string;
  agentType: AgentType;
  shard: number;
  from: number;
  to: number;
  /** backlog: tasks waited with every running executor busy; idle: executors ran nothing for the pool's scale-down time. */
  reason: 'backlog' | 'idle' | 'max_lowered' | 'shards_lowered';
  waiting: number;
}

/** A sandbox of a pool whose running executors changed, with how many run there now. */
export interface ScaledSandbox {
  tenantId: string;
  instanceName: string;
  active: number;
}

export interface ScalerOptions {
  db: Db;
  log: Logger;
  /** How often pools are looked at; each pool gets at most one decision per interval across every replica. */
  intervalMs: number;
  /**
   * After a decision committed: the sandboxes whose executor set changed (their reconciler starts or stops
   * the gateways; a sandbox left with none may stop).
   */
  onScaled?: (sandboxes: ScaledSandbox[]) => Promise<void>;
  /** Inside the deciding transaction, for the changed sandboxes' instances (e.g. an instance.changed event to every replica). */
  publish?: (tx: Queryable, instanceIds: string[]) => Promise<void>;
}

interface ExecRow {
  id: string;
  shard: number;
  slot: number;
  sandbox: number;
  active: boolean;
  busy: boolean;
  idle: boolean;
}

const ACTOR = 'system:pool-scaler';

/**
 * Scales every executor pool between its min and max from its queue (docs/adr/0014-executor-pools.md,
 * Scaling). Per shard: tasks waiting (queued or dispatched) beyond the free running executors activate that
 * many more slots, up to maxExecutors, lowest slot first (placement.ts fills the pool's first sandbox, then
 * the next); with nothing waiting, running executors idle for the pool's scaleDownAfterSeconds are stopped,
 * highest first, down to minExecutors (zero where min is zero: the claim waits and the next pass, seeing the
 * backlog, starts one again). A paused or draining pool is not scaled up.
 *
 * Several replicas run this; a pool is decided by one of them per interval: the decision locks the pool
 * row with SKIP LOCKED only while its `scaled_at` is older than the interval, and sets it. A slot is stopped
 * only by an UPDATE that re-checks it is free, so a claim committing at the same moment keeps its executor.
 * The desired set lives in the rows (`active`); the reconciler makes each sandbox's supervisor run it.
 */
export class PoolScaler {
  readonly #o: ScalerOptions;
  #timer: NodeJS.Timeout | undefined;
  #tick: Promise<unknown> | undefined;

  constructor(o: ScalerOptions) {
    this.#o = o;
  }

  start(): void {
    this.#timer = setInterval(() => {
      this.#tick ??= this.tick()
        .catch((err: unknown) => this.#o.log.error({ err }, 'pool scaling pass failed'))
        .finally(() => (this.#tick = undefined));
    }, this.#o.intervalMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#tick;
  }

  /** One pass over every pool that is due: the changes this replica decided (none for pools another one decided). */
  async tick(): Promise<ScaleChange[]> {
    const due = await this.#o.db.query<{ id: string }>(
      `SELECT id FROM executor_pools WHERE scaled_at IS NULL OR scaled_at <= now() - make_interval(secs => $1::double precision / 1000) ORDER BY scaled_at NULLS FIRST`,
      [this.#dueMs()],
    );
    const changes: ScaleChange[] = [];
    for (const { id } of due.rows) {
      const r = await this.decide(id);
      changes.push(...r.changes);
      if (r.sandboxes.length > 0)
        await this.#o
          .onScaled?.(r.sandboxes)
          .catch((err: unknown) =>
            this.#o.log.warn({ err: (err as Error).message, pool_id: id }, 'could not act on a scaling decision; the reconciler converges on its next pass'),
          );
    }
    return changes;
  }

  /** A little under the interval: replicas' timers drift, and a pool must not skip a whole interval. */
  #dueMs(): number {
    return Math.floor(this.#o.intervalMs * 0.8);
  }

  /** Decides one pool now (when due and no other replica is deciding it). */
  async decide(poolId: string): Promise<{ changes: ScaleChange[]; sandboxes: ScaledSandbox[] }> {
    return this.#o.db.tx(async (tx) => {
      const p = await tx.query<{
        id: string;
        tenant_id: string;
        agent_type: AgentType;
        state: PoolState;
        shards: number;
        min_executors: number;
        max_executors: number;
        scale_down_after_seconds: number;
      }>(
        `SELECT id, tenant_id, agent_type, state, shards, min_executors, max_executors, scale_down_after_seconds FROM executor_pools
          WHERE id = $1 AND (scaled_at IS NULL OR scaled_at <= now() - make_interval(secs => $2::double precision / 1000)) FOR NO KEY UPDATE SKIP LOCKED`,
        [poolId, this.#dueMs()],
      );
      const pool = p.rows[0];
      if (!pool) return { changes: [], sandboxes: [] };
      await tx.query('UPDATE executor_pools SET scaled_at = now() WHERE id = $1', [pool.id]);
      const waiting = await tx.query<{ shard: number; n: number }>(
        `SELECT shard, count(*)::int AS n FROM tasks t WHERE tenant_id = $1 AND pool_id = $2 AND status IN ('queued', 'dispatched')
            AND NOT EXISTS (SELECT 1 FROM pool_executors x WHERE x.pool_id = t.pool_id AND x.task_id = t.id AND x.lease_until > now())
          GROUP BY shard`,
        [pool.tenant_id, pool.id],
      );
      const rows = await tx.query<ExecRow>(
        // Busy: a turn holds it, or a task parked at an exec approval keeps its turn open on that gateway.
        `SELECT id, shard, slot, sandbox, active,
                (task_id IS NOT NULL AND lease_until > now()) OR EXISTS (SELECT 1 FROM tasks t WHERE t.tenant_id = x.tenant_id AND t.executor_id = x.id AND t.status = 'waiting_approval') AS busy,
                idle_since <= now() - make_interval(secs => $3) AS idle
           FROM pool_executors x WHERE tenant_id = $1 AND pool_id = $2 ORDER BY shard, slot`,
        [pool.tenant_id, pool.id, pool.scale_down_after_seconds],
      );
      const changes: ScaleChange[] = [];
      const touched = new Set<number>();
      // Executors of shards a lowered shard count removed: stopped once free (their tasks were re-routed).
      for (const shard of new Set(rows.rows.filter((x) => x.shard >= pool.shards && x.active && !x.busy).map((x) => x.shard))) {
        const mine = rows.rows.filter((x) => x.shard === shard && x.active);
        const off = await this.#set(
          tx,
          mine.filter((x) => !x.busy).map((x) => x.id),
          false,
        );
        for (const x of mine.filter((m) => off.includes(m.id))) touched.add(x.sandbox);
        if (off.length > 0)
          changes.push({
            tenantId: pool.tenant_id,
            poolId: pool.id,
            agentType: pool.agent_type,
            shard,
            waiting: 0,
            from: mine.length,
            to: mine.length - off.length,
            reason: 'shards_lowered',
          });
      }
      for (let shard = 0; shard < pool.shards; shard++) {
        const mine = rows.rows.filter((x) => x.shard === shard);
        const inRange = mine.filter((x) => x.slot < pool.max_executors);
        const running = inRange.filter((x) => x.active);
        const free = running.filter((x) => !x.busy).length;
        const w = waiting.rows.find((x) => x.shard === shard)?.n ?? 0;
        const base = { tenantId: pool.tenant_id, poolId: pool.id, agentType: pool.agent_type, shard, waiting: w };
        // Slots above a lowered max: stopped once free.
        const above = mine.filter((x) => x.active && x.slot >= pool.max_executors && !x.busy).map((x) => x.id);
        if (above.length > 0) {
          const off = await this.#set(tx, above, false);
          if (off.length > 0) {
            for (const x of mine.filter((m) => off.includes(m.id))) touched.add(x.sandbox);
            changes.push({ ...base, from: running.length + off.length, to: running.length, reason: 'max_lowered' });
          }
        }
        const floor = Math.min(pool.max_executors, pool.min_executors);
        const need = Math.max(0, w - free);
        const target = pool.state === 'active' ? Math.min(pool.max_executors, Math.max(floor, running.length + need)) : Math.max(floor, running.length);
        if (target > running.length) {
          const on = inRange
            .filter((x) => !x.active)
            .slice(0, target - running.length)
            .map((x) => x.id);
          const done = await this.#set(tx, on, true);
          for (const x of mine.filter((m) => done.includes(m.id))) touched.add(x.sandbox);
          if (done.length > 0) changes.push({ ...base, from: running.length, to: running.length + done.length, reason: 'backlog' });
        } else if (w === 0 && running.length > floor) {
          const idle = running.filter((x) => !x.busy && x.idle).sort((a, b) => b.sandbox - a.sandbox || b.slot - a.slot);
          const off = await this.#set(
            tx,
            idle.slice(0, running.length - floor).map((x) => x.id),
            false,
          );
          for (const x of mine.filter((m) => off.includes(m.id))) touched.add(x.sandbox);
          if (off.length > 0) changes.push({ ...base, from: running.length, to: running.length - off.length, reason: 'idle' });
        }
      }
      for (const c of changes) {
        await appendAudit(tx, {
          actor: ACTOR,
          tenantId: c.tenantId,
          action: 'pool.scale',
          target: `pool:${c.poolId}`,
          decision: 'success',
          detail: { shard: c.shard, from: c.from, to: c.to, reason: c.reason, waiting: c.waiting },
        });
        this.#o.log.info(
          { tenant_id: c.tenantId, pool_id: c.poolId, agent_type: c.agentType, shard: c.shard, from: c.from, to: c.to, reason: c.reason, waiting: c.waiting },
          'scaled a pool shard',
        );
      }
      if (touched.size === 0) return { changes, sandboxes: [] };
      const counts = await tx.query<{ sandbox: number; n: number }>(
        `SELECT sandbox, count(*) FILTER (WHERE active AND slot < $3)::int AS n FROM pool_executors WHERE tenant_id = $1 AND pool_id = $2 AND sandbox = ANY ($4::int[]) GROUP BY sandbox`,
        [pool.tenant_id, pool.id, pool.max_executors, [...touched]],
      );
      const sandboxes = counts.rows.map((c) => ({ tenantId: pool.tenant_id, instanceName: poolSandboxName(pool.agent_type, c.sandbox), active: c.n }));
      if (this.#o.publish) {
        const inst = await tx.query<{ id: string }>('SELECT id FROM instances WHERE tenant_id = $1 AND name = ANY ($2::text[])', [
          pool.tenant_id,
          sandboxes.map((s) => s.instanceName),
        ]);
        if (inst.rows.length > 0)
          await this.#o.publish(
            tx,
            inst.rows.map((i) => i.id),
          );
      }
      return { changes, sandboxes };
    });
  }

  /**
   * Starts or stops slots; a stop re-checks under the row lock that the slot is still free (a claim that
   * took it meanwhile wins). The ids it changed.
   */
  async #set(tx: Queryable, ids: string[], active: boolean): Promise<string[]> {
    if (ids.length === 0) return [];
    const r = active
      ? await tx.query<{ id: string }>(
          'UPDATE pool_executors SET active = true, activated_at = now(), idle_since = now() WHERE id = ANY ($1::uuid[]) AND NOT active RETURNING id',
          [ids],
        )
      : await tx.query<{ id: string }>(
          'UPDATE pool_executors SET active = false WHERE id = ANY ($1::uuid[]) AND active AND (task_id IS NULL OR lease_until < now()) RETURNING id',
          [ids],
        );
    return r.rows.map((x) => x.id);
  }
}
