/**
 * The one gate in front of a tenant's gateway. Every way that can reach or wake a gateway (chat and
 * streaming, the gateway WebSocket, inbound webhooks, tasks) asks it first; it checks the tenant's
 * status and the caller's permission for that channel before anything wakes, and answers with a
 * GatewayAccess. The ingress's wake and connect take only that value, and only this module can make
 * one (a private brand, checked again at run time), so a new way in cannot skip the check.
 */
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
  if (!issued.has(access) || access.tenantId !== tenantId) throw new Error('reaching a gateway needs a GatewayAccess from the gate (ingress/access.ts) for its tenant');
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
  admit(o: { principal: Principal | undefined; tenant: TenantRef | undefined; role: TenantRole | undefined; requestId: string; channel: GatewayChannel }): GatewayAccess {
    authorize(o.principal, NEED[o.channel], o.tenant, o.role);
    if (!o.tenant || !o.principal) throw new NotFoundError('Tenant');
    assertTenantActive(o.tenant);
    return issue(o.tenant.id, o.channel, { actor: actorOf(o.principal), requestId: o.requestId });
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
