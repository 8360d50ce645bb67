import { createRoute, z } from '@hono/zod-openapi';
import { taskTree, type TaskNode } from '../../swarms/tree.ts';
import { swarmRuleInput, SWARM_POLICIES } from '../../swarms/types.ts';
import { AGENT_TYPES, TASK_STATUSES } from '../../tasks/types.ts';
import type { App, RouteDeps } from '../app.ts';
import { allow } from '../auth.ts';
import { errorResponses, json, jsonBody, TenantParam } from '../schemas.ts';

const SwarmRuleSchema = z
  .object({
    id: z.uuid(),
    tenantId: z.uuid(),
    name: z.string(),
    capability: z.string(),
    steps: z.array(z.object({ agentType: z.enum(AGENT_TYPES), capability: z.string(), input: z.string().optional() })),
    policy: z.enum(SWARM_POLICIES),
    quorum: z.number().int().nullable(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi('SwarmRule');
const TaskNodeBase = z.object({
  id: z.uuid(),
  parentId: z.uuid().nullable(),
  status: z.enum(TASK_STATUSES),
  statusReason: z.string(),
  agentType: z.enum(AGENT_TYPES).nullable(),
  capability: z.string().nullable(),
  poolId: z.uuid().nullable(),
  shard: z.number().int().nullable(),
  executorId: z.uuid().nullable(),
  swarmRuleId: z.uuid().nullable(),
  createdAt: z.string(),
  finishedAt: z.string().nullable(),
});
const TaskNodeSchema: z.ZodType<TaskNode> = TaskNodeBase.extend({ children: z.array(z.lazy(() => TaskNodeSchema)) }).openapi(
  'TaskNode',
) as unknown as z.ZodType<TaskNode>;
const RuleParams = TenantParam.extend({
  ruleId: z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name: 'ruleId', in: 'path' }, description: 'Rule id or name' }),
});
const TaskParams = TenantParam.extend({ taskId: z.uuid().openapi({ param: { name: 'taskId', in: 'path' } }) });

/** Swarm rules (tenant.read to read, tenant.admin to define) and the tree of a task's children. */
export function registerSwarms(app: App, deps: RouteDeps<'swarms', 'db'>): void {
  const { swarms } = deps;
  const base = '/api/v1/tenants/{tenant}';

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/swarm-rules`,
      tags: ['swarms'],
      summary: "The tenant's swarm rules",
      request: { params: TenantParam },
      responses: { 200: json(z.object({ items: z.array(SwarmRuleSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await swarms.list(tenant.id) }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'post',
      path: `${base}/swarm-rules`,
      tags: ['swarms'],
      summary:
        'Define a swarm rule: tasks with its capability are decomposed into one child per step (agent type, capability), run in parallel and aggregated under its policy',
      request: { params: TenantParam, body: jsonBody(swarmRuleInput) },
      responses: { 201: json(SwarmRuleSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(await swarms.create(tenant.id, c.req.valid('json'), by), 201);
    },
  );
  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/swarm-rules/{ruleId}`,
      tags: ['swarms'],
      summary: 'One swarm rule',
      request: { params: RuleParams },
      responses: { 200: json(SwarmRuleSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(await swarms.get(tenant.id, c.req.valid('param').ruleId), 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'delete',
      path: `${base}/swarm-rules/{ruleId}`,
      tags: ['swarms'],
      summary: 'Remove a swarm rule (swarms already running keep the steps they read)',
      request: { params: RuleParams },
      responses: { 204: { description: 'Removed' }, ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      await swarms.remove(tenant.id, c.req.valid('param').ruleId, by);
      return c.body(null, 204);
    },
  );
  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/tasks/{taskId}/tree`,
      tags: ['swarms'],
      summary: 'The task and every task below it (a swarm or a delegation), with status, agent type, pool, shard and executor',
      request: { params: TaskParams },
      responses: { 200: json(TaskNodeSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(await taskTree(deps.db, tenant.id, c.req.valid('param').taskId), 200);
    },
  );
}
