import { createRoute, z } from '@hono/zod-openapi';
import { NotFoundError, UnauthenticatedError } from '../../errors.ts';
import { RISKS, type PolicySource } from '../../policy/types.ts';
import type { App, RouteDeps } from '../app.ts';
import { allow, allowPlatform } from '../auth.ts';
import { errorResponses, json, jsonBody, TenantParam } from '../schemas.ts';

const PolicyId = z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lowercase letters, digits and hyphens, e.g. "no-shell-in-public"');
const AgentName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,199}$/, 'an agent id, e.g. "main"');
const ContextValue = z.string().min(1).max(500);
const ToolName = z.string().regex(/^[a-z][a-z0-9_.-]{0,99}$/, 'a tool name, e.g. "web_fetch" or "github.push"');

const PolicyInput = z.strictObject({
  id: PolicyId,
  description: z.string().max(500).default(''),
  cedar: z
    .string()
    .min(1)
    .max(10_000)
    .openapi({ description: 'One Cedar policy, e.g. forbid (principal, action, resource) when { resource.group == "web" };' }),
});

const RestrictionInput = PolicyInput.extend({
  scope: z
    .strictObject({ agent: AgentName.optional(), channel: ContextValue.optional() })
    .optional()
    .openapi({ description: 'Apply only to this agent and/or this channel' }),
}).openapi('PolicyRestrictionInput');

const TenantPolicyInput = z
  .strictObject({
    execPolicy: z.enum(['deny', 'ask']).default('deny').openapi({ description: 'Shell/exec tools: never, or only after a person approves each use' }),
    policies: z.array(RestrictionInput).max(200),
  })
  .openapi('TenantPolicyInput');

const BaselineInput = z.strictObject({ policies: z.array(PolicyInput).max(200) }).openapi('BaselineInput');

const ToolContextSchema = z.strictObject({
  channel: ContextValue.optional(),
  repo: ContextValue.optional(),
  host: ContextValue.optional(),
  taskId: ContextValue.optional(),
});

const ExplainInput = z.strictObject({ tool: ToolName, agent: AgentName.default('main'), context: ToolContextSchema.default({}) }).openapi('PolicyExplainInput');

const ToolInput = z
  .strictObject({
    risk: z.enum(RISKS),
    group: z.string().regex(/^[a-z][a-z0-9_-]{0,49}$/),
    description: z.string().max(500).default(''),
    channels: z.array(ContextValue).max(100).default([]),
    repos: z.array(ContextValue).max(100).default([]),
    hosts: z.array(ContextValue).max(100).default([]),
  })
  .openapi('ToolInput');

const ToolSchema = z
  .object({
    name: z.string(),
    risk: z.enum(RISKS),
    group: z.string(),
    description: z.string(),
    channels: z.array(z.string()).openapi({ description: 'Allowed channels; empty = any' }),
    repos: z.array(z.string()).openapi({ description: 'Allowed repositories; empty = any' }),
    hosts: z.array(z.string()).openapi({ description: 'Allowed hosts; empty = any' }),
  })
  .openapi('Tool');

const BaselinePolicySchema = z
  .object({
    id: z.string(),
    description: z.string(),
    cedar: z.string(),
    effect: z.enum(['permit', 'forbid']),
    approval: z.boolean().openapi({ description: '@approval("required"): a match asks a person instead of refusing' }),
    contextual: z.boolean().openapi({ description: '@contextual("true"): depends on the request context; not rendered into config lists' }),
  })
  .openapi('BaselinePolicy');

const RestrictionSchema = z
  .object({
    id: z.string(),
    description: z.string(),
    cedar: z.string(),
    scope: z.object({ agent: z.string().optional(), channel: z.string().optional() }).optional(),
  })
  .openapi('PolicyRestriction');

const TenantPolicySchema = z
  .object({
    execPolicy: z.enum(['deny', 'ask']),
    policies: z.array(RestrictionSchema),
    version: z.number().int(),
    updatedAt: z.string().nullable(),
  })
  .openapi('TenantPolicy');

export const DecisionSchema = z
  .object({
    outcome: z.enum(['allow', 'deny', 'requires_approval']),
    policyIds: z.array(z.string()).openapi({ description: 'The determining policies: baseline/<id> or tenant/<id>; empty for a default deny' }),
    policies: z.array(
      z.object({
        id: z.string(),
        effect: z.enum(['permit', 'forbid']),
        origin: z.enum(['baseline', 'tenant']),
        description: z.string(),
        approval: z.boolean(),
      }),
    ),
    explanation: z.string(),
    errors: z.array(z.string()),
  })
  .openapi('PolicyDecision');

const EffectiveToolsSchema = z
  .object({
    agent: z.string(),
    allow: z.array(z.string()),
    requiresApproval: z.array(z.string()),
    deny: z.array(z.string()),
  })
  .openapi('EffectiveTools');

const GrantSchema = z
  .object({
    jti: z.string(),
    instanceId: z.string(),
    sandboxStartId: z.string(),
    agent: z.string(),
    tool: z.string(),
    scope: z.string(),
    issuedAt: z.string(),
    expiresAt: z.string(),
    revokedAt: z.string().nullable(),
  })
  .openapi('ToolGrant');

const ApprovalSchema = z
  .object({
    id: z.string(),
    instanceId: z.string().nullable(),
    agent: z.string(),
    tool: z.string(),
    context: z.record(z.string(), z.string()),
    policyIds: z.array(z.string()),
    explanation: z.string(),
    createdAt: z.string(),
  })
  .openapi('ToolApproval');

const toSource = (p: {
  id: string;
  description: string;
  cedar: string;
  scope?: { agent?: string | undefined; channel?: string | undefined } | undefined;
}): PolicySource => {
  const s: PolicySource = { id: p.id, description: p.description, cedar: p.cedar };
  if (p.scope) {
    s.scope = {};
    if (p.scope.agent !== undefined) s.scope.agent = p.scope.agent;
    if (p.scope.channel !== undefined) s.scope.channel = p.scope.channel;
  }
  return s;
};

/**
 * Tool policy for people (issue 5, item 5): the platform baseline (everyone reads it; platform admins
 * replace it), the tool registry, each tenant's forbid-only restrictions (tenant admins), and "explain",
 * which decides a sample request and says why (the Governance page).
 */
export function registerPolicy(app: App, deps: RouteDeps<'gatewayConfig' | 'grants' | 'policy'>): void {
  const { policy, grants } = deps;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/policy/baseline',
      tags: ['policy'],
      summary: 'The platform baseline of tool policies (read-only for tenants)',
      responses: { 200: json(z.object({ policies: z.array(BaselinePolicySchema) })), ...errorResponses },
    }),
    async (c) => {
      if (!c.get('principal')) throw new UnauthenticatedError();
      return c.json({ policies: await policy.getBaseline() }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/policy/baseline',
      tags: ['policy'],
      summary: 'Replace the platform baseline (platform admin); validated against the tool-use schema',
      request: { body: jsonBody(BaselineInput) },
      responses: { 200: json(z.object({ policies: z.array(BaselinePolicySchema) })), ...errorResponses },
    }),
    async (c) => {
      const { by } = allowPlatform(c, 'platform.manage');
      return c.json({ policies: await policy.setBaseline(c.req.valid('json').policies.map(toSource), by) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/policy/tools',
      tags: ['policy'],
      summary: 'The tool registry: risk class, group and scopes of every tool',
      responses: { 200: json(z.object({ items: z.array(ToolSchema) })), ...errorResponses },
    }),
    async (c) => {
      if (!c.get('principal')) throw new UnauthenticatedError();
      return c.json({ items: await policy.tools.list() }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/policy/tools/{tool}',
      tags: ['policy'],
      summary: 'Add or change a tool of the registry (platform admin)',
      request: { params: z.object({ tool: ToolName.openapi({ param: { name: 'tool', in: 'path' } }) }), body: jsonBody(ToolInput) },
      responses: { 200: json(ToolSchema), ...errorResponses },
    }),
    async (c) => {
      const { by } = allowPlatform(c, 'platform.manage');
      return c.json(await policy.tools.upsert({ name: c.req.valid('param').tool, ...c.req.valid('json') }, by), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/policy',
      tags: ['policy'],
      summary: "The tenant's tool governance: exec setting and forbid-only restrictions",
      request: { params: TenantParam },
      responses: { 200: json(TenantPolicySchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const p = await policy.getTenantPolicy(tenant.id);
      return c.json({ ...p, updatedAt: p.updatedAt?.toISOString() ?? null }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/tenants/{tenant}/policy',
      tags: ['policy'],
      summary: "Replace the tenant's restrictions (tenant admin). Forbids only: a permit is refused with 400",
      request: { params: TenantParam, body: jsonBody(TenantPolicyInput) },
      responses: { 200: json(TenantPolicySchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      const body = c.req.valid('json');
      const p = await policy.setTenantPolicy(tenant.id, { execPolicy: body.execPolicy, policies: body.policies.map(toSource) }, by);
      // A new gateway configuration version when the policy changed what the gateways are configured with (docs/adr/0013).
      await deps.gatewayConfig.capture(
        tenant.id,
        { actor: by.actor, person: by.actor, requestId: by.requestId },
        `tool policy changed (policy version ${p.version})`,
      );
      return c.json({ ...p, updatedAt: p.updatedAt?.toISOString() ?? null }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/policy/explain',
      tags: ['policy'],
      summary: 'Decide a sample tool use and explain the outcome with the determining policy ids (nothing is granted)',
      request: { params: TenantParam, body: jsonBody(ExplainInput) },
      responses: { 200: json(DecisionSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const body = c.req.valid('json');
      const ctx = Object.fromEntries(Object.entries(body.context).filter(([, v]) => v !== undefined)) as Record<string, string>;
      return c.json(await policy.decide(tenant.id, { agent: body.agent, tool: body.tool, context: ctx }), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/policy/effective-tools',
      tags: ['policy'],
      summary: "The tools an agent may use, must ask for, and may never use (what the runtime renders into OpenClaw's config)",
      request: { params: TenantParam, query: z.object({ agent: AgentName.default('main') }) },
      responses: { 200: json(EffectiveToolsSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const { agent } = c.req.valid('query');
      const l = await policy.effectiveToolLists(tenant.id, agent);
      return c.json({ agent, allow: l.allow, requiresApproval: l.requiresApproval, deny: l.deny }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/grants',
      tags: ['policy'],
      summary: "Recent tool grants issued to this tenant's sandboxes (never the token itself)",
      request: { params: TenantParam },
      responses: { 200: json(z.object({ items: z.array(GrantSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const items = (await grants.listGrants(tenant.id)).map((g) => ({
        ...g,
        issuedAt: g.issuedAt.toISOString(),
        expiresAt: g.expiresAt.toISOString(),
        revokedAt: g.revokedAt?.toISOString() ?? null,
      }));
      return c.json({ items }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/grants/{jti}/revoke',
      tags: ['policy'],
      summary: 'Revoke a tool grant now (tenant admin); the egress side refuses it from then on',
      request: {
        params: TenantParam.extend({
          jti: z
            .string()
            .max(64)
            .openapi({ param: { name: 'jti', in: 'path' } }),
        }),
      },
      responses: { 200: json(z.object({ revoked: z.literal(true) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      if (!(await grants.revoke(tenant.id, c.req.valid('param').jti, by)))
        throw new NotFoundError('An unrevoked grant with this id', 'It may already be revoked: GET …/grants lists the live ones.');
      return c.json({ revoked: true as const }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/tool-approvals',
      tags: ['policy'],
      summary: "Tool uses waiting for a person's approval",
      request: { params: TenantParam },
      responses: { 200: json(z.object({ items: z.array(ApprovalSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const items = (await grants.listPendingApprovals(tenant.id)).map((a) => ({
        ...a,
        context: Object.fromEntries(Object.entries(a.context).filter((e): e is [string, string] => typeof e[1] === 'string')),
        createdAt: a.createdAt.toISOString(),
      }));
      return c.json({ items }, 200);
    },
  );
}
