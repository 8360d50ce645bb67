import { createRoute, z } from '@hono/zod-openapi';
import { UnauthenticatedError, ValidationError } from '../../errors.ts';
import type { App, RouteDeps } from '../app.ts';
import { allow, allowPlatform } from '../auth.ts';
import { pageOf, pageQuery, searchParam } from '../paging.ts';
import { errorResponses, json, jsonBody, QuotasPatch, Slug, TenantParam, TenantSchema } from '../schemas.ts';

const TenantStatsSchema = z
  .object({
    instances: z.object({
      running: z.number().int().openapi({ description: 'Instances whose status is running' }),
      total: z.number().int().openapi({ description: 'Every instance of the tenant, whatever its status (what counts against maxInstances)' }),
    }),
    usageToday: z
      .object({
        tokens: z.number().int().openapi({ description: 'Input + output tokens' }),
        costUsd: z.number(),
        calls: z.number().int(),
      })
      .openapi({ description: 'Model calls the broker metered since 00:00 UTC (the day the daily budgets count)' }),
  })
  .openapi('TenantStats');
const TenantListItemSchema = TenantSchema.extend({ stats: TenantStatsSchema }).openapi('TenantListItem');
const TenantListQuery = pageQuery(['slug', 'name', 'createdAt'], 'slug').extend({
  q: searchParam('the slug or name'),
  status: TenantSchema.shape.status.optional().openapi({ param: { name: 'status', in: 'query' } }),
});

/** Tenants: platform admins create, change, suspend and delete; members see their own (issue 3). */
export function registerTenants(app: App, deps: RouteDeps<'tenants'>): void {
  const { tenants } = deps;

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants',
      tags: ['tenants'],
      summary: 'Create a tenant',
      request: { body: jsonBody(z.strictObject({ slug: Slug, name: z.string().trim().min(1).max(200), quotas: QuotasPatch.optional() })) },
      responses: { 201: json(TenantSchema, 'Created'), ...errorResponses },
    }),
    async (c) => {
      const { by } = allowPlatform(c, 'platform.manage');
      return c.json(await tenants.create(c.req.valid('json'), by), 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants',
      tags: ['tenants'],
      summary: 'Tenants you can see (all for platform admins, your own otherwise), a page at a time, each with its instance count and usage today',
      request: { query: TenantListQuery },
      responses: { 200: json(pageOf(TenantListItemSchema).openapi('TenantPage')), ...errorResponses },
    }),
    async (c) => {
      const p = c.get('principal');
      if (!p) throw new UnauthenticatedError();
      const scope = p.kind === 'token' ? { tenantId: p.tenantId } : p.platformAdmin ? {} : { userId: p.userId };
      return c.json(await tenants.pageWithStats(scope, c.req.valid('query')), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}',
      tags: ['tenants'],
      summary: 'One tenant',
      request: { params: TenantParam },
      responses: { 200: json(TenantSchema), ...errorResponses },
    }),
    async (c) => {
      const role = c.get('role');
      const { tenant } = allow(c, role ? 'tenant.read' : 'tenant.manage');
      return c.json(await tenants.get(tenant.id), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'patch',
      path: '/api/v1/tenants/{tenant}',
      tags: ['tenants'],
      summary: 'Rename a tenant or change its quotas (platform admin)',
      request: { params: TenantParam, body: jsonBody(z.strictObject({ name: z.string().trim().min(1).max(200).optional(), quotas: QuotasPatch.optional() })) },
      responses: { 200: json(TenantSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.manage');
      const { by } = allowPlatform(c, 'platform.manage');
      const body = c.req.valid('json');
      if (body.name === undefined && body.quotas === undefined)
        throw new ValidationError('Nothing to change: send name and/or quotas.', [{ path: 'body', message: 'send name and/or quotas' }]);
      return c.json(await tenants.update(tenant.id, body, by), 200);
    },
  );

  for (const [verb, status] of [
    ['suspend', 'suspended'],
    ['resume', 'active'],
  ] as const) {
    app.openapi(
      createRoute({
        method: 'post',
        path: `/api/v1/tenants/{tenant}/${verb}`,
        tags: ['tenants'],
        summary: verb === 'suspend' ? 'Suspend a tenant: it can read but not start work (platform admin)' : 'Resume a suspended tenant (platform admin)',
        request: {
          params: TenantParam,
          body: { required: false, content: { 'application/json': { schema: z.strictObject({ reason: z.string().max(500).optional() }) } } },
        },
        responses: { 200: json(TenantSchema), ...errorResponses },
      }),
      async (c) => {
        const { tenant } = allow(c, 'tenant.manage');
        const { by } = allowPlatform(c, 'platform.manage');
        return c.json(await tenants.setStatus(tenant.id, status, { ...by, reason: c.req.valid('json').reason }), 200);
      },
    );
  }

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/api/v1/tenants/{tenant}',
      tags: ['tenants'],
      summary: 'Delete a tenant and everything it owns (platform admin; confirm with its slug)',
      request: { params: TenantParam, query: z.object({ confirm: z.string().max(64).openapi({ description: "The tenant's slug, typed again" }) }) },
      responses: { 200: json(z.object({ deleted: z.literal(true) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.manage');
      const { by } = allowPlatform(c, 'platform.manage');
      if (c.req.valid('query').confirm !== tenant.slug) {
        throw new ValidationError(`To delete, pass ?confirm=${tenant.slug} (the tenant's slug).`, [{ path: 'query.confirm', message: 'must equal the slug' }]);
      }
      await tenants.remove(tenant.id, by);
      return c.json({ deleted: true as const }, 200);
    },
  );
}
