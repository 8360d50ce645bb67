/**
 * Tenant membership from the identity provider (docs/adr/0011-kubernetes.md, "Members by OIDC group").
 *
 * A user's `source = 'oidc'` memberships are exactly what the provider said at their last sign-in, read
 * through two sources that are kept on the user row (migration 0026):
 * - the tenant claim (`slug:role` strings, src/identity/oidc.ts) → `users.oidc_claim_roles`;
 * - the groups claim (default `groups`) → `users.oidc_groups`, mapped to roles by each tenant's
 *   `tenant_oidc_groups` (written by the operator from a Tenant resource's `spec.members`).
 * Where several apply to one tenant, the highest role wins. Memberships added by hand (`source = 'manual'`)
 * are never changed or removed here.
 *
 * The same computation runs for one user at sign-in and for one tenant when its group mapping changes, so
 * a group removed from the mapping takes the membership away at once (a session's next request is
 * refused), not at the user's next sign-in. The two are serialized by a lock on `tenant_oidc_groups`: a
 * sign-in takes SHARE (sign-ins run side by side), a mapping change SHARE ROW EXCLUSIVE (it waits for
 * sign-ins in flight and they wait for it), so neither acts on the other's half-written view.
 */
import type { Queryable } from '../db/pool.ts';
import { TENANT_ROLES, type TenantRole } from './principal.ts';

/** At most this many groups of one user are kept (a provider may send thousands; only mapped ones matter). */
export const MAX_GROUPS = 1000;
const MAX_GROUP_LENGTH = 256;

/** The groups claim as a list of group names: an array of strings, or one string (some providers send one group so). */
export function parseGroupsClaim(value: unknown): string[] {
  const raw = Array.isArray(value) ? value : typeof value === 'string' ? [value] : [];
  const out = new Set<string>();
  for (const g of raw) {
    if (typeof g !== 'string' || g.length === 0 || g.length > MAX_GROUP_LENGTH) continue;
    out.add(g);
    if (out.size >= MAX_GROUPS) break;
  }
  return [...out].sort();
}

/** The highest-role expression over a set of role rows (viewer < member < tenant_admin). */
const RANK = `ARRAY['viewer', 'member', 'tenant_admin']`;

export interface MembershipChange {
  tenantId: string;
  slug: string;
  userId: string;
  role: TenantRole | null;
}

/**
 * Brings the `oidc` memberships of one user (at sign-in) or of one tenant (after its mapping changed) in
 * line with the stored claims and group mappings. Returns what changed (role null: removed). Runs in the
 * caller's transaction.
 */
export async function syncOidcMemberships(tx: Queryable, scope: { userId: string } | { tenantId: string }): Promise<MembershipChange[]> {
  const byUser = 'userId' in scope;
  await tx.query(`LOCK TABLE tenant_oidc_groups IN ${byUser ? 'SHARE' : 'SHARE ROW EXCLUSIVE'} MODE`);
  const id = byUser ? scope.userId : scope.tenantId;
  // Candidates: the tenant claim's roles and the mapped groups' roles, for the scope's users and tenants.
  const desired = `
    WITH cand AS (
      ${
        byUser
          ? `SELECT u.id AS user_id, t.id AS tenant_id, c.role
               FROM users u CROSS JOIN LATERAL jsonb_each_text(u.oidc_claim_roles) c (slug, role) JOIN tenants t ON t.slug = c.slug
              WHERE u.id = $1`
          : `SELECT u.id AS user_id, t.id AS tenant_id, u.oidc_claim_roles ->> t.slug AS role
               FROM tenants t JOIN users u ON u.oidc_claim_roles ? t.slug
              WHERE t.id = $1`
      }
      UNION ALL
      SELECT u.id, g.tenant_id, g.role
        FROM tenant_oidc_groups g JOIN users u ON u.oidc_groups @> ARRAY[g.oidc_group]
       WHERE ${byUser ? 'u.id = $1' : 'g.tenant_id = $1'}
    ), desired AS (
      SELECT user_id, tenant_id, (${RANK})[max(array_position(${RANK}, role))] AS role
        FROM cand WHERE role = ANY (${RANK}) GROUP BY user_id, tenant_id
    )`;
  const upserted = await tx.query<{ tenant_id: string; user_id: string; role: TenantRole }>(
    `${desired}
     INSERT INTO memberships (tenant_id, user_id, role, source)
     SELECT tenant_id, user_id, role, 'oidc' FROM desired
     ON CONFLICT (tenant_id, user_id) DO UPDATE SET role = EXCLUDED.role
      WHERE memberships.source = 'oidc' AND memberships.role <> EXCLUDED.role
     RETURNING tenant_id, user_id, role`,
    [id],
  );
  const removed = await tx.query<{ tenant_id: string; user_id: string }>(
    `${desired}
     DELETE FROM memberships m
      WHERE m.source = 'oidc' AND ${byUser ? 'm.user_id = $1' : 'm.tenant_id = $1'}
        AND NOT EXISTS (SELECT 1 FROM desired d WHERE d.user_id = m.user_id AND d.tenant_id = m.tenant_id)
     RETURNING m.tenant_id, m.user_id`,
    [id],
  );
  const changes = [
    ...upserted.rows.map((r) => ({ tenantId: r.tenant_id, userId: r.user_id, role: r.role })),
    ...removed.rows.map((r) => ({ tenantId: r.tenant_id, userId: r.user_id, role: null })),
  ];
  if (changes.length === 0) return [];
  const slugs = await tx.query<{ id: string; slug: string }>('SELECT id, slug FROM tenants WHERE id = ANY ($1::uuid[])', [
    [...new Set(changes.map((c) => c.tenantId))],
  ]);
  const slugOf = new Map(slugs.rows.map((r) => [r.id, r.slug]));
  return changes.map((c) => ({ ...c, slug: slugOf.get(c.tenantId) ?? '' }));
}

/** A tenant's group mapping, as the API shows it. */
export interface OidcGroupMapping {
  group: string;
  role: TenantRole;
}

export function isTenantRole(r: string): r is TenantRole {
  return (TENANT_ROLES as readonly string[]).includes(r);
}
