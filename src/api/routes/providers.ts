import { createRoute, z } from '@hono/zod-openapi';
import { UnauthenticatedError } from '../../errors.ts';
import { createProviderInput, PROVIDER_CATALOGUE, PROVIDER_KINDS, setRouteInput, updateProviderInput, type ProviderInfo } from '../../vault/providers.ts';
import type { App, RouteDeps } from '../app.ts';
import { allow } from '../auth.ts';
import { errorResponses, json, jsonBody, TenantParam } from '../schemas.ts';

const ProviderParams = TenantParam.extend({
  providerId: z.uuid().openapi({ param: { name: 'providerId', in: 'path' } }),
});

export const ProviderSchema = z
  .object({
    id: z.uuid(),
    tenantId: z.uuid(),
    kind: z.enum(PROVIDER_KINDS),
    name: z.string(),
    baseUrl: z.string(),
    credentialId: z.uuid().nullable().openapi({ description: 'The credential holding the API key; the key itself is never returned' }),
    defaultModel: z.string().nullable(),
    enabled: z.boolean(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi('Provider');
type ProviderJson = z.infer<typeof ProviderSchema>;

/** The API view of a provider, field by field (an allow-list, like credentialJson). */
function providerJson(p: ProviderInfo): ProviderJson {
  return {
    id: p.id,
    tenantId: p.tenantId,
    kind: p.kind,
    name: p.name,
    baseUrl: p.baseUrl,
    credentialId: p.credentialId,
    defaultModel: p.defaultModel,
    enabled: p.enabled,
    createdAt: p.createdAt.toISOString(),
    updatedAt: p.updatedAt.toISOString(),
  };
}

const ProviderKindSchema = z
  .object({
    kind: z.enum(PROVIDER_KINDS),
    label: z.string(),
    defaultBaseUrl: z.string().nullable().openapi({ description: 'null: the tenant must give a baseUrl' }),
    keyRequired: z.boolean(),
  })
  .openapi('ProviderKind');

const TargetSchema = z.object({ providerId: z.uuid(), model: z.string() });
const ModelRouteSchema = z
  .object({
    scope: z.enum(['tenant', 'agent', 'skill']),
    scopeName: z.string().openapi({ description: "The agent type or skill id; '' for the tenant default" }),
    targets: z.array(TargetSchema).openapi({ description: 'Tried in order: the primary, then the fallbacks' }),
  })
  .openapi('ModelRoute');

const ConnectionTestSchema = z
  .object({
    ok: z.boolean(),
    modelCount: z.number().int().optional(),
    models: z.array(z.string()).optional().openapi({ description: 'Up to 500 model ids' }),
    error: z.object({ code: z.string(), message: z.string() }).optional(),
    latencyMs: z.number(),
  })
  .openapi('ConnectionTest');

/**
 * LLM providers and model routes of a tenant (issue 4). Members with tenant.read see the settings (no
 * key is part of them); tenant admins change them and run the connection test, which goes through the
 * SSRF-guarded egress path the broker uses.
 */
export function registerProviders(app: App, deps: RouteDeps<'providers'>): void {
  const { providers } = deps;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/provider-kinds',
      tags: ['providers'],
      summary: 'The kinds of LLM provider Clawplane can talk to, with their default base URLs',
      responses: { 200: json(z.object({ items: z.array(ProviderKindSchema) })), ...errorResponses },
    }),
    (c) => {
      if (!c.get('principal')) throw new UnauthenticatedError();
      const items = PROVIDER_KINDS.map((k) => {
        const e = PROVIDER_CATALOGUE[k];
        return { kind: e.kind, label: e.label, defaultBaseUrl: e.defaultBaseUrl, keyRequired: e.keyRequired };
      });
      return c.json({ items }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/providers',
      tags: ['providers'],
      summary: "A tenant's LLM providers",
      request: { params: TenantParam },
      responses: { 200: json(z.object({ items: z.array(ProviderSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: (await providers.list(tenant.id)).map(providerJson) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/providers',
      tags: ['providers'],
      summary: 'Add an LLM provider; give the API key as a credential id (POST …/credentials first)',
      request: { params: TenantParam, body: jsonBody(createProviderInput) },
      responses: { 201: json(ProviderSchema, 'Created'), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(providerJson(await providers.create(tenant.id, c.req.valid('json'), by)), 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/providers/{providerId}',
      tags: ['providers'],
      summary: 'One LLM provider',
      request: { params: ProviderParams },
      responses: { 200: json(ProviderSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(providerJson(await providers.get(tenant.id, c.req.valid('param').providerId)), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'patch',
      path: '/api/v1/tenants/{tenant}/providers/{providerId}',
      tags: ['providers'],
      summary: 'Change a provider: name, base URL, key (credential id), default model, enabled',
      request: { params: ProviderParams, body: jsonBody(updateProviderInput) },
      responses: { 200: json(ProviderSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(providerJson(await providers.update(tenant.id, c.req.valid('param').providerId, c.req.valid('json'), by)), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/api/v1/tenants/{tenant}/providers/{providerId}',
      tags: ['providers'],
      summary: 'Delete a provider and the model routes through it (its credential stays; revoke it separately)',
      request: { params: ProviderParams },
      responses: { 200: json(z.object({ deleted: z.literal(true) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      await providers.remove(tenant.id, c.req.valid('param').providerId, by);
      return c.json({ deleted: true as const }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/providers/{providerId}/test',
      tags: ['providers'],
      summary: "Test the connection: list the provider's models through the guarded egress path (the key is never returned)",
      request: { params: ProviderParams },
      responses: { 200: json(ConnectionTestSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      // A failed test is a result, not an error: the UI shows { ok: false, error } next to the form.
      return c.json(await providers.testConnection(tenant.id, c.req.valid('param').providerId, by), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/model-routes',
      tags: ['providers'],
      summary: 'Model routes: the tenant default and per-agent / per-skill overrides, each an ordered fallback list',
      request: { params: TenantParam },
      responses: { 200: json(z.object({ items: z.array(ModelRouteSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await providers.listRoutes(tenant.id) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/tenants/{tenant}/model-routes',
      tags: ['providers'],
      summary: 'Set one route (scope + scopeName) to an ordered list of (provider, model); [] removes the override',
      request: { params: TenantParam, body: jsonBody(setRouteInput) },
      responses: { 200: json(ModelRouteSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(await providers.setRoute(tenant.id, c.req.valid('json'), by), 200);
    },
  );
}
