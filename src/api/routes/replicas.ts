import { createRoute, z } from '@hono/zod-openapi';
import { ClawplaneError } from '../../errors.ts';
import type { App, RouteDeps } from '../app.ts';
import { allowPlatform } from '../auth.ts';
import { errorResponses, json } from '../schemas.ts';

const ReplicaSchema = z
  .object({
    id: z.string().openapi({ description: 'Replica id, also its DBOS executor id' }),
    roles: z.array(z.string()),
    node: z.string().openapi({ description: 'The node (host) it runs on; local sandboxes belong to it' }),
    hostname: z.string(),
    pid: z.number().int(),
    version: z.string(),
    startedAt: z.string(),
    heartbeatAt: z.string(),
    stoppedAt: z.string().nullable(),
    state: z
      .enum(['live', 'stopped', 'expired'])
      .openapi({ description: 'live: heartbeat within the expiry; stopped: shut down cleanly; expired: silent (crashed or cut off)' }),
    recoveredBy: z.string().nullable().openapi({ description: 'The live replica that took over its pending workflows after it died' }),
    recoveredAt: z.string().nullable(),
    recoveredWorkflows: z.number().int().nullable(),
    self: z.boolean().openapi({ description: 'The replica that answered this request' }),
  })
  .openapi('Replica');

/** The control-plane replicas sharing this database (platform admins). */
export function registerReplicas(app: App, deps: RouteDeps<never, 'replicas'>): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/platform/replicas',
      tags: ['platform'],
      summary: 'The control-plane replicas on this database: roles, node, version, heartbeat, takeovers',
      responses: { 200: json(z.object({ items: z.array(ReplicaSchema) })), ...errorResponses },
    }),
    async (c) => {
      allowPlatform(c, 'platform.manage');
      if (!deps.replicas) throw new ClawplaneError('not_available', 503, 'This process keeps no replica registry (it was not started by "clawplane serve").');
      return c.json({ items: await deps.replicas.list() }, 200);
    },
  );
}
