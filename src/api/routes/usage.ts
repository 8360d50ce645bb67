import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { ValidationError } from '../../errors.ts';
import { dailyUsage, usageCsv, type DailyUsage } from '../../usage/daily.ts';
import type { App, RouteDeps } from '../app.ts';
import type { AppEnv } from '../env.ts';
import { allow, allowPlatform } from '../auth.ts';
import { errorResponses, TenantParam } from '../schemas.ts';

const Day = z.iso.date().refine((s) => Number(s.slice(0, 4)) >= 1970 && Number(s.slice(0, 4)) <= 9999, 'a day between 1970 and 9999');
const MAX_DAYS = 366;

const DailyQuery = z.object({
  from: Day.optional().openapi({ description: 'First UTC day, YYYY-MM-DD (default: six days before `to`)', example: '2026-12-01' }),
  to: Day.optional().openapi({ description: 'Last UTC day, inclusive, YYYY-MM-DD (default: today, UTC)', example: '2026-12-07' }),
  format: z.enum(['json', 'csv']).default('json').openapi({ description: 'csv: text/csv with a header row, one line per tenant and day' }),
});

const DailyUsageSchema = z
  .object({
    tenantId: z.string(),
    tenantSlug: z.string(),
    day: z.string().openapi({ description: 'UTC day, YYYY-MM-DD' }),
    inputTokens: z.number(),
    outputTokens: z.number(),
    costUsd: z.number().openapi({ description: "Priced by the platform's price table when each call was made" }),
    modelCalls: z.number(),
    tasks: z.number().openapi({ description: 'Tasks that ended that day' }),
    taskSeconds: z.number(),
    gatewayHours: z.number().openapi({ description: 'Hours instances spent running (from instance status events)' }),
    artifactBytes: z.number(),
    backupBytes: z.number(),
  })
  .openapi('DailyUsage');

const DailyPage = z.object({ from: z.string(), to: z.string(), items: z.array(DailyUsageSchema) }).openapi('DailyUsagePage');

const responses = {
  200: {
    description: 'Daily usage (JSON, or CSV with format=csv)',
    content: { 'application/json': { schema: DailyPage }, 'text/csv': { schema: z.string() } },
  },
  ...errorResponses,
} as const;

/** The day range of a query, defaulted and bounded; a bad range is a 400 naming the field. */
export function dayRange(q: { from?: string | undefined; to?: string | undefined }, today = new Date()): { from: string; to: string } {
  const to = q.to ?? today.toISOString().slice(0, 10);
  const from = q.from ?? new Date(Date.parse(`${to}T00:00:00Z`) - 6 * 86_400_000).toISOString().slice(0, 10);
  const days = (Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / 86_400_000 + 1;
  if (days < 1)
    throw new ValidationError(`The request is invalid: query.to: must not be before from (${from}).`, [
      { path: 'query.to', message: `must not be before from (${from})` },
    ]);
  if (days > MAX_DAYS)
    throw new ValidationError(`The request is invalid: query.from: at most ${MAX_DAYS} days at once.`, [
      { path: 'query.from', message: `at most ${MAX_DAYS} days at once` },
    ]);
  return { from, to };
}

function answer(c: Context<AppEnv>, range: { from: string; to: string }, items: DailyUsage[], format: 'json' | 'csv', name: string) {
  if (format === 'csv') {
    return c.body(usageCsv(items), 200, {
      'content-type': 'text/csv; charset=utf-8',
      'content-disposition': `attachment; filename="${name}-usage-${range.from}-${range.to}.csv"`,
    });
  }
  return c.json({ ...range, items }, 200);
}

/** Usage for billing per tenant and UTC day (docs/usage.md): a tenant's own, and the platform-wide export. */
export function registerUsage(app: App, deps: RouteDeps<'broker', 'db'>): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/usage/daily',
      tags: ['usage'],
      summary: 'Usage per UTC day for billing: tokens, cost, model calls, tasks, task-seconds, gateway hours awake, artifact and backup bytes',
      request: { params: TenantParam, query: DailyQuery },
      responses,
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const q = c.req.valid('query');
      const range = dayRange(q);
      await deps.broker.usage.flush();
      return answer(c, range, await dailyUsage(deps.db, { ...range, tenantId: tenant.id }), q.format, tenant.slug) as never;
    },
  );
  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/platform/usage/daily',
      tags: ['usage'],
      summary: 'Every tenant’s usage per UTC day (platform admin): one row per tenant and day that has any',
      request: { query: DailyQuery },
      responses,
    }),
    async (c) => {
      allowPlatform(c, 'platform.manage');
      const q = c.req.valid('query');
      const range = dayRange(q);
      await deps.broker.usage.flush();
      return answer(c, range, await dailyUsage(deps.db, range), q.format, 'platform') as never;
    },
  );
}
