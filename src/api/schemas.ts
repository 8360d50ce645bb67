import { z } from '@hono/zod-openapi';

/** Shared API shapes. Request bodies are strict objects: unknown fields are refused (no mass assignment). */
export const ErrorBody = z
  .object({
    code: z.string().openapi({ example: 'not_found' }),
    message: z.string(),
    requestId: z.string(),
    details: z.record(z.string(), z.unknown()).optional(),
  })
  .openapi('Error');

export const errorResponses = {
  400: { description: 'Invalid request', content: { 'application/json': { schema: ErrorBody } } },
  401: { description: 'Not signed in', content: { 'application/json': { schema: ErrorBody } } },
  403: { description: 'Not allowed', content: { 'application/json': { schema: ErrorBody } } },
  404: { description: 'Not found (also: belongs to another tenant)', content: { 'application/json': { schema: ErrorBody } } },
  409: { description: 'Conflict with the current state', content: { 'application/json': { schema: ErrorBody } } },
} as const;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * An ISO 8601 time PostgreSQL's timestamptz can hold: years 0001-9999 (there is no year 0, and
 * z.iso.datetime alone admits it).
 */
export const IsoTime = z.iso
  .datetime({ offset: true })
  .refine(
    (s) => Number(s.slice(0, 4)) >= 1 && Number.isFinite(Date.parse(s)),
    'must be a real date and time between the years 0001 and 9999, e.g. "2026-12-31T23:59:59Z"',
  );

/** A keyset cursor as a list answered it in nextCursor ("<time>|<id>"); anything else is refused, never ignored. */
export const TimeIdCursor = z
  .string()
  .max(200)
  .refine((s) => {
    const [at, id, more] = s.split('|');
    return more === undefined && at !== undefined && id !== undefined && UUID_RE.test(id) && IsoTime.safeParse(at).success;
  }, 'must be the nextCursor of the previous page, unchanged');

export const TenantRoleSchema = z.enum(['tenant_admin', 'member', 'viewer']).openapi('TenantRole');

export const Slug = z
  .string()
  .min(1)
  .max(40)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, 'lowercase letters, digits and inner hyphens only, e.g. "acme-prod"');

export const Email = z.string().trim().toLowerCase().pipe(z.email().max(254));

export const TenantParam = z.object({
  tenant: z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name: 'tenant', in: 'path' }, description: 'Tenant id or slug', example: 'acme' }),
});

export const QuotasSchema = z
  .object({
    maxInstances: z.number().int().min(0).max(1000),
    maxConcurrentTasks: z.number().int().min(0).max(10000),
    maxStorageBytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    dailyTokenBudget: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullable(),
    dailyCostBudgetUsd: z.number().min(0).max(1e9).nullable(),
    idleTimeoutMinutes: z
      .number()
      .int()
      .min(0)
      .max(525600)
      .nullable()
      .openapi({ description: "Minutes without traffic before the tenant's instances are backed up and stopped; null = platform default, 0 = never" }),
    maxCpuMillis: z
      .number()
      .int()
      .min(0)
      .max(100_000_000)
      .openapi({ description: 'CPU the executor pools may reserve in total (shards × maxExecutors × cpuMillis), in thousandths of a core' }),
    maxMemoryMb: z.number().int().min(0).max(100_000_000).openapi({ description: 'Memory the executor pools may reserve in total, in MiB' }),
    maxSandboxes: z.number().int().min(0).max(10000).nullable().openapi({
      description:
        'Sandboxes the tenant may run at once: its instances set running plus what its executor pools reserve at their max; null = no bound beyond maxInstances',
    }),
  })
  .openapi('Quotas');

export const QuotasPatch = z.strictObject({
  maxInstances: QuotasSchema.shape.maxInstances.optional(),
  maxConcurrentTasks: QuotasSchema.shape.maxConcurrentTasks.optional(),
  maxStorageBytes: QuotasSchema.shape.maxStorageBytes.optional(),
  dailyTokenBudget: QuotasSchema.shape.dailyTokenBudget.optional(),
  dailyCostBudgetUsd: QuotasSchema.shape.dailyCostBudgetUsd.optional(),
  idleTimeoutMinutes: QuotasSchema.shape.idleTimeoutMinutes.optional(),
  maxCpuMillis: QuotasSchema.shape.maxCpuMillis.optional(),
  maxMemoryMb: QuotasSchema.shape.maxMemoryMb.optional(),
  maxSandboxes: QuotasSchema.shape.maxSandboxes.optional(),
});

export const TenantSchema = z
  .object({
    id: z.uuid(),
    slug: z.string(),
    name: z.string(),
    status: z.enum(['active', 'suspended']),
    quotas: QuotasSchema,
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi('Tenant');

export const MemberSchema = z
  .object({
    userId: z.uuid(),
    email: z.string(),
    displayName: z.string(),
    role: TenantRoleSchema,
    source: z.enum(['manual', 'oidc']),
    createdAt: z.string(),
  })
  .openapi('Member');

export const ApiTokenSchema = z
  .object({
    id: z.uuid(),
    tenantId: z.uuid(),
    name: z.string(),
    role: TenantRoleSchema,
    display: z.string().openapi({ description: 'The first characters of the token, to recognise it' }),
    createdBy: z.uuid().nullable(),
    createdAt: z.string(),
    expiresAt: z.string().nullable(),
    revokedAt: z.string().nullable(),
    lastUsedAt: z.string().nullable(),
  })
  .openapi('ApiToken');

export const UserSchema = z
  .object({
    id: z.uuid(),
    email: z.string(),
    displayName: z.string(),
    platformAdmin: z.boolean(),
    breakglass: z.boolean(),
    lastLoginAt: z.string().nullable(),
    memberships: z.array(z.object({ tenantId: z.uuid(), slug: z.string(), name: z.string(), role: TenantRoleSchema })),
  })
  .openapi('User');

export const json = <T extends z.ZodType>(schema: T, description = 'OK') => ({
  description,
  content: { 'application/json': { schema } },
});

export const jsonBody = <T extends z.ZodType>(schema: T) => ({
  required: true,
  content: { 'application/json': { schema } },
});
