/**
 * The one gate in front of a tenant's gateway. Every way that can reach or wake a gateway (chat and
 * streaming, the gateway WebSocket, inbound webhooks, tasks) asks it first; it checks the tenant's
 * status, the caller's permission for that channel and, for a turn, the tenant's daily budgets before
 * anything wakes, and answers with a GatewayAccess. The ingress's wake and connect take only that value, and only this module can make
 * one (a private brand, checked again at run time), so a new way in cannot skip the check.
 */
import { BudgetExceededError } from '../broker/budgets.ts';
import type { Db } from '../db/pool.ts';
import { NotFoundError } from '../errors.ts';
import { assertTenantActive, authorize, type Action, type TenantRef } from '../identity/authz.ts';
import { actorOf, type Principal, type TenantRole } from '../identity/principal.ts';
import type { Audited } from '../instances/instances.ts';

/** How a caller reaches the gateway; each needs its own permission. */
export type GatewayChannel = 'chat' | 'hook' | 'socket' | 'task';

/**
 * The permission each channel needs. The socket needs only tenant.read: viewers may open it, and the
 * socket's per-role method allow-list (ingress/ws.ts) decides what they may send.
 */
const NEED: Record<GatewayChannel, Action> = { chat: 'tenant.operate', hook: 'tenant.operate', socket: 'tenant.read', task: 'tenant.operate' };

/**
 * Channels whose every use is a model turn: refused before any wake once the tenant's daily budget is
 * spent, since the broker would refuse the turn's model calls anyway. The socket also reads (history,
 * status), and a task's turn is refused by the broker with the reason in the task's trace.
 */
const TURNS: ReadonlySet<GatewayChannel> = new Set(['chat', 'hook']);

declare const brand: unique symbol;

/** A checked decision that `by` may reach tenant `tenantId`'s gateway over `channel` now. */
export interface GatewayAccess {
  readonly tenantId: string;
  readonly channel: GatewayChannel;
  readonly by: Audited;
  readonly [brand]: true;
}

const issued = new WeakSet<object>();

function issue(tenantId: string, channel: GatewayChannel, by: Audited): GatewayAccess {
  const access = Object.freeze({ tenantId, channel, by }) as GatewayAccess;
  issued.add(access);
  return access;
}

/** Throws unless `access` came from the gate and is for this tenant (a cast cannot forge one). */
export function assertAccess(access: GatewayAccess, tenantId: string): void {
  if (!issued.has(access) || access.tenantId !== tenantId)
    throw new Error('reaching a gateway needs a GatewayAccess from the gate (ingress/access.ts) for its tenant');
}

export class GatewayGate {
  readonly #db: Db;

  constructor(db: Db) {
    this.#db = db;
  }

  /**
   * For an API request: the caller and the tenant as the request resolved them (the tenant row was
   * read for this request by the tenant scope, so its status is current).
   */
  async admit(o: {
    principal: Principal | undefined;
    tenant: TenantRef | undefined;
    role: TenantRole | undefined;
    requestId: string;
    channel: GatewayChannel;
  }): Promise<GatewayAccess> {
    authorize(o.principal, NEED[o.channel], o.tenant, o.role);
    if (!o.tenant || !o.principal) throw new NotFoundError('Tenant');
    assertTenantActive(o.tenant);
    if (TURNS.has(o.channel)) await this.#assertBudgetLeft(o.tenant.id);
    return issue(o.tenant.id, o.channel, { actor: actorOf(o.principal), requestId: o.requestId });
  }

  /**
   * The tenant-wide daily budgets (the platform's quota and the tenant admin's own cap: the lower) against
   * today's settled spend, as the broker counts it (broker_spend, UTC days). Read fresh, so a raised budget
   * lets the next turn through on every replica. The broker stays the enforcer; this only keeps a turn it
   * would refuse from waking an instance first.
   */
  async #assertBudgetLeft(tenantId: string): Promise<void> {
    const r = await this.#db.query<{ tokens_cap: string | null; cost_cap: string | null; tokens: string | null; cost: string | null }>(
      `SELECT least(t.daily_token_budget::numeric, l.daily_tokens::numeric) AS tokens_cap, least(t.daily_cost_budget_usd::numeric, l.daily_cost_usd::numeric) AS cost_cap,
              s.tokens, s.cost_usd AS cost
         FROM tenants t
         LEFT JOIN broker_limits l ON l.tenant_id = t.id AND l.agent = ''
         LEFT JOIN broker_spend s ON s.tenant_id = t.id AND s.scope = 'tenant' AND s.day = (now() AT TIME ZONE 'UTC')::date
        WHERE t.id = $1`,
      [tenantId],
    );
    const b = r.rows[0];
    if (!b) return;
    if (b.tokens_cap !== null && Number(b.tokens ?? 0) >= Number(b.tokens_cap)) {
      throw new BudgetExceededError(
        'daily_tokens',
        `The daily token budget of the tenant (${Number(b.tokens_cap)} tokens) is used up, so no instance was woken for this turn; it resets at 00:00 UTC. A tenant admin can raise it.`,
      );
    }
    if (b.cost_cap !== null && Number(b.cost ?? 0) >= Number(b.cost_cap)) {
      throw new BudgetExceededError(
        'daily_cost',
        `The daily cost budget of the tenant ($${Number(b.cost_cap)}) is used up, so no instance was woken for this turn; it resets at 00:00 UTC. A tenant admin can raise it.`,
      );
    }
  }

  /** For work the platform does on a tenant's behalf (a task's turn): the tenant's status is read now. */
  async admitSystem(tenantId: string, channel: GatewayChannel, by: Audited): Promise<GatewayAccess> {
    const r = await this.#db.query<{ slug: string; status: string }>('SELECT slug, status FROM tenants WHERE id = $1', [tenantId]);
    const t = r.rows[0];
    if (!t) throw new NotFoundError('Tenant');
    assertTenantActive(t);
    return issue(tenantId, channel, by);
  }
}
