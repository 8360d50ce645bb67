import { createRoute, z } from '@hono/zod-openapi';
import { streamSSE } from 'hono/streaming';
import { ValidationError } from '../../errors.ts';
import { agentInput, agentPatch } from '../../tasks/agents.ts';
import { taskInput } from '../../tasks/service.ts';
import { AGENT_TYPES, PRIORITIES, TASK_STATUSES, TERMINAL } from '../../tasks/types.ts';
import type { App, RouteDeps } from '../app.ts';
import { allow } from '../auth.ts';
import { pageOf, pageQuery } from '../paging.ts';
import { errorResponses, IsoTime, json, jsonBody, TenantParam } from '../schemas.ts';

const TaskParams = TenantParam.extend({ taskId: z.uuid().openapi({ param: { name: 'taskId', in: 'path' } }) });
const AgentParams = TenantParam.extend({
  agentId: z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name: 'agentId', in: 'path' }, description: 'Agent id or name' }),
});

const TaskSchema = z
  .object({
    id: z.uuid(),
    tenantId: z.uuid(),
    parentId: z.uuid().nullable(),
    rootId: z.uuid(),
    agentId: z.uuid().nullable(),
    requestedAgent: z.string().nullable(),
    capability: z.string().nullable(),
    input: z.string(),
    priority: z.enum(PRIORITIES),
    agentType: z.enum(AGENT_TYPES).nullable(),
    poolId: z.uuid().nullable().openapi({ description: 'The executor pool that runs it (docs/adr/0014-executor-pools.md)' }),
    shard: z.number().int().nullable(),
    shardKey: z.string().nullable(),
    executorId: z.uuid().nullable().openapi({ description: 'The pool executor that ran its last turn' }),
    swarmRuleId: z.uuid().nullable().openapi({ description: 'The swarm rule that decomposed it (GET …/tree shows its children)' }),
    status: z.enum(TASK_STATUSES),
    statusReason: z.string(),
    createdBy: z.string(),
    output: z.string().nullable(),
    confidence: z.number().nullable(),
    inputTokens: z.number().int(),
    outputTokens: z.number().int(),
    costUsd: z.number(),
    attempts: z.number().int(),
    createdAt: z.string(),
    dispatchedAt: z.string().nullable(),
    finishedAt: z.string().nullable(),
    updatedAt: z.string(),
  })
  .openapi('Task');

const ApprovalSchema = z
  .object({
    id: z.uuid(),
    taskId: z.uuid(),
    toolApprovalId: z.uuid().nullable(),
    kind: z.enum(['tool', 'exec']),
    tool: z.string(),
    summary: z.string(),
    status: z.enum(['pending', 'approved', 'rejected', 'expired']),
    expiresAt: z.string(),
    decidedBy: z.string().nullable(),
    decidedAt: z.string().nullable(),
    comment: z.string().nullable(),
    createdAt: z.string(),
  })
  .openapi('TaskApproval');

const TraceEventSchema = z
  .object({ id: z.number().int(), step: z.string(), kind: z.string(), detail: z.record(z.string(), z.unknown()), at: z.string() })
  .openapi('TaskTraceEvent');

const AgentSchema = z
  .object({
    id: z.uuid(),
    tenantId: z.uuid(),
    name: z.string(),
    agentType: z.enum(AGENT_TYPES),
    capabilities: z.array(z.string()),
    model: z.string().nullable(),
    trustLevel: z.number().int(),
    riskClass: z.enum(['standard', 'high']),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi('Agent');

const ListQuery = pageQuery(['createdAt'], '-createdAt').extend({
  status: z
    .enum(TASK_STATUSES)
    .optional()
    .openapi({ param: { name: 'status', in: 'query' } }),
  agent: z
    .string()
    .min(1)
    .max(64)
    .optional()
    .openapi({ param: { name: 'agent', in: 'query' }, description: 'Agent id or name' }),
  priority: z
    .enum(PRIORITIES)
    .optional()
    .openapi({ param: { name: 'priority', in: 'query' } }),
  since: IsoTime.optional().openapi({ param: { name: 'since', in: 'query' }, description: 'Created at or after (ISO 8601)' }),
  until: IsoTime.optional().openapi({ param: { name: 'until', in: 'query' }, description: 'Created before (ISO 8601)' }),
  parentId: z
    .uuid()
    .optional()
    .openapi({ param: { name: 'parentId', in: 'query' } }),
});

const DecisionBody = z.strictObject({
  comment: z.string().max(2000).optional(),
  approvalId: z.uuid().optional().describe('Decide this approval only; default: every pending approval of the task'),
});
const CancelBody = z.strictObject({ reason: z.string().max(500).optional() });
const WebhookBody = z.strictObject({ url: z.url().max(2000) });
const IDEMPOTENCY = /^[\x21-\x7e]{1,200}$/;

/**
 * Tasks, their approvals and the tenant's agents (issue 8). Writes need tenant.operate, reads
 * tenant.read; the approval webhook's URL and key need tenant.admin.
 */
export function registerTasks(app: App, deps: RouteDeps<'agents' | 'approvals' | 'tasks'>): void {
  const { tasks, agents, approvals } = deps;
  const base = '/api/v1/tenants/{tenant}';

  app.openapi(
    createRoute({
      method: 'post',
      path: `${base}/tasks`,
      tags: ['tasks'],
      summary: 'Create a task (Idempotency-Key header: the same key returns the same task, 200 instead of 201)',
      request: { params: TenantParam, body: jsonBody(taskInput), headers: z.object({ 'idempotency-key': z.string().optional() }) },
      responses: {
        201: json(TaskSchema, 'Created and queued'),
        200: json(TaskSchema, 'The task created earlier with this Idempotency-Key'),
        429: json(z.object({ code: z.string(), message: z.string() }), 'Quota'),
        ...errorResponses,
      },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      const key = c.req.header('idempotency-key');
      if (key !== undefined && !IDEMPOTENCY.test(key))
        throw new ValidationError('The Idempotency-Key header must be 1–200 visible ASCII characters.', [
          { path: 'header.idempotency-key', message: '1–200 visible ASCII characters' },
        ]);
      const r = await tasks.create(tenant.id, c.req.valid('json'), { ...by, idempotencyKey: key });
      return c.json(r.task, r.created ? 201 : 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/tasks`,
      tags: ['tasks'],
      summary: "A tenant's tasks, newest first, filtered and paged by cursor",
      request: { params: TenantParam, query: ListQuery },
      responses: { 200: json(pageOf(TaskSchema).openapi('TaskPage')), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(await tasks.list(tenant.id, c.req.valid('query')), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/tasks/{taskId}`,
      tags: ['tasks'],
      summary: 'One task: status with reason, output, tokens, cost, confidence',
      request: { params: TaskParams },
      responses: { 200: json(TaskSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(await tasks.get(tenant.id, c.req.valid('param').taskId), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/tasks/{taskId}/trace`,
      tags: ['tasks'],
      summary: "The task's steps and events, in order",
      request: { params: TaskParams },
      responses: { 200: json(z.object({ items: z.array(TraceEventSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await tasks.trace(tenant.id, c.req.valid('param').taskId) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/tasks/{taskId}/messages`,
      tags: ['tasks'],
      summary: 'The conversation of the task with its agent',
      request: { params: TaskParams },
      responses: { 200: json(z.object({ items: z.array(z.object({ role: z.string(), content: z.string(), at: z.string() })) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await tasks.messages(tenant.id, c.req.valid('param').taskId) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/tasks/{taskId}/approvals`,
      tags: ['tasks'],
      summary: "The task's approvals, decided or not",
      request: { params: TaskParams },
      responses: { 200: json(z.object({ items: z.array(ApprovalSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await tasks.approvalsOf(tenant.id, c.req.valid('param').taskId) }, 200);
    },
  );

  for (const [op, decision] of [
    ['approve', 'approved'],
    ['reject', 'rejected'],
  ] as const) {
    app.openapi(
      createRoute({
        method: 'post',
        path: `${base}/tasks/{taskId}/${op}`,
        tags: ['tasks'],
        summary: `${op === 'approve' ? 'Approve' : 'Reject'} what the task waits for (the approver is recorded; repeating the same decision is harmless)`,
        request: { params: TaskParams, body: jsonBody(DecisionBody) },
        responses: { 200: json(z.object({ task: TaskSchema, approvals: z.array(ApprovalSchema) })), ...errorResponses },
      }),
      async (c) => {
        const { tenant, by } = allow(c, 'tenant.operate');
        const body = c.req.valid('json');
        return c.json(await tasks.decide(tenant.id, c.req.valid('param').taskId, decision, { ...by, comment: body.comment, approvalId: body.approvalId }), 200);
      },
    );
  }

  app.openapi(
    createRoute({
      method: 'post',
      path: `${base}/tasks/{taskId}/cancel`,
      tags: ['tasks'],
      summary: 'Cancel the task and its child tasks',
      request: { params: TaskParams, body: jsonBody(CancelBody) },
      responses: { 200: json(TaskSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      return c.json(await tasks.cancel(tenant.id, c.req.valid('param').taskId, { ...by, reason: c.req.valid('json').reason }), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/tasks/{taskId}/events`,
      tags: ['tasks'],
      summary: "Server-sent events of the task's trace (from Last-Event-ID), then `status` events until it ends",
      request: { params: TaskParams },
      responses: { 200: { description: 'text/event-stream: one event per trace entry (event = step.kind, id = trace id), a final `end`' }, ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const { taskId } = c.req.valid('param');
      await tasks.get(tenant.id, taskId);
      const from = Number(c.req.header('last-event-id') ?? '0');
      return streamSSE(c, async (stream) => {
        let last = Number.isSafeInteger(from) && from > 0 ? from : 0;
        let aborted = false;
        stream.onAbort(() => {
          aborted = true;
        });
        while (!aborted) {
          const events = await tasks.store.trace(tenant.id, taskId, last);
          for (const e of events) {
            await stream.writeSSE({ id: String(e.id), event: `${e.step}.${e.kind}`, data: JSON.stringify(e) });
            last = e.id;
          }
          const t = await tasks.get(tenant.id, taskId);
          if (TERMINAL.includes(t.status) && events.length === 0) {
            await stream.writeSSE({ event: 'end', data: JSON.stringify({ status: t.status, reason: t.statusReason }) });
            break;
          }
          await stream.sleep(events.length ? 50 : 300);
        }
      }) as never;
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/approvals`,
      tags: ['tasks'],
      summary: "The tenant's approvals inbox: what waits for a person, oldest first",
      request: { params: TenantParam },
      responses: { 200: json(z.object({ items: z.array(ApprovalSchema.extend({ taskInput: z.string() })) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await approvals.inbox(tenant.id) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/approval-webhook`,
      tags: ['tasks'],
      summary: 'Where approval requests and decisions are posted (signed with HMAC)',
      request: { params: TenantParam },
      responses: { 200: json(z.object({ url: z.string().nullable() })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(await approvals.webhooks.get(tenant.id), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: `${base}/approval-webhook`,
      tags: ['tasks'],
      summary: 'Set the approval webhook URL; answers a new signing key, shown this once',
      request: { params: TenantParam, body: jsonBody(WebhookBody) },
      responses: { 200: json(z.object({ url: z.string(), signingKey: z.string() })), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(await approvals.webhooks.set(tenant.id, c.req.valid('json').url, by), 200);
    },
  );

  // Agents.
  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/agents`,
      tags: ['agents'],
      summary: "The tenant's agent definitions",
      request: { params: TenantParam },
      responses: { 200: json(z.object({ items: z.array(AgentSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await agents.list(tenant.id) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: `${base}/agents`,
      tags: ['agents'],
      summary: 'Define an agent (shell and browser agents are high risk: they run in their own sandbox)',
      request: { params: TenantParam, body: jsonBody(agentInput) },
      responses: { 201: json(AgentSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      return c.json(await agents.create(tenant.id, c.req.valid('json'), by), 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/agents/{agentId}`,
      tags: ['agents'],
      summary: 'One agent with its skill success rates',
      request: { params: AgentParams },
      responses: {
        200: json(AgentSchema.extend({ skills: z.array(z.object({ skill: z.string(), attempts: z.number().int(), successes: z.number().int() })) })),
        ...errorResponses,
      },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const a = await agents.get(tenant.id, c.req.valid('param').agentId);
      return c.json({ ...a, skills: await agents.skills(tenant.id, a.id) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'patch',
      path: `${base}/agents/{agentId}`,
      tags: ['agents'],
      summary: 'Change an agent',
      request: { params: AgentParams, body: jsonBody(agentPatch) },
      responses: { 200: json(AgentSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      return c.json(await agents.update(tenant.id, c.req.valid('param').agentId, c.req.valid('json'), by), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: `${base}/agents/{agentId}`,
      tags: ['agents'],
      summary: 'Delete an agent (its tasks keep their history)',
      request: { params: AgentParams },
      responses: { 204: { description: 'Deleted' }, ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      await agents.remove(tenant.id, c.req.valid('param').agentId, by);
      return c.body(null, 204);
    },
  );
}
