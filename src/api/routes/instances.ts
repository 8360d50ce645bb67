import { createRoute, z } from '@hono/zod-openapi';
import { streamSSE } from 'hono/streaming';
import { deployInput, INSTANCE_STATUSES, publicInstance, upgradeInput } from '../../instances/instances.ts';
import { ConflictError } from '../../errors.ts';
import type { App, RouteDeps } from '../app.ts';
import { allow } from '../auth.ts';
import { pageOf, pageQuery, searchParam } from '../paging.ts';
import { errorResponses, json, jsonBody, TenantParam } from '../schemas.ts';

const InstanceParams = TenantParam.extend({
  instanceId: z.uuid().openapi({ param: { name: 'instanceId', in: 'path' } }),
});

const ExecutorHealthSchema = z.object({
  id: z.string(),
  state: z.enum(['starting', 'ready', 'backoff', 'stopped']),
  pid: z.number().int().nullable(),
  restarts: z.number().int(),
  startedAt: z.string().nullable(),
  readyMs: z.number().nullable(),
  lastExit: z.object({ code: z.number().nullable(), signal: z.string().nullable(), at: z.string() }).nullable(),
});

const HealthSchema = z
  .object({ ready: z.boolean(), executors: z.array(ExecutorHealthSchema), supervisorRssBytes: z.number().optional() })
  .openapi('InstanceHealth');

export const InstanceSchema = z
  .object({
    id: z.uuid(),
    tenantId: z.uuid(),
    name: z.string(),
    runtimeVersion: z.string(),
    previousRuntimeVersion: z.string().nullable(),
    executors: z.number().int(),
    desiredState: z.enum(['running', 'stopped', 'destroyed']),
    status: z.enum(INSTANCE_STATUSES),
    statusReason: z.string(),
    health: HealthSchema.nullable(),
    healthCheckedAt: z.string().nullable(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi('Instance');

const InstanceListQuery = pageQuery(['name', 'createdAt'], 'name').extend({
  q: searchParam('the name'),
  status: z
    .enum(INSTANCE_STATUSES)
    .optional()
    .openapi({ param: { name: 'status', in: 'query' } }),
});

const EventSchema = z
  .object({ fromStatus: z.string().nullable(), toStatus: z.string(), reason: z.string(), actor: z.string(), at: z.string() })
  .openapi('InstanceEvent');

const LogsQuery = z.object({
  tail: z.coerce
    .number()
    .int()
    .min(1)
    .max(5000)
    .default(200)
    .openapi({ param: { name: 'tail', in: 'query' } }),
  follow: z
    .enum(['true', 'false'])
    .default('false')
    .openapi({ param: { name: 'follow', in: 'query' }, description: 'true: an SSE stream of new lines after the tail' }),
});

const DestroyQuery = z.object({
  deleteState: z
    .enum(['true', 'false'])
    .default('false')
    .openapi({ param: { name: 'deleteState', in: 'query' }, description: "true: also delete the instance's sessions, memory and workspace" }),
});

/**
 * The instance lifecycle (issue 6). Writes need tenant.operate (members and up; refused while the
 * tenant is suspended) and only change the desired state: they answer 202 and the reconciler does the
 * work, recording each status transition. Reads need tenant.read.
 */
export function registerInstances(app: App, deps: RouteDeps<'instances' | 'reconciler' | 'rotator' | 'sandboxes'>): void {
  const { instances } = deps;
  const accepted = { 202: json(InstanceSchema, 'Accepted: the reconciler converges to it; poll the instance or its events'), ...errorResponses };

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/instances',
      tags: ['instances'],
      summary: "A tenant's instances, a page at a time",
      request: { params: TenantParam, query: InstanceListQuery },
      responses: { 200: json(pageOf(InstanceSchema).openapi('InstancePage')), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(await instances.page(tenant.id, c.req.valid('query')), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/instances',
      tags: ['instances'],
      summary: 'Deploy an OpenClaw gateway for the tenant (refused beyond the maxInstances quota)',
      request: { params: TenantParam, body: jsonBody(deployInput) },
      responses: accepted,
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      return c.json(await instances.deploy(tenant.id, c.req.valid('json'), by), 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/instances/{instanceId}',
      tags: ['instances'],
      summary: 'One instance: desired state, status with reason, last health',
      request: { params: InstanceParams },
      responses: { 200: json(InstanceSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(publicInstance(await instances.get(tenant.id, c.req.valid('param').instanceId)), 200);
    },
  );

  for (const op of ['stop', 'start', 'restart'] as const) {
    app.openapi(
      createRoute({
        method: 'post',
        path: `/api/v1/tenants/{tenant}/instances/{instanceId}/${op}`,
        tags: ['instances'],
        summary: `${op[0]?.toUpperCase()}${op.slice(1)} the instance (state is kept)`,
        request: { params: InstanceParams },
        responses: accepted,
      }),
      async (c) => {
        const { tenant, by } = allow(c, 'tenant.operate');
        return c.json(await instances[op](tenant.id, c.req.valid('param').instanceId, by), 202);
      },
    );
  }

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/instances/{instanceId}/suspend',
      tags: ['instances'],
      summary:
        'Suspend a running instance to a process snapshot (warm resume, issue 10); the next start or request resumes it in about a second. 409 with the reason when this host cannot',
      request: { params: InstanceParams },
      responses: { 200: json(InstanceSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      const row = await instances.get(tenant.id, c.req.valid('param').instanceId);
      const r = await deps.reconciler.suspend(row.id, by.actor);
      if (!r.suspended) throw new ConflictError(`Instance "${row.name}" was not suspended: ${r.reason}.`, 'suspend_unavailable');
      return c.json(publicInstance(await instances.get(tenant.id, row.id)), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/instances/{instanceId}/rotate-credentials',
      tags: ['instances'],
      summary: "Re-issue a running instance's gateway and broker tokens in place (no restart); the old ones are refused from then on",
      request: { params: InstanceParams },
      responses: { 200: json(z.object({ instanceId: z.string(), rotated: z.array(z.string()) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      return c.json(await deps.rotator.rotate(tenant.id, c.req.valid('param').instanceId, by), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/instances/{instanceId}/upgrade',
      tags: ['instances'],
      summary: 'Move to another OpenClaw version with state kept; rolls back when the new version fails its health check',
      request: { params: InstanceParams, body: jsonBody(upgradeInput) },
      responses: accepted,
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      return c.json(await instances.upgrade(tenant.id, c.req.valid('param').instanceId, c.req.valid('json'), by), 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/api/v1/tenants/{tenant}/instances/{instanceId}',
      tags: ['instances'],
      summary: 'Destroy the instance; with deleteState=true also its sessions, memory and workspace',
      request: { params: InstanceParams, query: DestroyQuery },
      responses: accepted,
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      return c.json(await instances.destroy(tenant.id, c.req.valid('param').instanceId, { deleteState: c.req.valid('query').deleteState === 'true' }, by), 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/instances/{instanceId}/events',
      tags: ['instances'],
      summary: 'Status transitions with reasons, oldest first (the last 100)',
      request: { params: InstanceParams },
      responses: { 200: json(z.object({ items: z.array(EventSchema) })), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json({ items: await instances.events(tenant.id, c.req.valid('param').instanceId) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/instances/{instanceId}/health',
      tags: ['instances'],
      summary: "Live health from the sandbox's supervisor (null when the sandbox is not running)",
      request: { params: InstanceParams },
      responses: {
        200: json(z.object({ status: z.enum(INSTANCE_STATUSES), running: z.boolean(), health: HealthSchema.nullable(), checkedAt: z.string() })),
        ...errorResponses,
      },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const row = await instances.get(tenant.id, c.req.valid('param').instanceId);
      const st = row.sandbox ? await deps.sandboxes.status(row.sandbox) : undefined;
      const health = st?.running ? (st.health ?? null) : null;
      return c.json({ status: row.status, running: st?.running === true, health, checkedAt: new Date().toISOString() }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/instances/{instanceId}/logs',
      tags: ['instances'],
      summary: 'Supervisor and gateway logs: the last lines, then (follow=true) new lines as server-sent events',
      request: { params: InstanceParams, query: LogsQuery },
      responses: {
        200: {
          description: 'JSON {items} or, with follow=true, text/event-stream of `log` events',
          content: { 'application/json': { schema: z.object({ items: z.array(z.object({ source: z.string(), line: z.string() })) }) } },
        },
        ...errorResponses,
      },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const { instanceId } = c.req.valid('param');
      const q = c.req.valid('query');
      await instances.get(tenant.id, instanceId);
      const lines = await deps.sandboxes.logs({ tenantId: tenant.id, instanceId }, { tail: q.tail });
      if (q.follow !== 'true') return c.json({ items: lines }, 200);
      return streamSSE(c, async (stream) => {
        for (const l of lines) await stream.writeSSE({ event: 'log', data: JSON.stringify(l) });
        const ac = new AbortController();
        stream.onAbort(() => ac.abort());
        await deps.sandboxes.followLogs({ tenantId: tenant.id, instanceId }, ac.signal, (l) => void stream.writeSSE({ event: 'log', data: JSON.stringify(l) }));
      }) as never;
    },
  );
}
