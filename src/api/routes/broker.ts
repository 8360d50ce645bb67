import { createRoute, z } from '@hono/zod-openapi';
import { appendAudit } from '../../audit/log.ts';
import { UnauthenticatedError } from '../../errors.ts';
import { usageSummary } from '../../broker/usage.ts';
import type { App, RouteDeps } from '../app.ts';
import { allow, allowPlatform } from '../auth.ts';
import { errorResponses, json, jsonBody, TenantParam } from '../schemas.ts';

const AgentName = z.string().regex(/^$|^[a-z0-9][a-z0-9_.-]{0,99}$/, 'an agent name, or "" for the whole tenant');
const LimitEntry = z
  .strictObject({
    agent: AgentName.openapi({ description: '"" applies to the whole tenant' }),
    dailyTokens: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullable(),
    dailyCostUsd: z.number().min(0).max(1e9).nullable(),
    requestsPerMinute: z.number().int().min(0).max(1_000_000).nullable(),
    maxCallsPerTask: z.number().int().min(0).max(1_000_000).nullable(),
  })
  .openapi('BrokerLimit');
const EgressHost = z
  .strictObject({
    host: z
      .string()
      .min(1)
      .max(253)
      .regex(
        /^(\*\.)?[a-zA-Z0-9]([a-zA-Z0-9-]{0,62}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,62}[a-zA-Z0-9])?)*\.?$/,
        'a host name such as api.github.com or *.slack.com',
      ),
    port: z.number().int().min(0).max(65535).default(443).openapi({ description: '0 = any port' }),
  })
  .openapi('EgressHost');
const SkillEndpoint = z
  .object({
    name: z.string(),
    baseUrl: z.string(),
    credentialId: z.uuid().nullable(),
    authStyle: z.enum(['bearer', 'header']),
    headerName: z.string().nullable(),
  })
  .openapi('SkillEndpoint');
const SkillName = TenantParam.extend({
  name: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]{0,39}$/, 'lowercase letters, digits, _ and -')
    .openapi({ param: { name: 'name', in: 'path' } }),
});
const Price = z.object({ model: z.string(), inputUsdPerMtok: z.number(), outputUsdPerMtok: z.number() }).openapi('ModelPrice');
const PriceModel = z.object({
  model: z
    .string()
    .min(1)
    .max(200)
    .regex(/^[A-Za-z0-9._:/@-]+\*?$/, 'a model id, or a prefix ending in *')
    .openapi({ param: { name: 'model', in: 'path' } }),
});
const UsageRow = z
  .object({ day: z.string(), agent: z.string(), model: z.string(), calls: z.number(), inputTokens: z.number(), outputTokens: z.number(), costUsd: z.number() })
  .openapi('UsageRow');

/** Broker governance (issue 5): per-agent caps, egress allow-list, skill endpoints, prices, usage. */
export function registerBroker(app: App, deps: RouteDeps<'broker' | 'brokerGovernance', 'db'>): void {
  const { brokerGovernance: gov, broker } = deps;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/limits',
      tags: ['broker'],
      summary: 'Model-call caps per agent ("" = whole tenant)',
      request: { params: TenantParam },
      responses: { 200: json(z.object({ items: z.array(LimitEntry) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await gov.limits(tenant.id) }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/tenants/{tenant}/limits',
      tags: ['broker'],
      summary: "Replace the tenant's caps (daily tokens and cost, requests per minute, model calls per task); the platform's daily budgets still apply",
      request: { params: TenantParam, body: jsonBody(z.strictObject({ items: z.array(LimitEntry).max(200) })) },
      responses: { 200: json(z.object({ items: z.array(LimitEntry) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json({ items: await gov.setLimits(tenant.id, c.req.valid('json').items, by) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/usage',
      tags: ['broker'],
      summary: 'Model usage per day, agent and model (tokens, cost, calls)',
      request: { params: TenantParam, query: z.object({ days: z.coerce.number().int().min(1).max(366).default(7) }) },
      responses: { 200: json(z.object({ days: z.number(), items: z.array(UsageRow) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const { days } = c.req.valid('query');
      await broker.usage.flush();
      return c.json({ days, items: await usageSummary(deps.db, tenant.id, days) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/egress',
      tags: ['broker'],
      summary: "Hosts the tenant's sandboxes may reach through the broker's HTTPS proxy",
      request: { params: TenantParam },
      responses: { 200: json(z.object({ items: z.array(EgressHost) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await gov.egressHosts(tenant.id) }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/tenants/{tenant}/egress',
      tags: ['broker'],
      summary: 'Replace the egress allow-list (private and metadata addresses stay refused)',
      request: { params: TenantParam, body: jsonBody(z.strictObject({ items: z.array(EgressHost).max(500) })) },
      responses: { 200: json(z.object({ items: z.array(EgressHost) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json({ items: await gov.setEgressHosts(tenant.id, c.req.valid('json').items, by) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/skill-endpoints',
      tags: ['broker'],
      summary: 'Skill APIs the broker reverse-proxies, adding the credential',
      request: { params: TenantParam },
      responses: { 200: json(z.object({ items: z.array(SkillEndpoint) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await gov.skillEndpoints(tenant.id) }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/tenants/{tenant}/skill-endpoints/{name}',
      tags: ['broker'],
      summary: 'Create or replace a skill endpoint: sandboxes call /skills/{name}/… on the broker',
      request: {
        params: SkillName,
        body: jsonBody(
          z.strictObject({
            baseUrl: z.url().max(500),
            credentialId: z.uuid().nullable().default(null),
            authStyle: z.enum(['bearer', 'header']).default('bearer'),
            headerName: z
              .string()
              .regex(/^[A-Za-z0-9-]{1,64}$/)
              .nullable()
              .default(null),
          }),
        ),
      },
      responses: { 200: json(SkillEndpoint), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(await gov.putSkillEndpoint(tenant.id, { name: c.req.valid('param').name, ...c.req.valid('json') }, by), 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'delete',
      path: '/api/v1/tenants/{tenant}/skill-endpoints/{name}',
      tags: ['broker'],
      summary: 'Remove a skill endpoint',
      request: { params: SkillName },
      responses: { 200: json(z.object({ removed: z.literal(true) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      await gov.removeSkillEndpoint(tenant.id, c.req.valid('param').name, by);
      return c.json({ removed: true as const }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/platform/prices',
      tags: ['broker'],
      summary: 'Model prices per million tokens (exact ids or prefixes ending in *)',
      responses: { 200: json(z.object({ items: z.array(Price) })), ...errorResponses },
    }),
    async (c) => {
      if (!c.get('principal')) throw new UnauthenticatedError();
      return c.json({ items: await broker.prices.list() }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/platform/prices/{model}',
      tags: ['broker'],
      summary: 'Set a model price (platform admin)',
      request: {
        params: PriceModel,
        body: jsonBody(z.strictObject({ inputUsdPerMtok: z.number().min(0).max(1e6), outputUsdPerMtok: z.number().min(0).max(1e6) })),
      },
      responses: { 200: json(Price), ...errorResponses },
    }),
    async (c) => {
      const { by } = allowPlatform(c, 'platform.manage');
      const p = { model: c.req.valid('param').model, ...c.req.valid('json') };
      await broker.prices.set(p);
      await deps.db.tx((tx) =>
        appendAudit(tx, {
          actor: by.actor,
          action: 'broker.price',
          target: `model:${p.model}`,
          decision: 'success',
          detail: { ...p },
          requestId: by.requestId,
        }),
      );
      return c.json(p, 200);
    },
  );
}
