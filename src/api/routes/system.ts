import { createRoute, z } from '@hono/zod-openapi';
import { appliedVersion } from '../../db/migrate.ts';
import type { App, RouteDeps } from '../app.ts';

const READY_TIMEOUT_MS = 2_000;

const Health = z.object({ status: z.literal('ok') }).openapi('Health');
const Ready = z
  .object({
    status: z.enum(['ready', 'not_ready']),
    checks: z.object({
      database: z.enum(['ok', 'unreachable']),
      migrations: z.enum(['ok', 'pending', 'unknown']),
    }),
    message: z.string().optional(),
  })
  .openapi('Readiness');

/** /healthz (process up), /readyz (database reachable and migrated), /metrics (Prometheus). */
export function registerSystem(app: App, deps: RouteDeps<never, 'db' | 'expectedMigration' | 'metrics'>): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/healthz',
      tags: ['system'],
      summary: 'Liveness: the process is up',
      responses: { 200: { description: 'Up', content: { 'application/json': { schema: Health } } } },
    }),
    (c) => c.json({ status: 'ok' as const }, 200),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/readyz',
      tags: ['system'],
      summary: 'Readiness: the database is reachable and fully migrated',
      responses: {
        200: { description: 'Ready', content: { 'application/json': { schema: Ready } } },
        503: { description: 'Not ready', content: { 'application/json': { schema: Ready } } },
      },
    }),
    async (c) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        const version = await Promise.race([
          appliedVersion(deps.db),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error('timed out')), READY_TIMEOUT_MS);
          }),
        ]);
        if (version < deps.expectedMigration) {
          return c.json(
            {
              status: 'not_ready' as const,
              checks: { database: 'ok' as const, migrations: 'pending' as const },
              message: `Database is at migration ${version} of ${deps.expectedMigration}: run "clawplane migrate".`,
            },
            503,
          );
        }
        return c.json({ status: 'ready' as const, checks: { database: 'ok' as const, migrations: 'ok' as const } }, 200);
      } catch (err) {
        c.get('log').warn({ err: (err as Error).message }, 'readiness: database unreachable');
        return c.json(
          {
            status: 'not_ready' as const,
            checks: { database: 'unreachable' as const, migrations: 'unknown' as const },
            message: 'The database is unreachable.',
          },
          503,
        );
      } finally {
        clearTimeout(timer);
      }
    },
  );

  app.get('/metrics', async (c) => {
    c.header('Content-Type', deps.metrics.registry.contentType);
    return c.body(await deps.metrics.registry.metrics());
  });
}
