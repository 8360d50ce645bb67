import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { UnauthenticatedError } from '../../errors.ts';
import { CREDENTIAL_TYPES, createCredentialInput, EXPIRES_SOON_DAYS, type CredentialInfo } from '../../vault/credentials.ts';
import type { App, RouteDeps } from '../app.ts';
import type { AppEnv } from '../env.ts';
import { allow } from '../auth.ts';
import { pageOf, pageQuery, searchParam } from '../paging.ts';
import { errorResponses, IsoTime, json, jsonBody, TenantParam } from '../schemas.ts';

const CredentialParams = TenantParam.extend({
  credentialId: z.uuid().openapi({ param: { name: 'credentialId', in: 'path' } }),
});
const SkillParams = TenantParam.extend({
  skill: z
    .string()
    .min(1)
    .max(50)
    .openapi({ param: { name: 'skill', in: 'path' }, description: 'A skill id from GET /api/v1/skills', example: 'slack' }),
});

export const CredentialSchema = z
  .object({
    id: z.uuid(),
    tenantId: z.uuid(),
    name: z.string(),
    type: z.enum(CREDENTIAL_TYPES),
    skill: z.string().nullable(),
    status: z.enum(['active', 'expired', 'revoked']),
    metadata: z.record(z.string(), z.unknown()).openapi({ description: 'Non-secret settings stored with it (scopes, phone number id)' }),
    last4: z.string().openapi({ description: 'The last 4 characters of the value; empty when the value is shorter than 12' }),
    version: z.number().int(),
    expiresAt: z.string().nullable(),
    expiresSoon: z.boolean().openapi({ description: `Active and expiring within ${EXPIRES_SOON_DAYS} days: the UI warns` }),
    lastUsedAt: z.string().nullable(),
    revokedAt: z.string().nullable(),
    createdBy: z.uuid().nullable(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi('Credential');
type CredentialJson = z.infer<typeof CredentialSchema>;

const iso = (d: Date | null) => (d ? d.toISOString() : null);

/**
 * The API view of a credential, field by field: an allow-list, so a column added to CredentialInfo
 * later does not reach a response by accident. There is no value field to copy.
 */
export function credentialJson(c: CredentialInfo, now = Date.now()): CredentialJson {
  const expiresSoon = c.status === 'active' && c.expiresAt !== null && c.expiresAt.getTime() - now <= EXPIRES_SOON_DAYS * 86_400_000;
  return {
    id: c.id,
    tenantId: c.tenantId,
    name: c.name,
    type: c.type,
    skill: c.skill,
    status: c.status,
    metadata: c.metadata,
    last4: c.last4,
    version: c.version,
    expiresAt: iso(c.expiresAt),
    expiresSoon,
    lastUsedAt: iso(c.lastUsedAt),
    revokedAt: iso(c.revokedAt),
    createdBy: c.createdBy,
    createdAt: c.createdAt.toISOString(),
    updatedAt: c.updatedAt.toISOString(),
  };
}

const SkillFieldSchema = z.object({
  name: z.string(),
  label: z.string(),
  type: z.enum(['secret', 'text', 'list']),
  secret: z.boolean(),
  credentialType: z.enum(CREDENTIAL_TYPES).optional(),
  required: z.boolean(),
  help: z.string().optional(),
  pattern: z.string().optional().openapi({ description: 'Regular expression every value must match' }),
  patternHint: z.string().optional(),
});
const SkillSchema = z.object({ id: z.string(), label: z.string(), description: z.string(), fields: z.array(SkillFieldSchema) }).openapi('Skill');

const SkillConnectBody = z.strictObject({
  // Checked against the skill's registry definition in the service, which names each bad field.
  values: z.record(z.string(), z.unknown()).openapi({ description: 'The form: one entry per field of the skill', example: { bot_token: 'xoxb-…' } }),
  prefix: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,59}$/, 'must be 1-60 of letters, digits, "_", ".", ":" or "-"')
    .optional()
    .openapi({ description: 'Credential names become <prefix>.<field>; defaults to the skill id' }),
  expiresAt: IsoTime.optional(),
});

// A response that carries credential metadata must not sit in a shared cache.
function noStore(c: Context<AppEnv>): void {
  c.header('Cache-Control', 'no-store');
}

/**
 * Tenant credentials (issue 4). Values are write-only: create takes one, nothing returns one. Reading
 * metadata needs tenant.read; creating, replacing and revoking need tenant.admin. Platform admins are
 * not members, so `allow` refuses them every route here.
 */
export function registerCredentials(app: App, deps: RouteDeps<'credentials' | 'skills'>): void {
  const { credentials, skills } = deps;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/skills',
      tags: ['credentials'],
      summary: 'What each skill needs to connect: the registry the UI renders credential forms from',
      responses: { 200: json(z.object({ items: z.array(SkillSchema) })), ...errorResponses },
    }),
    (c) => {
      if (!c.get('principal')) throw new UnauthenticatedError();
      return c.json({ items: skills.describe() }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/credentials',
      tags: ['credentials'],
      summary: "A tenant's credentials, a page at a time: metadata, status, expiry and last 4 characters, never a value",
      request: {
        params: TenantParam,
        query: pageQuery(['createdAt', 'name'], 'createdAt').extend({
          q: searchParam('the name'),
          skill: z.string().max(50).optional(),
          status: z
            .enum(['active', 'expired', 'revoked'])
            .optional()
            .openapi({ param: { name: 'status', in: 'query' } }),
          includeRevoked: z.enum(['true', 'false']).optional().openapi({ description: 'Revoked credentials are left out unless true (or status=revoked)' }),
        }),
      },
      responses: { 200: json(pageOf(CredentialSchema).openapi('CredentialPage')), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      const q = c.req.valid('query');
      const page = await credentials.page(tenant.id, { ...q, includeRevoked: q.includeRevoked === 'true' });
      noStore(c);
      return c.json({ items: page.items.map((i) => credentialJson(i)), nextCursor: page.nextCursor }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tenants/{tenant}/credentials/{credentialId}',
      tags: ['credentials'],
      summary: 'One credential (metadata only)',
      request: { params: CredentialParams },
      responses: { 200: json(CredentialSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      noStore(c);
      return c.json(credentialJson(await credentials.get(tenant.id, c.req.valid('param').credentialId)), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/credentials',
      tags: ['credentials'],
      summary: 'Store a credential; the value is encrypted at once and never shown again',
      request: { params: TenantParam, body: jsonBody(createCredentialInput) },
      responses: { 201: json(CredentialSchema, 'Created'), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by, principal } = allow(c, 'tenant.admin');
      const created = await credentials.create(tenant.id, c.req.valid('json'), { ...by, userId: principal.kind === 'user' ? principal.userId : null });
      noStore(c);
      return c.json(credentialJson(created), 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/credentials/skills/{skill}',
      tags: ['credentials'],
      summary: "Connect a skill: validates the skill's form and stores one credential per secret field",
      request: { params: SkillParams, body: jsonBody(SkillConnectBody) },
      responses: { 201: json(z.object({ items: z.array(CredentialSchema) }), 'Created'), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by, principal } = allow(c, 'tenant.admin');
      const body = c.req.valid('json');
      const created = await credentials.createForSkill(
        tenant.id,
        c.req.valid('param').skill,
        body.values,
        { ...by, userId: principal.kind === 'user' ? principal.userId : null },
        {
          prefix: body.prefix,
          expiresAt: body.expiresAt === undefined ? undefined : new Date(body.expiresAt),
        },
      );
      noStore(c);
      return c.json({ items: created.map((i) => credentialJson(i)) }, 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/tenants/{tenant}/credentials/{credentialId}/value',
      tags: ['credentials'],
      summary: 'Replace the value of an active credential (e.g. after rotating the key at the provider)',
      request: { params: CredentialParams, body: jsonBody(z.strictObject({ value: createCredentialInput.shape.value })) },
      responses: { 200: json(CredentialSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      const updated = await credentials.replaceValue(tenant.id, c.req.valid('param').credentialId, c.req.valid('json').value, by);
      noStore(c);
      return c.json(credentialJson(updated), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tenants/{tenant}/credentials/{credentialId}/revoke',
      tags: ['credentials'],
      summary: 'Revoke a credential; its next use is refused. The row stays for the audit trail',
      request: { params: CredentialParams },
      responses: { 200: json(CredentialSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.admin');
      noStore(c);
      return c.json(credentialJson(await credentials.revoke(tenant.id, c.req.valid('param').credentialId, by)), 200);
    },
  );
}
