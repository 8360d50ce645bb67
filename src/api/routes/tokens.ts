import { createRoute, z } from '@hono/zod-openapi';
import { roleAtLeast } from '../../identity/principal.ts';
import { ForbiddenError } from '../../errors.ts';
import type { App, RouteDeps } from '../app.ts';
import { allow, requireUser } from '../auth.ts';
import { pageOf, pageQuery, searchParam } from '../paging.ts';
import { ApiTokenSchema, errorResponses, json, jsonBody, TenantParam, TenantRoleSchema } from '../schemas.ts';

const TokenParams = TenantParam.extend({
  tokenId: z.uuid().openapi({ param: { name: 'tokenId', in: 'path' } }),
});

const TokenListQuery = pageQuery(['createdAt', 'name'], '-createdAt').extend({
  q: searchParam('the name'),
  status: z
    .enum(['active', 'revoked', 'expired'])
    .optional()
    .openapi({ param: { name: 'status', in: 'query' } }),
});

/** Tenant API tokens (issue 3): tenant admins mint and revoke them; the token is shown once. */
export function registerTokens(app: App, deps: RouteDeps<'tokens'>): void {
  const { tokens } = deps;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/tokens',
      tags: ['tokens'],
      summary: "A tenant's API tokens, newest first by default, a page at a time (never the token itself)",
      request: { params: TenantParam, query: TokenListQuery },
      responses: { 200: json(pageOf(ApiTokenSchema).openapi('ApiTokenPage')), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.admin');
      return c.json(await tokens.page(tenant.id, c.req.valid('query')), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/tokens',
      tags: ['tokens'],
      summary: 'Create an API token for this tenant; the response is the only time the token is shown',
      request: {
        params: TenantParam,
        body: jsonBody(
          z.strictObject({
            name: z.string().trim().min(1).max(100),
            role: TenantRoleSchema,
            expiresInDays: z.number().int().min(1).max(3650).optional().openapi({ description: 'Omit for a token that does not expire' }),
          }),
        ),
      },
      responses: { 201: json(z.object({ token: z.string(), info: ApiTokenSchema }), 'Created'), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      const user = requireUser(c);
      const body = c.req.valid('json');
      const mine = c.get('role');
      if (!mine || !roleAtLeast(mine, body.role)) throw new ForbiddenError('A token cannot have a stronger role than its creator.');
      const created = await tokens.create(
        tenant.id,
        {
          name: body.name,
          role: body.role,
          createdBy: user.userId,
          expiresAt: body.expiresInDays ? new Date(Date.now() + body.expiresInDays * 86_400_000) : undefined,
        },
        by,
      );
      c.header('Cache-Control', 'no-store');
      return c.json(created, 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/api/v1/tenants/{tenant}/tokens/{tokenId}',
      tags: ['tokens'],
      summary: 'Revoke a token; it stops working at once',
      request: { params: TokenParams },
      responses: { 200: json(ApiTokenSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(await tokens.revoke(tenant.id, c.req.valid('param').tokenId, by), 200);
    },
  );
}
