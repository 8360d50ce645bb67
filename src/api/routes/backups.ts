import { createRoute, z } from '@hono/zod-openapi';
import { BACKUP_REASONS } from '../../backup/backups.ts';
import type { App, RouteDeps } from '../app.ts';
import { assertTenantActive } from '../../identity/authz.ts';
import { allow } from '../auth.ts';
import { pageOf, pageQuery, searchParam } from '../paging.ts';
import { errorResponses, json, jsonBody, TenantParam } from '../schemas.ts';
import { InstanceSchema } from './instances.ts';

const BackupSchema = z
  .object({
    id: z.uuid(),
    tenantId: z.uuid(),
    instanceId: z.uuid(),
    instanceName: z.string(),
    runtimeVersion: z.string(),
    reason: z.enum(BACKUP_REASONS),
    sizeBytes: z.number().int(),
    sha256: z.string(),
    durationMs: z.number().int(),
    createdAt: z.string(),
  })
  .openapi('Backup');

const BackupPage = pageOf(BackupSchema).openapi('BackupPage');
const BackupListQuery = pageQuery(['createdAt'], '-createdAt').extend({
  q: searchParam("the instance's name"),
  reason: z
    .enum(BACKUP_REASONS)
    .optional()
    .openapi({ param: { name: 'reason', in: 'query' } }),
});

const InstanceParams = TenantParam.extend({ instanceId: z.uuid().openapi({ param: { name: 'instanceId', in: 'path' } }) });
const BackupParams = TenantParam.extend({ backupId: z.uuid().openapi({ param: { name: 'backupId', in: 'path' } }) });

const RestoreBody = z.strictObject({
  instanceId: z.uuid().optional().describe('A stopped instance to restore into (its state is replaced)'),
  name: z
    .string()
    .regex(/^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/)
    .optional()
    .describe("A new instance to create for it (default: the backup's instance name)"),
  start: z.boolean().default(true).describe('Start the instance after restoring'),
});

/**
 * Backups of instance state (issue 7). Listing needs tenant.read; a backup needs tenant.operate and a
 * stopped instance; restore replaces state, so it needs tenant.admin.
 */
export function registerBackups(app: App, deps: RouteDeps<'backups' | 'instances'>): void {
  const { backups } = deps;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/backups',
      tags: ['backups'],
      summary: "The tenant's backups, newest first by default, a page at a time (also of destroyed instances)",
      request: { params: TenantParam, query: BackupListQuery },
      responses: { 200: json(BackupPage), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(await backups.page(tenant.id, c.req.valid('query')), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/instances/{instanceId}/backups',
      tags: ['backups'],
      summary: "An instance's backups, newest first by default, a page at a time",
      request: { params: InstanceParams, query: BackupListQuery },
      responses: { 200: json(BackupPage), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const { instanceId } = c.req.valid('param');
      await deps.instances.get(tenant.id, instanceId);
      return c.json(await backups.page(tenant.id, { ...c.req.valid('query'), instanceId }), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/instances/{instanceId}/backups',
      tags: ['backups'],
      summary:
        "Back up an instance now, encrypted with the tenant key: a stopped one's state, or a running one through OpenClaw's own backup inside its sandbox (409 while starting or stopping)",
      request: { params: InstanceParams },
      responses: { 201: json(BackupSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      return c.json(await backups.create(tenant.id, c.req.valid('param').instanceId, 'manual', by), 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/backups/{backupId}/restore',
      tags: ['backups'],
      summary: 'Restore a backup into a stopped instance or a new one, then start it; a corrupted backup is refused and nothing changes',
      request: { params: BackupParams, body: jsonBody(RestoreBody) },
      responses: { 200: json(z.object({ instance: InstanceSchema, backup: BackupSchema })), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      const b = c.req.valid('json');
      // Refused before anything is unpacked: a restore that starts the instance wakes a gateway.
      if (b.start !== false) assertTenantActive(tenant);
      return c.json(await backups.restore(tenant.id, c.req.valid('param').backupId, b, by), 200);
    },
  );
}
