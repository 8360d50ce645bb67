import { ConflictError, ForbiddenError, NotFoundError, UnauthenticatedError } from '../errors.ts';
import { roleAtLeast, type Principal, type TenantRole } from './principal.ts';

/**
 * Everything a route may ask permission for (issue 3). One function decides; every route calls it.
 * - platform.manage: tenants, platform settings (platform admins).
 * - tenant.read: see a tenant's resources (viewer and up).
 * - tenant.operate: start work: chat, tasks, instances (member and up; refused while suspended).
 * - tenant.admin: members, tokens, credentials, governance (tenant admin).
 * - tenant.manage: tenant-level management that platform admins may also do (members, quotas).
 * Platform admins are not members: they get tenant.manage, never tenant.read/operate/admin, so they
 * cannot read a tenant's data or secrets through the tenant's routes.
 */
export type Action = 'platform.manage' | 'tenant.read' | 'tenant.operate' | 'tenant.admin' | 'tenant.manage';

export interface TenantRef {
  id: string;
  slug: string;
  status: 'active' | 'suspended';
}

const NEED: Record<Exclude<Action, 'platform.manage'>, TenantRole> = {
  'tenant.read': 'viewer',
  'tenant.operate': 'member',
  'tenant.admin': 'tenant_admin',
  'tenant.manage': 'tenant_admin',
};

/**
 * Throws unless `principal` may do `action` (on `tenant`, with `role` = the principal's membership role
 * there, if any). A caller with no relation to the tenant gets NotFound, never Forbidden: they must not
 * learn that it exists (issue 3, cross-tenant harness).
 */
export function authorize(principal: Principal | undefined, action: Action, tenant?: TenantRef, role?: TenantRole): void {
  if (!principal) throw new UnauthenticatedError();
  if (action === 'platform.manage') {
    if (principal.kind === 'user' && principal.platformAdmin) return;
    throw new ForbiddenError('Only a platform admin may do this.');
  }
  if (!tenant) throw new NotFoundError('Tenant');
  const effective = principal.kind === 'token' ? (principal.tenantId === tenant.id ? principal.role : undefined) : role;
  const platformAdmin = principal.kind === 'user' && principal.platformAdmin;
  if (effective === undefined) {
    if (platformAdmin && action === 'tenant.manage') return;
    if (platformAdmin)
      throw new ForbiddenError("Platform admins manage tenants but cannot use or read a tenant's resources; ask a tenant admin to add you as a member.");
    throw new NotFoundError('Tenant');
  }
  if (!roleAtLeast(effective, NEED[action])) {
    if (!(platformAdmin && action === 'tenant.manage')) {
      throw new ForbiddenError(`This needs the ${NEED[action]} role in tenant "${tenant.slug}"; you are ${effective}.`);
    }
  }
  if (action === 'tenant.operate') assertTenantActive(tenant);
}

/** Throws 409 tenant_suspended unless the tenant is active: a suspended tenant can be read but starts nothing. */
export function assertTenantActive(tenant: { slug: string; status: string }): void {
  if (tenant.status !== 'active') {
    throw new ConflictError(`Tenant "${tenant.slug}" is suspended: it can be read but cannot start work. A platform admin can resume it.`, 'tenant_suspended');
  }
}
