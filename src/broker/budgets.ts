import type { Db } from '../db/pool.ts';
import { ClawplaneError } from '../errors.ts';

/** A cap that stopped a call; the broker turns it into the caller's API error shape (HTTP 429). */
export class BudgetExceededError extends ClawplaneError {
  readonly limit: string;
  constructor(limit: string, message: string, retryAfterSeconds?: number) {
    super('budget_exceeded', 429, message, retryAfterSeconds === undefined ? undefined : { details: { retryAfterSeconds } });
    this.limit = limit;
  }
}

export interface Limits {
  dailyTokens: number | null;
  dailyCostUsd: number | null;
  requestsPerMinute: number | null;
  maxCallsPerTask: number | null;
}

interface Counter {
  day: string;
  tokens: number;
  cost: number;
  inFlight: number;
}

const LIMITS_CACHE_MS = 5_000;
const utcDay = () => new Date().toISOString().slice(0, 10);

/**
 * Budgets and caps, checked before each call (issue 5, item 3): per tenant and per agent, daily tokens
 * and daily cost, requests per minute, model calls per task. Spend counters live in memory, seeded from
 * today's usage rows, and are charged when a call finishes: a call is admitted only while spend is
 * below the cap, so overspend is bounded by the calls already in flight. (One broker process per
 * tenant keeps this exact; several replicas each admit their own in-flight calls.)
 */
export class Budgets {
  private readonly db: Db;
  private readonly counters = new Map<string, Counter>();
  private readonly seeding = new Map<string, Promise<Counter>>();
  private readonly limitsCache = new Map<string, { at: number; tenant: Limits; agents: Map<string, Limits> }>();
  private readonly windows = new Map<string, number[]>();
  private readonly taskCalls = new Map<string, number>();

  constructor(db: Db) {
    this.db = db;
  }

  /** Throws BudgetExceededError if the call may not start; otherwise counts it in flight. */
  async admit(tenantId: string, agent: string, taskId: string | null): Promise<() => void> {
    const { tenant, agents } = await this.limits(tenantId);
    const agentLimits = agents.get(agent);
    const scopes: [string, Limits | undefined, string][] = [
      [tenantId, tenant, 'tenant'],
      [`${tenantId}/${agent}`, agentLimits, `agent "${agent}"`],
    ];
    const now = Date.now();
    for (const [key, lim, label] of scopes) {
      if (!lim) continue;
      const c = await this.counter(key, tenantId, key === tenantId ? undefined : agent);
      if (lim.dailyTokens !== null && c.tokens >= lim.dailyTokens) {
        throw new BudgetExceededError('daily_tokens', `The daily token budget of ${label} (${lim.dailyTokens} tokens) is used up; it resets at 00:00 UTC. A tenant admin can raise it.`, secondsToMidnight());
      }
      if (lim.dailyCostUsd !== null && c.cost >= lim.dailyCostUsd) {
        throw new BudgetExceededError('daily_cost', `The daily cost budget of ${label} ($${lim.dailyCostUsd}) is used up; it resets at 00:00 UTC. A tenant admin can raise it.`, secondsToMidnight());
      }
      if (lim.requestsPerMinute !== null) {
        const w = (this.windows.get(key) ?? []).filter((t) => now - t < 60_000);
        if (w.length >= lim.requestsPerMinute) {
          this.windows.set(key, w);
          const retry = Math.max(1, Math.ceil((60_000 - (now - (w[0] ?? now))) / 1000));
          throw new BudgetExceededError('rate_limit', `Rate limit of ${label}: ${lim.requestsPerMinute} model calls per minute. Retry in ${retry} s.`, retry);
        }
      }
    }
    if (taskId) {
      const cap = agentLimits?.maxCallsPerTask ?? tenant.maxCallsPerTask;
      const calls = this.taskCalls.get(`${tenantId}/${taskId}`) ?? (await this.seedTaskCalls(tenantId, taskId));
      if (cap !== null && calls >= cap) {
        throw new BudgetExceededError('max_calls_per_task', `Task ${taskId} reached its cap of ${cap} model calls.`);
      }
      this.taskCalls.set(`${tenantId}/${taskId}`, calls + 1);
    }
    const held: Counter[] = [];
    for (const [key, lim] of scopes) {
      if (!lim) continue;
      if (lim.requestsPerMinute !== null) {
        const w = (this.windows.get(key) ?? []).filter((t) => now - t < 60_000);
        w.push(now);
        this.windows.set(key, w);
      }
    }
    for (const key of [tenantId, `${tenantId}/${agent}`]) {
      const c = await this.counter(key, tenantId, key === tenantId ? undefined : agent);
      c.inFlight += 1;
      held.push(c);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const c of held) c.inFlight -= 1;
    };
  }

  /** Charges a finished call to the tenant's and the agent's counters. */
  charge(tenantId: string, agent: string, tokens: number, cost: number): void {
    for (const key of [tenantId, `${tenantId}/${agent}`]) {
      const c = this.counters.get(key);
      if (c && c.day === utcDay()) {
        c.tokens += tokens;
        c.cost += cost;
      }
    }
  }

  /** Drops cached limits after an admin changes them. */
  forget(tenantId: string): void {
    this.limitsCache.delete(tenantId);
  }

  inFlight(tenantId: string): number {
    return this.counters.get(tenantId)?.inFlight ?? 0;
  }

  private async limits(tenantId: string): Promise<{ tenant: Limits; agents: Map<string, Limits> }> {
    const hit = this.limitsCache.get(tenantId);
    if (hit && Date.now() - hit.at < LIMITS_CACHE_MS) return hit;
    const t = await this.db.query<{ daily_token_budget: number | null; daily_cost_budget_usd: string | null }>(
      'SELECT daily_token_budget, daily_cost_budget_usd FROM tenants WHERE id = $1',
      [tenantId],
    );
    const row = t.rows[0];
    const l = await this.db.query<{ agent: string; daily_tokens: number | null; daily_cost_usd: string | null; requests_per_minute: number | null; max_calls_per_task: number | null }>(
      'SELECT agent, daily_tokens, daily_cost_usd, requests_per_minute, max_calls_per_task FROM broker_limits WHERE tenant_id = $1',
      [tenantId],
    );
    const num = (v: string | number | null) => (v === null ? null : Number(v));
    const min = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : Math.min(a, b));
    const tenantRow = l.rows.find((x) => x.agent === '');
    // The platform's quota (tenants table) and the tenant admin's own tenant-wide cap: the lower wins.
    const tenant: Limits = {
      dailyTokens: min(num(row?.daily_token_budget ?? null), num(tenantRow?.daily_tokens ?? null)),
      dailyCostUsd: min(num(row?.daily_cost_budget_usd ?? null), num(tenantRow?.daily_cost_usd ?? null)),
      requestsPerMinute: tenantRow?.requests_per_minute ?? null,
      maxCallsPerTask: tenantRow?.max_calls_per_task ?? null,
    };
    const agents = new Map<string, Limits>();
    for (const x of l.rows) {
      if (x.agent === '') continue;
      agents.set(x.agent, { dailyTokens: num(x.daily_tokens), dailyCostUsd: num(x.daily_cost_usd), requestsPerMinute: x.requests_per_minute, maxCallsPerTask: x.max_calls_per_task });
    }
    const v = { at: Date.now(), tenant, agents };
    this.limitsCache.set(tenantId, v);
    return v;
  }

  private async counter(key: string, tenantId: string, agent: string | undefined): Promise<Counter> {
    const day = utcDay();
    const c = this.counters.get(key);
    if (c && c.day === day) return c;
    let p = this.seeding.get(key);
    if (!p) {
      p = (async () => {
        const r = await this.db.query<{ t: string; c: string }>(
          `SELECT coalesce(sum(input_tokens + output_tokens), 0) AS t, coalesce(sum(cost_usd), 0) AS c FROM llm_usage
            WHERE tenant_id = $1 AND ($2::text IS NULL OR agent = $2) AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'`,
          [tenantId, agent ?? null],
        );
        const fresh: Counter = { day, tokens: Number(r.rows[0]?.t ?? 0), cost: Number(r.rows[0]?.c ?? 0), inFlight: c?.day === day ? c.inFlight : 0 };
        this.counters.set(key, fresh);
        return fresh;
      })().finally(() => this.seeding.delete(key));
      this.seeding.set(key, p);
    }
    return p;
  }

  private async seedTaskCalls(tenantId: string, taskId: string): Promise<number> {
    const r = await this.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM llm_usage WHERE tenant_id = $1 AND task_id = $2 AND outcome = 'ok'`, [tenantId, taskId]);
    return r.rows[0]?.n ?? 0;
  }
}

function secondsToMidnight(): number {
  const now = new Date();
  const next = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  return Math.ceil((next - now.getTime()) / 1000);
}
