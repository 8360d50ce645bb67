import { appendAudit } from '../audit/log.ts';
import { containing, keysetPage, type Sorts } from '../db/keyset.ts';
import type { Db, Queryable } from '../db/pool.ts';
import { ConflictError, NotFoundError, QuotaExceededError } from '../errors.ts';
import { syncOidcMemberships, type MembershipChange, type OidcGroupMapping } from '../identity/oidc-groups.ts';
import type { TenantRole } from '../identity/principal.ts';

/** A tenant as the API shows it. */
export interface Tenant {
  id: string;
  slug: string;
  name: string;
  status: 'active' | 'suspended';
  quotas: Quotas;
  createdAt: string;
  updatedAt: string;
}

/** Stored here (issue 3); enforced by the issues that own each resource. */
export interface Quotas {
  maxInstances: number;
  maxConcurrentTasks: number;
  maxStorageBytes: number;
  dailyTokenBudget: number | null;
  dailyCostBudgetUsd: number | null;
  /** Minutes without traffic before the tenant's instances are stopped; null = the platform default, 0 = never. */
  idleTimeoutMinutes: number | null;
  /** What the tenant's executor pools may reserve in total (src/pools/service.ts). */
  maxCpuMillis: number;
  maxMemoryMb: number;
  /**
   * Sandboxes the tenant may run at once (docs/adr/0011-kubernetes.md): its instances set running plus
   * what its executor pools reserve at their max; null = no bound beyond maxInstances.
   */
  maxSandboxes: number | null;
}

/** What the platform admin's tenant list shows next to each tenant (issue 9): computed, never stored. */
export interface TenantStats {
  instances: { running: number; total: number };
  /** Metered model calls since 00:00 UTC (the day the daily budgets count). */
  usageToday: { tokens: number; costUsd: number; calls: number };
}

export type TenantWithStats = Tenant & { stats: TenantStats };

export interface Member {
  userId: string;
  email: string;
  displayName: string;
  role: TenantRole;
  source: 'manual' | 'oidc';
  createdAt: string;
}

interface TenantRow {
  id: string;
  slug: string;
  name: string;
  status: 'active' | 'suspended';
  max_instances: number;
  max_concurrent_tasks: number;
  max_storage_bytes: number;
  daily_token_budget: number | null;
  daily_cost_budget_usd: string | null;
  idle_timeout_minutes: number | null;
  max_cpu_millis: number;
  max_memory_mb: number;
  max_sandboxes: number | null;
  created_at: Date;
  updated_at: Date;
}

/** The orders the tenant list offers; each ends in a unique column so its keyset is total. */
export const TENANT_SORTS = {
  slug: [{ sql: 't.slug', type: 'text' }],
  name: [
    { sql: 't.name', type: 'text' },
    { sql: 't.id', type: 'uuid' },
  ],
  createdAt: [
    { sql: 't.created_at', type: 'timestamptz' },
    { sql: 't.id', type: 'uuid' },
  ],
} satisfies Sorts;

/** The orders a tenant's member list offers. */
export const MEMBER_SORTS = {
  email: [
    { sql: 'u.email', type: 'text' },
    { sql: 'm.user_id', type: 'uuid' },
  ],
  createdAt: [
    { sql: 'm.created_at', type: 'timestamptz' },
    { sql: 'm.user_id', type: 'uuid' },
  ],
} satisfies Sorts;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function toTenant(r: TenantRow): Tenant {
  return {
    id: r.id,
    slug: r.slug,
    name: r.name,
    status: r.status,
    quotas: {
      maxInstances: r.max_instances,
      maxConcurrentTasks: r.max_concurrent_tasks,
      maxStorageBytes: r.max_storage_bytes,
      dailyTokenBudget: r.daily_token_budget,
      dailyCostBudgetUsd: r.daily_cost_budget_usd === null ? null : Number(r.daily_cost_budget_usd),
      idleTimeoutMinutes: r.idle_timeout_minutes,
      maxCpuMillis: r.max_cpu_millis,
      maxMemoryMb: r.max_memory_mb,
      maxSandboxes: r.max_sandboxes,
    },
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
  };
}

const QUOTA_COLUMNS: Record<keyof Quotas, string> = {
  maxInstances: 'max_instances',
  maxConcurrentTasks: 'max_concurrent_tasks',
  maxStorageBytes: 'max_storage_bytes',
  dailyTokenBudget: 'daily_token_budget',
  dailyCostBudgetUsd: 'daily_cost_budget_usd',
  idleTimeoutMinutes: 'idle_timeout_minutes',
  maxCpuMillis: 'max_cpu_millis',
  maxMemoryMb: 'max_memory_mb',
  maxSandboxes: 'max_sandboxes',
};

export interface Audited {
  actor: string;
  requestId?: string | undefined;
}

/** Tenants and their members. Queries on tenant-owned rows always filter by tenant id. */
export class TenantService {
  private readonly db: Db;
  constructor(db: Db) {
    this.db = db;
  }

  /** Finds a tenant by id or slug; undefined when there is none. */
  async find(ref: string, q: Queryable = this.db): Promise<Tenant | undefined> {
    const r = UUID.test(ref)
      ? await q.query<TenantRow>('SELECT * FROM tenants WHERE id = $1', [ref])
      : await q.query<TenantRow>('SELECT * FROM tenants WHERE slug = $1', [ref.toLowerCase()]);
    return r.rows[0] ? toTenant(r.rows[0]) : undefined;
  }

  async get(ref: string): Promise<Tenant> {
    const t = await this.find(ref);
    if (!t) throw new NotFoundError('Tenant');
    return t;
  }

  async list(opts: { userId?: string } = {}): Promise<Tenant[]> {
    const r =
      opts.userId === undefined
        ? await this.db.query<TenantRow>('SELECT * FROM tenants ORDER BY slug')
        : await this.db.query<TenantRow>('SELECT t.* FROM tenants t JOIN memberships m ON m.tenant_id = t.id WHERE m.user_id = $1 ORDER BY t.slug', [
            opts.userId,
          ]);
    return r.rows.map(toTenant);
  }

  /**
   * One page of the tenants a caller can see, each with its instance counts and today's usage. The figures
   * are computed for the page's rows only (one LATERAL aggregate per row over `instances` and `llm_usage`,
   * both indexed by tenant), in the same statement: no query per row, no work for tenants off the page.
   */
  async pageWithStats(
    scope: { userId?: string | undefined; tenantId?: string | undefined },
    page: { limit: number; cursor?: string | undefined; sort: string; q?: string | undefined; status?: Tenant['status'] | undefined },
  ): Promise<{ items: TenantWithStats[]; nextCursor: string | null }> {
    const where: string[] = [];
    const vals: unknown[] = [];
    const add = (sql: string, v: unknown) => {
      vals.push(v);
      where.push(sql.replaceAll('?', `$${vals.length}`));
    };
    if (scope.userId !== undefined) add('EXISTS (SELECT 1 FROM memberships m WHERE m.tenant_id = t.id AND m.user_id = ?)', scope.userId);
    if (scope.tenantId !== undefined) add('t.id = ?', scope.tenantId);
    if (page.status !== undefined) add('t.status = ?', page.status);
    if (page.q !== undefined) add('(t.slug ILIKE ? OR t.name ILIKE ?)', containing(page.q));
    return keysetPage(this.db, {
      ...page,
      sorts: TENANT_SORTS,
      from: 'tenants t',
      select: 't.*',
      where,
      vals,
      perPage: {
        select: `i.total AS instances_total, i.running AS instances_running, u.tokens AS usage_tokens, u.cost AS usage_cost, u.calls AS usage_calls`,
        joins: `CROSS JOIN LATERAL (
           SELECT count(*)::int AS total, (count(*) FILTER (WHERE status = 'running'))::int AS running
             FROM instances WHERE tenant_id = page.id) i
         CROSS JOIN LATERAL (
           SELECT coalesce(sum(input_tokens + output_tokens), 0)::bigint AS tokens, coalesce(sum(cost_usd), 0) AS cost, count(*)::int AS calls
             FROM llm_usage
            WHERE tenant_id = page.id AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') u`,
      },
      map: (raw) => {
        const row = raw as unknown as TenantRow & {
          instances_total: number;
          instances_running: number;
          usage_tokens: string;
          usage_cost: string;
          usage_calls: number;
        };
        return {
          ...toTenant(row),
          stats: {
            instances: { running: row.instances_running, total: row.instances_total },
            usageToday: { tokens: Number(row.usage_tokens), costUsd: Number(row.usage_cost), calls: row.usage_calls },
          },
        };
      },
    });
  }

  async create(input: { slug: string; name: string; quotas?: Partial<Quotas> | undefined }, by: Audited): Promise<Tenant> {
    return this.db.tx(async (tx) => {
      const exists = await tx.query('SELECT 1 FROM tenants WHERE slug = $1', [input.slug]);
      if (exists.rowCount) throw new ConflictError(`A tenant with slug "${input.slug}" already exists: choose another slug.`, 'slug_taken');
      const cols = ['slug', 'name'];
      const vals: unknown[] = [input.slug, input.name];
      for (const [k, v] of Object.entries(input.quotas ?? {})) {
        if (v === undefined) continue;
        cols.push(QUOTA_COLUMNS[k as keyof Quotas]);
        vals.push(v);
      }
      const r = await tx.query<TenantRow>(`INSERT INTO tenants (${cols.join(', ')}) VALUES (${vals.map((_, i) => `$${i + 1}`).join(', ')}) RETURNING *`, vals);
      const t = toTenant(r.rows[0] as TenantRow);
      await appendAudit(tx, {
        actor: by.actor,
        tenantId: t.id,
        action: 'tenant.create',
        target: `tenant:${t.id}`,
        decision: 'success',
        detail: { slug: t.slug, quotas: t.quotas },
        requestId: by.requestId ?? null,
      });
      return t;
    });
  }

  async update(id: string, patch: { name?: string | undefined; quotas?: Partial<Quotas> | undefined }, by: Audited): Promise<Tenant> {
    return this.db.tx(async (tx) => {
      const sets: string[] = [];
      const vals: unknown[] = [];
      if (patch.name !== undefined) {
        vals.push(patch.name);
        sets.push(`name = $${vals.length}`);
      }
      for (const [k, v] of Object.entries(patch.quotas ?? {})) {
        if (v === undefined) continue;
        vals.push(v);
        sets.push(`${QUOTA_COLUMNS[k as keyof Quotas]} = $${vals.length}`);
      }
      vals.push(id);
      const r = await tx.query<TenantRow>(`UPDATE tenants SET ${[...sets, 'updated_at = now()'].join(', ')} WHERE id = $${vals.length} RETURNING *`, vals);
      if (!r.rows[0]) throw new NotFoundError('Tenant');
      const t = toTenant(r.rows[0]);
      await appendAudit(tx, {
        actor: by.actor,
        tenantId: id,
        action: 'tenant.update',
        target: `tenant:${id}`,
        decision: 'success',
        detail: { changed: patch },
        requestId: by.requestId ?? null,
      });
      return t;
    });
  }

  async setStatus(id: string, status: 'active' | 'suspended', by: Audited & { reason?: string | undefined }): Promise<Tenant> {
    return this.db.tx(async (tx) => {
      const r = await tx.query<TenantRow>('UPDATE tenants SET status = $1, updated_at = now() WHERE id = $2 RETURNING *', [status, id]);
      if (!r.rows[0]) throw new NotFoundError('Tenant');
      await appendAudit(tx, {
        actor: by.actor,
        tenantId: id,
        action: status === 'suspended' ? 'tenant.suspend' : 'tenant.resume',
        target: `tenant:${id}`,
        decision: 'success',
        detail: by.reason ? { reason: by.reason } : {},
        requestId: by.requestId ?? null,
      });
      return toTenant(r.rows[0]);
    });
  }

  /** The tenant's tier (docs/adr/0011-kubernetes.md); null: the platform's default tier. */
  async tier(id: string, q: Queryable = this.db): Promise<string | null> {
    return tenantTier(q, id);
  }

  /** Sets the tier (null: the platform default); audited. A running sandbox takes it at its next start. */
  async setTier(id: string, tier: string | null, by: Audited): Promise<void> {
    await this.#setColumn(id, 'tier', tier, { action: 'tenant.tier', detail: { tier } }, by);
  }

  /** Sets one of the tenant's own settings and audits it in the same transaction. */
  async #setColumn(
    id: string,
    column: 'tier' | 'runtime_version',
    value: string | null,
    audit: { action: string; detail: Record<string, unknown> },
    by: Audited,
  ): Promise<void> {
    await this.db.tx(async (tx) => {
      const r = await tx.query(`UPDATE tenants SET ${column} = $1, updated_at = now() WHERE id = $2`, [value, id]);
      if (!r.rowCount) throw new NotFoundError('Tenant');
      await appendAudit(tx, {
        actor: by.actor,
        tenantId: id,
        action: audit.action,
        target: `tenant:${id}`,
        decision: 'success',
        detail: audit.detail,
        requestId: by.requestId ?? null,
      });
    });
  }

  /** The OpenClaw version the tenant's instances run (docs/adr/0011-kubernetes.md); null: the platform default. */
  async runtimeVersion(id: string, q: Queryable = this.db): Promise<string | null> {
    const r = await q.query<{ runtime_version: string | null }>('SELECT runtime_version FROM tenants WHERE id = $1', [id]);
    return r.rows[0]?.runtime_version ?? null;
  }

  /** Sets the tenant's runtime version (null: the platform default); audited. New instances deploy with it. */
  async setRuntimeVersion(id: string, version: string | null, by: Audited): Promise<void> {
    await this.#setColumn(id, 'runtime_version', version, { action: 'tenant.runtime_version', detail: { runtimeVersion: version } }, by);
  }

  /** The tenant's members by OIDC group: each group of the provider's groups claim and the role it grants. */
  async oidcGroups(id: string, q: Queryable = this.db): Promise<OidcGroupMapping[]> {
    const r = await q.query<{ oidc_group: string; role: TenantRole }>(
      'SELECT oidc_group, role FROM tenant_oidc_groups WHERE tenant_id = $1 ORDER BY oidc_group',
      [id],
    );
    return r.rows.map((x) => ({ group: x.oidc_group, role: x.role }));
  }

  /**
   * Replaces the tenant's group mapping and applies it to its users at once (src/identity/oidc-groups.ts):
   * users whose last sign-in carried a newly mapped group become members, those who held their membership
   * only through a removed group lose it. Audited with the memberships it changed. A group named twice is
   * refused by the primary key (the operator's CRD makes the group a list-map key).
   */
  async setOidcGroups(id: string, groups: OidcGroupMapping[], by: Audited): Promise<MembershipChange[]> {
    return this.db.tx(async (tx) => {
      // Taken first, so a sign-in in flight finishes before the mapping changes (oidc-groups.ts).
      await tx.query('LOCK TABLE tenant_oidc_groups IN SHARE ROW EXCLUSIVE MODE');
      const before = await this.oidcGroups(id, tx);
      await tx.query('DELETE FROM tenant_oidc_groups WHERE tenant_id = $1', [id]);
      if (groups.length > 0)
        await tx.query('INSERT INTO tenant_oidc_groups (tenant_id, oidc_group, role) SELECT $1, g, r FROM unnest($2::text[], $3::text[]) AS x (g, r)', [
          id,
          groups.map((g) => g.group),
          groups.map((g) => g.role),
        ]);
      const changes = await syncOidcMemberships(tx, { tenantId: id });
      await appendAudit(tx, {
        actor: by.actor,
        tenantId: id,
        action: 'tenant.oidc_groups',
        target: `tenant:${id}`,
        decision: 'success',
        detail: { before, after: groups, memberships: changes.map((c) => ({ user: c.userId, role: c.role })) },
        requestId: by.requestId ?? null,
      });
      return changes;
    });
  }

  /** Records that the tenant's Tenant resource let go of it (deleted with deletionPolicy Retain); nothing else changes. */
  async released(id: string, by: Audited & { reason: string }): Promise<void> {
    await this.db.tx((tx) =>
      appendAudit(tx, {
        actor: by.actor,
        tenantId: id,
        action: 'tenant.released',
        target: `tenant:${id}`,
        decision: 'success',
        detail: { reason: by.reason },
        requestId: by.requestId ?? null,
      }),
    );
  }

  /** Deletes the tenant and (by cascade) everything it owns. The audit trail stays. */
  async remove(id: string, by: Audited): Promise<void> {
    await this.db.tx(async (tx) => {
      const r = await tx.query<{ slug: string }>('DELETE FROM tenants WHERE id = $1 RETURNING slug', [id]);
      if (!r.rows[0]) throw new NotFoundError('Tenant');
      await appendAudit(tx, {
        actor: by.actor,
        tenantId: id,
        action: 'tenant.delete',
        target: `tenant:${id}`,
        decision: 'success',
        detail: { slug: r.rows[0].slug },
        requestId: by.requestId ?? null,
      });
    });
  }

  async roleOf(tenantId: string, userId: string): Promise<TenantRole | undefined> {
    const r = await this.db.query<{ role: TenantRole }>('SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2', [tenantId, userId]);
    return r.rows[0]?.role;
  }

  /** One page of a tenant's members, searched by email or display name and filtered by role. */
  async membersPage(
    tenantId: string,
    p: { limit: number; cursor?: string | undefined; sort: string; q?: string | undefined; role?: TenantRole | undefined },
  ): Promise<{ items: Member[]; nextCursor: string | null }> {
    const where = ['m.tenant_id = $1'];
    const vals: unknown[] = [tenantId];
    if (p.role !== undefined) {
      vals.push(p.role);
      where.push(`m.role = $${vals.length}`);
    }
    if (p.q !== undefined) {
      vals.push(containing(p.q));
      where.push(`(u.email ILIKE $${vals.length} OR u.display_name ILIKE $${vals.length})`);
    }
    return keysetPage(this.db, {
      ...p,
      sorts: MEMBER_SORTS,
      from: 'memberships m JOIN users u ON u.id = m.user_id',
      select: 'm.user_id, u.email, u.display_name, m.role, m.source, m.created_at',
      where,
      vals,
      map: (x) => {
        const m = x as { user_id: string; email: string; display_name: string; role: TenantRole; source: 'manual' | 'oidc'; created_at: Date };
        return { userId: m.user_id, email: m.email, displayName: m.display_name, role: m.role, source: m.source, createdAt: m.created_at.toISOString() };
      },
    });
  }

  async member(tenantId: string, userId: string): Promise<Member> {
    const r = await this.db.query<{ user_id: string; email: string; display_name: string; role: TenantRole; source: 'manual' | 'oidc'; created_at: Date }>(
      `SELECT m.user_id, u.email, u.display_name, m.role, m.source, m.created_at
         FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 AND m.user_id = $2`,
      [tenantId, userId],
    );
    const m = r.rows[0];
    if (!m) throw new NotFoundError('Member');
    return { userId: m.user_id, email: m.email, displayName: m.display_name, role: m.role, source: m.source, createdAt: m.created_at.toISOString() };
  }

  /**
   * Adds a member by email. A user who has never signed in is pre-provisioned by email and linked at their
   * first OIDC login (only when the provider says the email is verified).
   */
  async addMember(tenantId: string, input: { email: string; role: TenantRole; displayName?: string | undefined }, by: Audited): Promise<Member> {
    const userId = await this.db.tx(async (tx) => {
      const email = input.email.toLowerCase();
      const u = await tx.query<{ id: string }>(
        `INSERT INTO users (email, display_name) VALUES ($1, $2)
         ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id`,
        [email, input.displayName ?? ''],
      );
      const uid = (u.rows[0] as { id: string }).id;
      const ins = await tx.query('INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [tenantId, uid, input.role]);
      if (!ins.rowCount) throw new ConflictError(`${email} is already a member of this tenant: change their role instead.`, 'already_member');
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'member.add',
        target: `user:${uid}`,
        decision: 'success',
        detail: { role: input.role },
        requestId: by.requestId ?? null,
      });
      return uid;
    });
    return this.member(tenantId, userId);
  }

  async changeRole(tenantId: string, userId: string, role: TenantRole, by: Audited): Promise<Member> {
    await this.db.tx(async (tx) => {
      const r = await tx.query<{ old: TenantRole }>(
        `UPDATE memberships m SET role = $3 FROM memberships o
          WHERE m.tenant_id = $1 AND m.user_id = $2 AND o.tenant_id = m.tenant_id AND o.user_id = m.user_id RETURNING o.role AS old`,
        [tenantId, userId, role],
      );
      if (!r.rows[0]) throw new NotFoundError('Member');
      if (r.rows[0].old === 'tenant_admin') await this.keepOneAdmin(tx, tenantId);
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'member.role',
        target: `user:${userId}`,
        decision: 'success',
        detail: { from: r.rows[0].old, to: role },
        requestId: by.requestId ?? null,
      });
    });
    return this.member(tenantId, userId);
  }

  async removeMember(tenantId: string, userId: string, by: Audited): Promise<void> {
    await this.db.tx(async (tx) => {
      const r = await tx.query<{ role: TenantRole }>('DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2 RETURNING role', [tenantId, userId]);
      if (!r.rows[0]) throw new NotFoundError('Member');
      if (r.rows[0].role === 'tenant_admin') await this.keepOneAdmin(tx, tenantId);
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'member.remove',
        target: `user:${userId}`,
        decision: 'success',
        requestId: by.requestId ?? null,
      });
    });
  }

  /** A tenant whose admin is demoted or removed must keep another one, or nobody could manage its members and tokens. */
  private async keepOneAdmin(tx: Queryable, tenantId: string): Promise<void> {
    const r = await tx.query<{ n: number }>(`SELECT count(*)::int AS n FROM memberships WHERE tenant_id = $1 AND role = 'tenant_admin'`, [tenantId]);
    if ((r.rows[0]?.n ?? 0) === 0) {
      throw new ConflictError('This would leave the tenant without a tenant admin: make someone else tenant admin first.', 'last_admin');
    }
  }
}

/** A tenant's tier, for the sandbox driver that picks a RuntimeClass by it; null when none is set (or no such tenant). */
export async function tenantTier(q: Queryable, tenantId: string): Promise<string | null> {
  const r = await q.query<{ tier: string | null }>('SELECT tier FROM tenants WHERE id = $1', [tenantId]);
  return r.rows[0]?.tier ?? null;
}

/**
 * The sandboxes a tenant holds against maxSandboxes: its instances set running (pool sandboxes aside) and
 * the sandboxes each executor pool needs at its max (shards × maxExecutors / executorsPerSandbox, rounded
 * up: what the pool service reserves, src/pools/service.ts).
 */
export async function sandboxesHeld(q: Queryable, tenantId: string): Promise<number> {
  const r = await q.query<{ n: number }>(
    `SELECT (SELECT count(*) FROM instances WHERE tenant_id = $1 AND desired_state = 'running' AND name NOT LIKE 'pool-%')::int
          + (SELECT COALESCE(sum(ceil(shards * max_executors / executors_per_sandbox::numeric)), 0) FROM executor_pools WHERE tenant_id = $1)::int AS n`,
    [tenantId],
  );
  return r.rows[0]?.n ?? 0;
}

/** The refusal when a change would hold more sandboxes than the tenant's maxSandboxes. */
export function sandboxQuotaError(slug: string, limit: number, requested: number, what: string): QuotaExceededError {
  return new QuotaExceededError(
    `Tenant "${slug}" may run at most ${limit} sandbox(es) at once (quota maxSandboxes); ${what} would make ${requested}: stop an instance, lower an executor pool's maxExecutors, or ask a platform admin to raise maxSandboxes.`,
    { quota: 'maxSandboxes', limit, requested },
  );
}
