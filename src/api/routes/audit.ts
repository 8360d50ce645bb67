import { createRoute, z } from '@hono/zod-openapi';
import { queryAudit, type AuditRow } from '../../audit/query.ts';
import { verifyAuditChain } from '../../audit/verify.ts';
import { decodeCursor, encodeCursor } from '../../db/keyset.ts';
import type { App, RouteDeps } from '../app.ts';
import { allow, allowPlatform } from '../auth.ts';
import { errorResponses, IsoTime, json, TenantParam } from '../schemas.ts';

const AuditEvent = z
  .object({
    seq: z.number(),
    ts: z.string(),
    actor: z.string(),
    tenantId: z.string().nullable(),
    action: z.string(),
    target: z.string().nullable(),
    decision: z.string().nullable(),
    detail: z.record(z.string(), z.unknown()),
    requestId: z.string().nullable(),
  })
  .openapi('AuditEvent');

const Filters = z.object({
  action: z.string().max(100).optional().openapi({ description: 'Action prefix, e.g. "auth." or "token.create"' }),
  actor: z.string().max(200).optional(),
  decision: z.string().max(50).optional(),
  since: IsoTime.optional(),
  until: IsoTime.optional(),
  cursor: z.string().min(1).max(4096).optional().openapi({ description: 'The nextCursor of the previous page, unchanged' }),
  before: z.coerce
    .number()
    .int()
    .min(1)
    .max(Number.MAX_SAFE_INTEGER)
    .optional()
    .openapi({ description: 'Events with a lower seq (the nextBefore of the previous page; cursor does the same)' }),
  limit: z.coerce.number().int().min(1).max(500).default(100),
});

const Page = z.object({
  items: z.array(AuditEvent),
  nextCursor: z.string().nullable().openapi({ description: 'Pass as cursor to get the next page; null on the last page' }),
  nextBefore: z.number().nullable(),
});

// The audit log has one order, newest first, keyed by its sequence number.
const AUDIT_KEY = [{ sql: 'seq', type: 'bigint' }] as const;

const filter = (q: z.infer<typeof Filters>) => ({
  action: q.action,
  actor: q.actor,
  decision: q.decision,
  since: q.since ? new Date(q.since) : undefined,
  until: q.until ? new Date(q.until) : undefined,
  before: q.cursor !== undefined ? Math.min(Number(decodeCursor(q.cursor, '-seq', AUDIT_KEY)[0]), q.before ?? Infinity) : q.before,
  limit: q.limit,
});

const withCursor = (p: { items: AuditRow[]; nextBefore: number | null }) => ({
  ...p,
  nextCursor: p.nextBefore === null ? null : encodeCursor('-seq', [String(p.nextBefore)]),
});

/** The audit log: a tenant's own events for its admins; everything plus chain verification for platform admins. */
export function registerAudit(app: App, deps: RouteDeps<never, 'db'>): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/audit',
      tags: ['audit'],
      summary: "The tenant's audit events, newest first (tenant admins)",
      request: { params: TenantParam, query: Filters },
      responses: { 200: json(Page), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, c.get('role') ? 'tenant.admin' : 'tenant.manage');
      return c.json(withCursor(await queryAudit(deps.db, { tenantId: tenant.id, ...filter(c.req.valid('query')) })), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/platform/audit',
      tags: ['audit'],
      summary: 'All audit events, newest first (platform admins)',
      request: { query: Filters.extend({ tenantId: z.uuid().optional() }) },
      responses: { 200: json(Page), ...errorResponses },
    }),
    async (c) => {
      allowPlatform(c, 'platform.manage');
      const q = c.req.valid('query');
      return c.json(withCursor(await queryAudit(deps.db, { tenantId: q.tenantId, ...filter(q) })), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/platform/audit/verify',
      tags: ['audit'],
      summary: 'Replay the hash chain: ok, rows checked, or the first bad row (platform admins)',
      responses: {
        200: json(z.object({ ok: z.boolean(), checked: z.number(), firstBad: z.object({ seq: z.number(), reason: z.string() }).optional() })),
        ...errorResponses,
      },
    }),
    async (c) => {
      allowPlatform(c, 'platform.manage');
      return c.json(await verifyAuditChain(deps.db), 200);
    },
  );
}
