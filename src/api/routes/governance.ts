import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { CHANNEL_KINDS } from '../../governance/approval-delivery.ts';
import { CHANGE_KINDS, GatewaySettingsSchema, REVIEWABLE_KINDS } from '../../governance/settings.ts';
import { VERSION_STATUSES, type ChangeBy, type ConfigVersion, type ReviewRules } from '../../governance/versions.ts';
import type { App, RouteDeps } from '../app.ts';
import { allow } from '../auth.ts';
import type { AppEnv } from '../env.ts';
import { pageOf, pageQuery } from '../paging.ts';
import { errorResponses, json, jsonBody, TenantParam } from '../schemas.ts';

const VersionRef = z
  .string()
  .regex(/^([1-9][0-9]{0,8}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$/, 'a version number (e.g. 3) or a version id');
const VersionParams = TenantParam.extend({ version: VersionRef.openapi({ param: { name: 'version', in: 'path' }, description: 'A version number or id' }) });

const Reason = z.string().trim().min(1).max(500);

const DiffEntrySchema = z
  .object({ path: z.string(), op: z.enum(['added', 'removed', 'changed']), from: z.unknown().optional(), to: z.unknown().optional() })
  .openapi('GatewayConfigDiffEntry');

const SettingsSchema = z
  .object({
    models: z.array(z.string()).optional(),
    heartbeatEvery: z.string().optional(),
    memory: z.record(z.string(), z.unknown()).optional(),
  })
  .openapi('GatewaySettings');

const VersionSchema = z
  .object({
    id: z.uuid(),
    number: z.number().int(),
    parent: z.number().int().nullable(),
    settings: SettingsSchema,
    config: z.record(z.string(), z.unknown()).openapi({ description: "openclaw.json of the tenant's first gateway; secrets appear only as references" }),
    hash: z.string(),
    diff: z.array(DiffEntrySchema).openapi({ description: 'What changed against the parent version' }),
    kinds: z.array(z.enum(CHANGE_KINDS)),
    author: z.string(),
    reason: z.string(),
    status: z.enum(VERSION_STATUSES).openapi({
      description: 'pending (waits for a second admin), approved (to apply), good (applied and healthy), failed (rolled back), rejected, superseded',
    }),
    statusReason: z.string(),
    decidedBy: z.string().nullable(),
    decidedAt: z.string().nullable(),
    appliedAt: z.string().nullable(),
    appliedHow: z
      .enum(['hot', 'restart'])
      .nullable()
      .openapi({ description: 'How it was first applied and found healthy: hot (OpenClaw reloaded it in place, no restart) or restart; null until applied' }),
    createdAt: z.string(),
  })
  .openapi('GatewayConfigVersion');

const Minutes = z.number().int().min(1).max(10080);
const AgentCapsSchema = z
  .strictObject({
    heartbeatMinMinutes: Minutes.nullable()
      .optional()
      .openapi({ description: "This agent's shortest heartbeat interval in minutes (the stricter of this and the tenant's applies)" }),
    cronMinMinutes: Minutes.nullable().optional().openapi({ description: "This agent's shortest interval between two runs of one cron job, in minutes" }),
  })
  .openapi('GatewayAgentCaps');
const AgentCapsMap = z
  .record(z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'an agent id (lower case letters, digits, - and _)'), AgentCapsSchema)
  .refine((m) => Object.keys(m).length <= 64, 'at most 64 agents');

const RulesSchema = z
  .object({
    review: z.array(z.enum(REVIEWABLE_KINDS)),
    heartbeatMinMinutes: z.number().int().nullable(),
    cronMinMinutes: z.number().int().nullable(),
    agentCaps: z.record(z.string(), AgentCapsSchema),
    updatedBy: z.string().nullable(),
    updatedAt: z.string().nullable(),
  })
  .openapi('GatewayConfigRules');

const RulesInput = z
  .strictObject({
    review: z.array(z.enum(REVIEWABLE_KINDS)).max(REVIEWABLE_KINDS.length).openapi({ description: 'Kinds of change that wait for a second tenant admin' }),
    heartbeatMinMinutes: Minutes.nullable().default(null).openapi({ description: 'Cap: the shortest heartbeat interval in minutes (null: none)' }),
    cronMinMinutes: Minutes.nullable().default(null).openapi({
      description: 'Cap: the shortest interval between two runs of one cron job in minutes (null: none); the broker refuses a scheduled run that comes sooner',
    }),
    agentCaps: AgentCapsMap.default({}).openapi({ description: 'Per agent id: stricter caps of its own' }),
  })
  .openapi('GatewayConfigRulesInput');

const ProposeInput = z.strictObject({ settings: GatewaySettingsSchema, reason: Reason }).openapi('GatewayConfigChange');
const DecideInput = z.strictObject({ comment: z.string().trim().max(500).default('') }).openapi('GatewayConfigApproval');
const RejectInput = z.strictObject({ reason: Reason }).openapi('GatewayConfigRejection');
const RollbackInput = z.strictObject({ reason: Reason }).openapi('GatewayConfigRollback');

const ListQuery = pageQuery(['number'], '-number').extend({
  status: z
    .enum(VERSION_STATUSES)
    .optional()
    .openapi({ param: { name: 'status', in: 'query' } }),
});
const DiffQuery = z.object({
  from: VersionRef.openapi({ param: { name: 'from', in: 'query' }, description: 'A version number or id' }),
  to: VersionRef.openapi({ param: { name: 'to', in: 'query' }, description: 'A version number or id' }),
});

/** The person behind the caller: a token counts as the user who made it (the two-person rule compares people). */
function changeBy(c: Context<AppEnv>, by: { actor: string; requestId: string }): ChangeBy {
  const p = c.get('principal');
  const person = p?.kind === 'token' ? (p.createdBy ? `user:${p.createdBy}` : by.actor) : by.actor;
  return { actor: by.actor, person, requestId: by.requestId };
}

const out = (v: ConfigVersion) => v;

/**
 * Versioned gateway configuration (docs/adr/0013-gateway-config-versions.md): the history of what a tenant's
 * gateways are configured with, diffs between any two versions, changes (applied at once or waiting for a
 * second admin under the tenant's review rules), approvals, rejections and rollbacks. Reads need tenant.read;
 * everything else tenant.admin.
 */
export function registerGovernance(app: App, deps: RouteDeps<'gatewayConfig'>): void {
  const { gatewayConfig } = deps;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/gateway-config/versions',
      tags: ['governance'],
      summary: "The tenant's gateway configuration versions, newest first, a page at a time",
      request: { params: TenantParam, query: ListQuery },
      responses: { 200: json(pageOf(VersionSchema).openapi('GatewayConfigVersionPage')), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const q = c.req.valid('query');
      return c.json(await gatewayConfig.list(tenant.id, q), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/gateway-config/versions/{version}',
      tags: ['governance'],
      summary: 'One configuration version with its rendered config and its diff against the one before',
      request: { params: VersionParams },
      responses: { 200: json(VersionSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(out(await gatewayConfig.get(tenant.id, c.req.valid('param').version)), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/gateway-config/diff',
      tags: ['governance'],
      summary: 'The structural diff between any two versions',
      request: { params: TenantParam, query: DiffQuery },
      responses: {
        200: json(z.object({ from: z.number().int(), to: z.number().int(), diff: z.array(DiffEntrySchema) }).openapi('GatewayConfigDiff')),
        ...errorResponses,
      },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const q = c.req.valid('query');
      return c.json(await gatewayConfig.diff(tenant.id, q.from, q.to), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/gateway-config/versions',
      tags: ['governance'],
      summary: "Change the gateways' settings (tenant admin): applied at once (running gateways restart, then are checked) or pending under a review rule",
      request: { params: TenantParam, body: jsonBody(ProposeInput) },
      responses: { 201: json(VersionSchema, 'The new version (status approved or pending)'), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(out(await gatewayConfig.propose(tenant.id, c.req.valid('json'), changeBy(c, by))), 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/gateway-config/versions/{version}/approve',
      tags: ['governance'],
      summary: 'Approve a pending version (another tenant admin than its proposer); it applies at once',
      request: { params: VersionParams, body: jsonBody(DecideInput) },
      responses: { 200: json(VersionSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(out(await gatewayConfig.approve(tenant.id, c.req.valid('param').version, c.req.valid('json').comment, changeBy(c, by))), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/gateway-config/versions/{version}/reject',
      tags: ['governance'],
      summary: 'Reject a pending version: it never applies',
      request: { params: VersionParams, body: jsonBody(RejectInput) },
      responses: { 200: json(VersionSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(out(await gatewayConfig.reject(tenant.id, c.req.valid('param').version, c.req.valid('json').reason, changeBy(c, by))), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/gateway-config/versions/{version}/rollback',
      tags: ['governance'],
      summary: "Roll back to a version's settings (a new version; under review when rollbacks are); the tool policy stays today's",
      request: { params: VersionParams, body: jsonBody(RollbackInput) },
      responses: { 201: json(VersionSchema, 'The new version'), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(out(await gatewayConfig.rollback(tenant.id, c.req.valid('param').version, c.req.valid('json').reason, changeBy(c, by))), 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/gateway-config/rules',
      tags: ['governance'],
      summary: 'Which kinds of change wait for a second admin, and the heartbeat and cron caps',
      request: { params: TenantParam },
      responses: { 200: json(RulesSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(rulesOut(await gatewayConfig.rules(tenant.id)), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/tenants/{tenant}/gateway-config/rules',
      tags: ['governance'],
      summary: 'Replace the review rules and the heartbeat and cron caps (tenant admin)',
      request: { params: TenantParam, body: jsonBody(RulesInput) },
      responses: { 200: json(RulesSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(rulesOut(await gatewayConfig.setRules(tenant.id, c.req.valid('json'), changeBy(c, by))), 200);
    },
  );
}

const ChannelKindParam = TenantParam.extend({ kind: z.enum(CHANNEL_KINDS).openapi({ param: { name: 'kind', in: 'path' }, description: 'telegram or slack' }) });
const ChannelSchema = z
  .object({ kind: z.enum(CHANNEL_KINDS), credentialId: z.uuid(), target: z.string(), updatedBy: z.string(), updatedAt: z.string() })
  .openapi('ApprovalChannel');
const ChannelInput = z
  .strictObject({
    credentialId: z.uuid().openapi({ description: "The tenant's telegram or slack skill credential (the bot token), by id" }),
    target: z.string().trim().min(1).max(64).openapi({ description: 'Telegram chat id (or @channel), or Slack channel id (C…)' }),
  })
  .openapi('ApprovalChannelInput');

/**
 * Where approval requests (tasks, exec, configuration reviews) are posted: a Telegram or Slack chat, with the
 * tenant's own bot credential; the message links to the console, where signing in comes before any decision.
 */
export function registerApprovalChannels(app: App, deps: RouteDeps<'approvalDelivery'>): void {
  const { approvalDelivery } = deps;
  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/approval-channels',
      tags: ['governance'],
      summary: 'The chats approval requests are posted to',
      request: { params: TenantParam },
      responses: { 200: json(z.object({ items: z.array(ChannelSchema) }).openapi('ApprovalChannelList')), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await approvalDelivery.list(tenant.id) }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/tenants/{tenant}/approval-channels/{kind}',
      tags: ['governance'],
      summary: 'Post approval requests to a Telegram or Slack chat with a bot credential of the tenant (tenant admin)',
      request: { params: ChannelKindParam, body: jsonBody(ChannelInput) },
      responses: { 200: json(ChannelSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(await approvalDelivery.set(tenant.id, c.req.valid('param').kind, c.req.valid('json'), by), 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'delete',
      path: '/api/v1/tenants/{tenant}/approval-channels/{kind}',
      tags: ['governance'],
      summary: 'Stop posting approval requests to that chat (tenant admin)',
      request: { params: ChannelKindParam },
      responses: { 200: json(z.object({ removed: z.literal(true) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      await approvalDelivery.remove(tenant.id, c.req.valid('param').kind, by);
      return c.json({ removed: true as const }, 200);
    },
  );
}

function rulesOut(r: ReviewRules) {
  return { ...r, review: r.review.filter((k): k is (typeof REVIEWABLE_KINDS)[number] => (REVIEWABLE_KINDS as readonly string[]).includes(k)) };
}
