import { createRoute, z } from '@hono/zod-openapi';
import { poolInput, poolPatch, POOL_STATES } from '../../pools/types.ts';
import { AGENT_TYPES } from '../../tasks/types.ts';
import type { App, RouteDeps } from '../app.ts';
import { allow } from '../auth.ts';
import { errorResponses, json, jsonBody, TenantParam } from '../schemas.ts';

const PoolSchema = z
  .object({
    id: z.uuid(),
    tenantId: z.uuid(),
    agentType: z.enum(AGENT_TYPES),
    riskClass: z.enum(['standard', 'high']),
    minExecutors: z.number().int(),
    maxExecutors: z.number().int(),
    shards: z.number().int(),
    cpuMillis: z.number().int(),
    memoryMb: z.number().int(),
    executorsPerSandbox: z.number().int().openapi({ description: 'Executors one sandbox of the pool runs at most' }),
    scaleDownAfterSeconds: z.number().int().openapi({ description: 'Idle time after which an executor above minExecutors is stopped' }),
    state: z.enum(POOL_STATES),
    drained: z.boolean().openapi({ description: 'Draining and nothing in flight: the pool has stopped' }),
    instanceId: z.uuid().nullable().openapi({ description: "The pool's own instance (sandbox), deployed on its first work" }),
    queueDepth: z.array(z.number().int()).openapi({ description: 'Tasks waiting for an executor, per shard' }),
    inFlight: z.number().int().openapi({ description: 'Executors running a turn now' }),
    activeExecutors: z.array(z.number().int()).openapi({ description: 'Executors running now (scaled between min and max), per shard' }),
    sandboxes: z.number().int().openapi({ description: 'Sandboxes with a running executor' }),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi('ExecutorPool');
const ExecutorSchema = z
  .object({
    id: z.uuid(),
    poolId: z.uuid(),
    shard: z.number().int(),
    slot: z.number().int(),
    sandbox: z.number().int(),
    gateway: z.string(),
    active: z.boolean(),
    taskId: z.uuid().nullable(),
    turns: z.number().int(),
  })
  .openapi('PoolExecutor');
const PoolParams = TenantParam.extend({
  poolId: z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name: 'poolId', in: 'path' }, description: 'Pool id or agent type' }),
});

/**
 * Executor pools (docs/adr/0014-executor-pools.md). Reading needs tenant.read; defining pools reserves
 * quota (tenant.admin); pause, drain and resume operate the pool (tenant.operate).
 */
export function registerPools(app: App, deps: RouteDeps<'pools'>): void {
  const { pools } = deps;
  const base = '/api/v1/tenants/{tenant}/pools';

  app.openapi(
    createRoute({
      method: 'get',
      path: base,
      tags: ['pools'],
      summary: "The tenant's executor pools with queue depth per shard",
      request: { params: TenantParam },
      responses: { 200: json(z.object({ items: z.array(PoolSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await pools.list(tenant.id) }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'post',
      path: base,
      tags: ['pools'],
      summary: 'Define the executor pool of an agent type (refused beyond the sandbox, CPU or memory quota, naming it)',
      request: { params: TenantParam, body: jsonBody(poolInput) },
      responses: {
        201: json(PoolSchema),
        429: { description: 'Beyond a quota: details.quota names it (maxInstances, maxCpuMillis, maxMemoryMb)' },
        ...errorResponses,
      },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(await pools.create(tenant.id, c.req.valid('json'), by), 201);
    },
  );
  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/{poolId}`,
      tags: ['pools'],
      summary: 'One executor pool',
      request: { params: PoolParams },
      responses: { 200: json(PoolSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(await pools.get(tenant.id, c.req.valid('param').poolId), 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'patch',
      path: `${base}/{poolId}`,
      tags: ['pools'],
      summary:
        "Change a pool's settings (all but its agent type): a new shard count re-routes its unfinished tasks, a higher minimum starts executors now, running executors are never moved",
      request: { params: PoolParams, body: jsonBody(poolPatch) },
      responses: {
        200: json(PoolSchema),
        429: { description: 'Beyond a quota: details.quota names it (maxInstances, maxCpuMillis, maxMemoryMb)' },
        ...errorResponses,
      },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(await pools.update(tenant.id, c.req.valid('param').poolId, c.req.valid('json'), by), 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'delete',
      path: `${base}/{poolId}`,
      tags: ['pools'],
      summary: 'Remove a pool with no unfinished task (409 pool_busy otherwise: drain it first)',
      request: { params: PoolParams },
      responses: { 204: { description: 'Removed' }, ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      await pools.remove(tenant.id, c.req.valid('param').poolId, by);
      return c.body(null, 204);
    },
  );
  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/{poolId}/executors`,
      tags: ['pools'],
      summary: "The pool's executors: shard, gateway, the task each runs now",
      request: { params: PoolParams },
      responses: { 200: json(z.object({ items: z.array(ExecutorSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await pools.executors(tenant.id, c.req.valid('param').poolId) }, 200);
    },
  );
  const ops = [
    ['pause', 'paused', 'Pause: start no new turn (queued tasks wait; in-flight turns finish)'],
    ['drain', 'draining', 'Drain: finish in-flight turns, start none, refuse new tasks (409 pool_draining); `drained` once nothing is in flight'],
    ['resume', 'active', 'Resume taking work'],
  ] as const;
  for (const [op, state, summary] of ops) {
    app.openapi(
      createRoute({
        method: 'post',
        path: `${base}/{poolId}/${op}`,
        tags: ['pools'],
        summary,
        request: { params: PoolParams },
        responses: { 200: json(PoolSchema), ...errorResponses },
      }),
      async (c) => {
        const { tenant, by } = allow(c, 'tenant.operate');
        return c.json(await pools.setState(tenant.id, c.req.valid('param').poolId, state, by), 200);
      },
    );
  }
}
