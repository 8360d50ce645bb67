import { createRoute, z } from '@hono/zod-openapi';
import type { App, RouteDeps } from '../app.ts';
import { allow } from '../auth.ts';
import { pageOf, pageQuery, searchParam } from '../paging.ts';
import { Email, errorResponses, json, jsonBody, MemberSchema, TenantParam, TenantRoleSchema } from '../schemas.ts';

const MemberParams = TenantParam.extend({
  userId: z.uuid().openapi({ param: { name: 'userId', in: 'path' } }),
});

const MemberListQuery = pageQuery(['email', 'createdAt'], 'email').extend({
  q: searchParam('the email or display name'),
  role: TenantRoleSchema.optional().openapi({ param: { name: 'role', in: 'query' } }),
});

/** Tenant members: tenant admins (and platform admins) manage them; members see them (issue 3). */
export function registerMembers(app: App, deps: RouteDeps<'tenants'>): void {
  const { tenants } = deps;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/members',
      tags: ['members'],
      summary: 'Members of a tenant, a page at a time',
      request: { params: TenantParam, query: MemberListQuery },
      responses: { 200: json(pageOf(MemberSchema).openapi('MemberPage')), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, c.get('role') ? 'tenant.read' : 'tenant.manage');
      return c.json(await tenants.membersPage(tenant.id, c.req.valid('query')), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/members',
      tags: ['members'],
      summary: 'Add a member by email (pre-provisions users who have not signed in yet)',
      request: { params: TenantParam, body: jsonBody(z.strictObject({ email: Email, role: TenantRoleSchema, displayName: z.string().max(100).optional() })) },
      responses: { 201: json(MemberSchema, 'Added'), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.manage');
      return c.json(await tenants.addMember(tenant.id, c.req.valid('json'), by), 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'patch',
      path: '/api/v1/tenants/{tenant}/members/{userId}',
      tags: ['members'],
      summary: "Change a member's role",
      request: { params: MemberParams, body: jsonBody(z.strictObject({ role: TenantRoleSchema })) },
      responses: { 200: json(MemberSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.manage');
      return c.json(await tenants.changeRole(tenant.id, c.req.valid('param').userId, c.req.valid('json').role, by), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/oidc-groups',
      tags: ['members'],
      summary: "Members by OIDC group: the identity provider's groups this tenant maps to a role (set by its Tenant resource)",
      request: { params: TenantParam },
      responses: {
        200: json(z.object({ items: z.array(z.object({ group: z.string(), role: TenantRoleSchema })) }).openapi('OidcGroupMappings')),
        ...errorResponses,
      },
    }),
    async (c) => {
      const { tenant } = allow(c, c.get('role') ? 'tenant.read' : 'tenant.manage');
      return c.json({ items: await tenants.oidcGroups(tenant.id) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/api/v1/tenants/{tenant}/members/{userId}',
      tags: ['members'],
      summary: 'Remove a member',
      request: { params: MemberParams },
      responses: { 200: json(z.object({ removed: z.literal(true) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.manage');
      await tenants.removeMember(tenant.id, c.req.valid('param').userId, by);
      return c.json({ removed: true as const }, 200);
    },
  );
}
