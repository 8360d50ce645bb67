import { createRoute, z } from '@hono/zod-openapi';
import type { App, RouteDeps } from '../app.ts';
import { allowPlatform } from '../auth.ts';
import { errorResponses, json } from '../schemas.ts';
import { runDoctor } from '../../doctor/doctor.ts';
import { doctorDeps } from '../../doctor/setup.ts';

const DoctorReportSchema = z
  .object({
    ok: z.boolean(),
    at: z.string(),
    checks: z.array(
      z.object({
        id: z.string(),
        title: z.string(),
        status: z.enum(['ok', 'warn', 'fail', 'skip']),
        detail: z.string(),
        fix: z.string().optional(),
      }),
    ),
  })
  .openapi('DoctorReport');

/** `GET /api/v1/platform/doctor`: the `clawplane doctor` report for platform admins. */
export function registerDoctor(app: App, deps: RouteDeps<'instances' | 'runtimes' | 'sandboxes', 'config' | 'db'>): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/platform/doctor',
      tags: ['platform'],
      summary: 'Health of this installation, as `clawplane doctor` reports it (each check ok, warn, fail or skip, with its fix)',
      request: {
        query: z.object({
          full: z.enum(['true', 'false']).optional().openapi({ description: 'true: re-hash every runtime file against its manifest (slow)' }),
        }),
      },
      responses: { 200: json(DoctorReportSchema), ...errorResponses },
    }),
    async (c) => {
      allowPlatform(c, 'platform.manage');
      const port = Number(new URL(c.req.url).port || 80);
      const report = await runDoctor({
        ...doctorDeps(deps.config, deps.db, deps, { host: deps.config.host, port }),
        full: c.req.valid('query').full === 'true',
      });
      return c.json(report, 200);
    },
  );
}
