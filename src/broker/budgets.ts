import type { Logger } from 'pino';
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

/**
 * One admitted call's hold on the budgets. `settle` charges what the call used and frees its reservation
 * (once; later calls are no-ops); a call that never settles (its replica died) stops counting as in flight
 * when its reservation expires.
 */
export interface BudgetHold {
  settle(tokens: number, costUsd: number): Promise<void>;
}

const LIMITS_CACHE_MS = 5_000;
/** A call in flight longer than this no longer holds its reservation (longer than any upstream timeout). */
const RESERVATION_TTL_S = 600;
/** Settled and expired reservations are kept this long (the requests-per-minute window needs 60 s). */
const PRUNE_EVERY_SETTLES = 500;
const NO_HOLD: BudgetHold = { settle: async () => undefined };

interface Refusal {
  refused: 'daily_tokens' | 'daily_cost' | 'rate_limit' | 'max_calls_per_task';
  scope: 'tenant' | 'agent' | 'task';
  cap: number;
  spent?: number;
  inflight?: number;
  retry?: number;
}

/**
 * Budgets and caps, checked before each call: per tenant and per agent, daily tokens and daily cost,
 * requests per minute, model calls per task. Enforced in PostgreSQL so that every replica sees the same
 * spend (docs/adr/0009-replica-coordination.md): `admit` reserves (one statement, `broker_admit`, which
 * serialises a scope's admissions on its spend row) and `settle` charges the call's real usage and frees the
 * reservation (one statement). A call is admitted while settled spend plus the reservations in flight is
 * below the cap, and reserves the larger of `reserveTokens` and the scope's tokens per call so far today.
 * So total spend stays below cap + the last admitted call's usage + whatever the calls then in flight used
 * beyond their reservations. Tenants without caps cost no statement at all.
 */
export class Budgets {
  private readonly db: Db;
  private readonly log: Logger | undefined;
  private readonly reserveTokens: number;
  private readonly limitsCache = new Map<string, { at: number; tenant: Limits; agents: Map<string, Limits> }>();
  private settles = 0;

  constructor(db: Db, opts: { log?: Logger; reserveTokens?: number } = {}) {
    this.db = db;
    this.log = opts.log;
    this.reserveTokens = Math.max(0, Math.floor(opts.reserveTokens ?? 0));
  }

  /** Throws BudgetExceededError if the call may not start; otherwise reserves its place in the budgets. */
  async admit(tenantId: string, agent: string, taskId: string | null): Promise<BudgetHold> {
    const { tenant, agents } = await this.limits(tenantId);
    const agentLimits = agents.get(agent);
    const scope = (l: Limits | undefined) =>
      l && (l.dailyTokens !== null || l.dailyCostUsd !== null || l.requestsPerMinute !== null)
        ? { tokens: l.dailyTokens, cost: l.dailyCostUsd, rpm: l.requestsPerMinute }
        : null;
    const taskCap = taskId ? (agentLimits?.maxCallsPerTask ?? tenant.maxCallsPerTask) : null;
    const limits = { tenant: scope(tenant), agent: scope(agentLimits), taskCap };
    if (!limits.tenant && !limits.agent && taskCap === null) return NO_HOLD;
    const r = await this.db.query<{ r: { id?: string } & Partial<Refusal> }>('SELECT broker_admit($1, $2, $3, $4, $5, $6) AS r', [
      tenantId,
      agent,
      taskId,
      JSON.stringify(limits),
      this.reserveTokens,
      RESERVATION_TTL_S,
    ]);
    const out = r.rows[0]?.r;
    if (!out?.id) throw refusalError(out as Refusal, agent, taskId);
    const id = out.id;
    let settled = false;
    return {
      settle: async (tokens, cost) => {
        if (settled) return;
        settled = true;
        await this.settle(id, tokens, cost);
      },
    };
  }

  /** Drops cached limits after an admin changes them. */
  forget(tenantId: string): void {
    this.limitsCache.delete(tenantId);
  }

  private async settle(id: string, tokens: number, cost: number): Promise<void> {
    try {
      await this.db.query('SELECT broker_settle($1, $2, $3)', [id, Math.max(0, Math.round(tokens)), Math.max(0, cost)]);
    } catch (err) {
      // The call is done; its reservation lapses at its expiry. Its spend is still in its usage row.
      this.log?.error({ err: (err as Error).message }, 'could not settle a budget reservation; it expires on its own');
      return;
    }
    if (++this.settles % PRUNE_EVERY_SETTLES === 0) void this.prune();
  }

  /** Deletes reservations outside the rate window that are settled or expired, and old spend rows. */
  async prune(): Promise<void> {
    try {
      await this.db.query(`DELETE FROM broker_reservations WHERE started_at < now() - interval '5 minutes' AND (settled_at IS NOT NULL OR expires_at < now())`);
      await this.db.query(`DELETE FROM broker_spend WHERE day < (now() AT TIME ZONE 'UTC')::date - 2`);
      await this.db.query(`DELETE FROM broker_task_calls WHERE updated_at < now() - interval '30 days'`);
    } catch (err) {
      this.log?.warn({ err: (err as Error).message }, 'pruning old budget reservations failed; the next prune retries');
    }
  }

  private async limits(tenantId: string): Promise<{ tenant: Limits; agents: Map<string, Limits> }> {
    const hit = this.limitsCache.get(tenantId);
    if (hit && Date.now() - hit.at < LIMITS_CACHE_MS) return hit;
    const t = await this.db.query<{ daily_token_budget: number | null; daily_cost_budget_usd: string | null }>(
      'SELECT daily_token_budget, daily_cost_budget_usd FROM tenants WHERE id = $1',
      [tenantId],
    );
    const row = t.rows[0];
    const l = await this.db.query<{
      agent: string;
      daily_tokens: number | null;
      daily_cost_usd: string | null;
      requests_per_minute: number | null;
      max_calls_per_task: number | null;
    }>('SELECT agent, daily_tokens, daily_cost_usd, requests_per_minute, max_calls_per_task FROM broker_limits WHERE tenant_id = $1', [tenantId]);
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
      agents.set(x.agent, {
        dailyTokens: num(x.daily_tokens),
        dailyCostUsd: num(x.daily_cost_usd),
        requestsPerMinute: x.requests_per_minute,
        maxCallsPerTask: x.max_calls_per_task,
      });
    }
    const v = { at: Date.now(), tenant, agents };
    this.limitsCache.set(tenantId, v);
    return v;
  }
}

function refusalError(r: Refusal, agent: string, taskId: string | null): BudgetExceededError {
  const label = r.scope === 'agent' ? `agent "${agent}"` : 'tenant';
  const busy = r.inflight && r.spent !== undefined && r.spent < r.cap ? ` ${r.inflight} call(s) still in flight count against it: retry when they finish.` : '';
  const retryBusy = busy ? 2 : secondsToMidnight();
  switch (r.refused) {
    case 'daily_tokens':
      return new BudgetExceededError(
        'daily_tokens',
        `The daily token budget of ${label} (${r.cap} tokens) is used up; it resets at 00:00 UTC. A tenant admin can raise it.${busy}`,
        retryBusy,
      );
    case 'daily_cost':
      return new BudgetExceededError(
        'daily_cost',
        `The daily cost budget of ${label} ($${r.cap}) is used up; it resets at 00:00 UTC. A tenant admin can raise it.${busy}`,
        retryBusy,
      );
    case 'rate_limit':
      return new BudgetExceededError('rate_limit', `Rate limit of ${label}: ${r.cap} model calls per minute. Retry in ${r.retry ?? 1} s.`, r.retry ?? 1);
    case 'max_calls_per_task':
      return new BudgetExceededError('max_calls_per_task', `Task ${taskId ?? ''} reached its cap of ${r.cap} model calls.`);
    default:
      return new BudgetExceededError('budget', 'A budget refused this call.');
  }
}

function secondsToMidnight(): number {
  const now = new Date();
  const next = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  return Math.ceil((next - now.getTime()) / 1000);
}
