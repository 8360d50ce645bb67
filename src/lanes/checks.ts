import type { Queryable } from '../db/pool.ts';
import type { SandboxHealth } from '../sandbox/types.ts';
import { EXPIRES_SOON_DAYS } from '../vault/credentials.ts';
import type { Finding, LaneCheck } from './types.ts';

/** A budget at or above this share of its cap is "near" it (warn); at the cap it is used up (fail). */
export const BUDGET_NEAR_SHARE = 0.8;
/** An instance whose last health probe is older than this is reported stale (the reconciler probes far more often). */
const HEALTH_STALE_MS = 15 * 60_000;
/** An instance starting or upgrading for longer than this is reported stuck. */
const TRANSITION_STUCK_MS = 15 * 60_000;

const pct = (n: number) => `${Math.round(n * 100)}%`;
const since = (d: Date, now: Date) => `${Math.round((now.getTime() - d.getTime()) / 60_000)} min`;

/**
 * The doctor lane's checks (docs/lanes.md, "The doctor lane"): computed by Clawplane from its own rows, never by
 * an agent or a model, and harmless: they read, they wake nothing. Each returns at least one finding, so a run
 * shows what was checked even when all is well.
 */
export async function runCheck(db: Queryable, tenantId: string, check: LaneCheck, now: Date): Promise<Finding[]> {
  switch (check) {
    case 'instance-health':
      return instanceHealth(db, tenantId, now);
    case 'budgets':
      return budgets(db, tenantId);
    case 'credentials':
      return credentials(db, tenantId, now);
  }
}

/** The tenant's instances as the reconciler last saw them (status, its last /readyz probe); a sleeping one is not woken. */
async function instanceHealth(db: Queryable, tenantId: string, now: Date): Promise<Finding[]> {
  const r = await db.query<{
    name: string;
    status: string;
    status_reason: string;
    desired_state: string;
    failures: number;
    health: SandboxHealth | null;
    health_checked_at: Date | null;
    updated_at: Date;
  }>(
    `SELECT name, status, status_reason, desired_state, failures, health, health_checked_at, updated_at FROM instances WHERE tenant_id = $1 AND status <> 'destroying' ORDER BY name`,
    [tenantId],
  );
  const f = (severity: Finding['severity'], subject: string, message: string): Finding => ({ check: 'instance-health', severity, subject, message });
  if (r.rows.length === 0) return [f('ok', 'instances', 'no instance is deployed: nothing to check')];
  return r.rows.map((i) => {
    const subject = `instance ${i.name}`;
    const why = i.status_reason ? `: ${i.status_reason}` : '';
    switch (i.status) {
      case 'error':
        return f('fail', subject, `in error${why}${i.failures ? ` (${i.failures} failed attempt(s))` : ''}`);
      case 'suspended':
        return f('warn', subject, `suspended${why}`);
      case 'provisioning':
      case 'upgrading':
        return now.getTime() - i.updated_at.getTime() > TRANSITION_STUCK_MS
          ? f('warn', subject, `${i.status} for ${since(i.updated_at, now)}${why}`)
          : f('ok', subject, `${i.status}${why}`);
      case 'stopped':
        return i.desired_state === 'running'
          ? f('warn', subject, `stopped though asked to run${why}`)
          : f('ok', subject, 'asleep (stopped); the check does not wake it');
      case 'running': {
        if (!i.health || !i.health_checked_at) return f('warn', subject, 'running, but no health probe recorded yet');
        if (now.getTime() - i.health_checked_at.getTime() > HEALTH_STALE_MS)
          return f('warn', subject, `running, but its last health probe is ${since(i.health_checked_at, now)} old`);
        const execs = i.health.executors ?? [];
        const restarts = execs.reduce((n, e) => n + e.restarts, 0);
        if (!i.health.ready) {
          const bad = execs.filter((e) => e.state !== 'ready').map((e) => `${e.id} ${e.state}`);
          return f('fail', subject, `running but not ready: ${bad.length} of ${execs.length} executor(s) not ready (${bad.join(', ')})`);
        }
        if (restarts > 0) return f('warn', subject, `running and ready, but its executors restarted ${restarts} time(s)`);
        return f('ok', subject, `running and ready (${execs.length} executor(s))`);
      }
      default:
        return f('warn', subject, `${i.status}${why}`);
    }
  });
}

/**
 * Today's (UTC) spend from the usage rows against every daily cap: the platform's tenant budget, the tenant
 * admin's tenant-wide and per-agent caps (as the broker admits calls, src/broker/budgets.ts).
 */
async function budgets(db: Queryable, tenantId: string): Promise<Finding[]> {
  const t = await db.query<{ daily_token_budget: string | null; daily_cost_budget_usd: string | null }>(
    'SELECT daily_token_budget, daily_cost_budget_usd FROM tenants WHERE id = $1',
    [tenantId],
  );
  const l = await db.query<{ agent: string; daily_tokens: string | null; daily_cost_usd: string | null }>(
    'SELECT agent, daily_tokens, daily_cost_usd FROM broker_limits WHERE tenant_id = $1 ORDER BY agent',
    [tenantId],
  );
  const u = await db.query<{ agent: string; tokens: string; cost: string }>(
    `SELECT agent, coalesce(sum(input_tokens + output_tokens), 0) AS tokens, coalesce(sum(cost_usd), 0) AS cost FROM llm_usage
      WHERE tenant_id = $1 AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' GROUP BY agent`,
    [tenantId],
  );
  const spent = { tokens: 0, cost: 0 };
  const byAgent = new Map<string, { tokens: number; cost: number }>();
  for (const x of u.rows) {
    const s = { tokens: Number(x.tokens), cost: Number(x.cost) };
    byAgent.set(x.agent, s);
    spent.tokens += s.tokens;
    spent.cost += s.cost;
  }
  const caps: { subject: string; kind: 'tokens' | 'cost'; cap: number; used: number }[] = [];
  const num = (v: string | null) => (v === null ? null : Number(v));
  const add = (subject: string, tokens: number | null, cost: number | null, used: { tokens: number; cost: number }) => {
    if (tokens !== null) caps.push({ subject, kind: 'tokens', cap: tokens, used: used.tokens });
    if (cost !== null) caps.push({ subject, kind: 'cost', cap: cost, used: used.cost });
  };
  add('platform budget of the tenant', num(t.rows[0]?.daily_token_budget ?? null), num(t.rows[0]?.daily_cost_budget_usd ?? null), spent);
  for (const x of l.rows)
    add(
      x.agent === '' ? 'tenant cap' : `cap of agent ${x.agent}`,
      num(x.daily_tokens),
      num(x.daily_cost_usd),
      x.agent === '' ? spent : (byAgent.get(x.agent) ?? { tokens: 0, cost: 0 }),
    );
  const f = (severity: Finding['severity'], subject: string, message: string): Finding => ({ check: 'budgets', severity, subject, message });
  if (caps.length === 0) return [f('ok', 'budgets', 'no daily budget or cap is set')];
  const out: Finding[] = [];
  for (const c of caps) {
    const share = c.cap > 0 ? c.used / c.cap : 1;
    const what = c.kind === 'tokens' ? `${c.used} of ${c.cap} daily tokens` : `$${c.used.toFixed(4)} of $${c.cap} daily cost`;
    if (share >= 1) out.push(f('fail', c.subject, `used up: ${what}; model calls are refused until 00:00 UTC`));
    else if (share >= BUDGET_NEAR_SHARE) out.push(f('warn', c.subject, `near its cap: ${what} (${pct(share)})`));
  }
  if (out.length === 0) {
    const top = caps.reduce((a, b) => (b.used / (b.cap || 1) > a.used / (a.cap || 1) ? b : a));
    out.push(
      f(
        'ok',
        'budgets',
        `${caps.length} daily cap(s), all below ${pct(BUDGET_NEAR_SHARE)}; the highest is the ${top.subject} (${top.kind}) at ${pct(top.used / (top.cap || 1))}`,
      ),
    );
  }
  return out;
}

/** Active credentials past their expiry (fail) or expiring within the console's warning window (warn). */
async function credentials(db: Queryable, tenantId: string, now: Date): Promise<Finding[]> {
  const r = await db.query<{ name: string; expires_at: Date | null }>(
    `SELECT name, expires_at FROM credentials WHERE tenant_id = $1 AND status = 'active' AND revoked_at IS NULL ORDER BY expires_at NULLS LAST, name`,
    [tenantId],
  );
  const f = (severity: Finding['severity'], subject: string, message: string): Finding => ({ check: 'credentials', severity, subject, message });
  const out: Finding[] = [];
  const horizon = now.getTime() + EXPIRES_SOON_DAYS * 86_400_000;
  for (const c of r.rows) {
    if (!c.expires_at || c.expires_at.getTime() > horizon) continue;
    const at = c.expires_at.toISOString();
    if (c.expires_at.getTime() <= now.getTime())
      out.push(f('fail', `credential ${c.name}`, `expired at ${at}: what uses it fails until a tenant admin replaces it`));
    else
      out.push(
        f(
          'warn',
          `credential ${c.name}`,
          `expires in ${Math.max(1, Math.round((c.expires_at.getTime() - now.getTime()) / 3_600_000))} h (${at}): replace it before then`,
        ),
      );
  }
  if (out.length === 0) out.push(f('ok', 'credentials', `${r.rows.length} active credential(s), none expiring within ${EXPIRES_SOON_DAYS} days`));
  return out;
}
