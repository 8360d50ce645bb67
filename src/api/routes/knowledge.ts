import { createRoute, z } from '@hono/zod-openapi';
import { findingInput, findingPatch } from '../../knowledge/findings.ts';
import { INGEST_STATUSES } from '../../knowledge/ingest.ts';
import { MEMORY_KINDS, memoryInput, memoryPatch } from '../../knowledge/memories.ts';
import { SEARCH_MODES } from '../../knowledge/search.ts';
import type { App, RouteDeps } from '../app.ts';
import { allow } from '../auth.ts';
import { errorResponses, json, jsonBody, TenantParam, TimeIdCursor } from '../schemas.ts';

const MemoryParams = TenantParam.extend({
  memoryId: z.coerce
    .number()
    .int()
    .min(1)
    .max(Number.MAX_SAFE_INTEGER)
    .openapi({ param: { name: 'memoryId', in: 'path' }, type: 'integer' }),
});
const FindingParams = TenantParam.extend({ findingId: z.uuid().openapi({ param: { name: 'findingId', in: 'path' } }) });

const Ranking = { score: z.number().optional(), similarity: z.number().nullable().optional() };

const MemorySchema = z
  .object({
    id: z.number().int(),
    agentId: z.uuid().nullable().openapi({ description: 'null: shared by every agent of the tenant' }),
    agent: z.string().nullable(),
    kind: z.enum(MEMORY_KINDS),
    key: z.string().nullable(),
    content: z.string(),
    importance: z.number(),
    expiresAt: z.string().nullable(),
    taskId: z.uuid().nullable(),
    createdBy: z.string(),
    createdAt: z.string(),
    updatedAt: z.string(),
    embedded: z.boolean(),
    ...Ranking,
  })
  .openapi('Memory');

const FindingSchema = z
  .object({
    id: z.uuid(),
    title: z.string(),
    body: z.string(),
    sources: z.array(z.string()),
    tags: z.array(z.string()),
    confidence: z.number(),
    taskId: z.uuid().nullable(),
    createdBy: z.string(),
    createdAt: z.string(),
    updatedAt: z.string(),
    embedded: z.boolean(),
    ...Ranking,
  })
  .openapi('Finding');

const ArchiveHitSchema = z
  .object({
    id: z.number().int(),
    sessionId: z.string(),
    agent: z.string(),
    role: z.string(),
    content: z.string(),
    createdAt: z.string(),
    score: z.number(),
    similarity: z.number().nullable(),
  })
  .openapi('ArchiveHit');

const SearchInfo = {
  mode: z
    .enum(SEARCH_MODES)
    .nullable()
    .openapi({ description: 'How a search ran (null: a plain listing); "words" when the tenant has no embeddings route or its provider failed' }),
  note: z.string().nullable().openapi({ description: 'Why a search by meaning fell back to words' }),
};

const query = <T extends z.ZodType>(s: T, name: string, description?: string) =>
  s.openapi({ param: { name, in: 'query' }, ...(description ? { description } : {}) });
const mode = z.enum(SEARCH_MODES).default('hybrid');
const limit = z.coerce.number().int().min(1).max(200).default(50);
const MemoryQuery = z.object({
  agent: query(z.string().min(1).max(64).optional(), 'agent', 'Only this agent (id or name)'),
  q: query(z.string().trim().min(1).max(500).optional(), 'q', 'Search text: ranked by words and meaning'),
  mode: query(mode, 'mode'),
  limit: query(limit, 'limit'),
  cursor: query(
    z
      .string()
      .regex(/^\d{1,18}$/)
      .optional(),
    'cursor',
    'nextCursor of the previous page',
  ),
});
const FindingQuery = z.object({
  q: query(z.string().trim().min(1).max(500).optional(), 'q', 'Search text: ranked by words and meaning'),
  mode: query(mode, 'mode'),
  tag: query(z.string().trim().min(1).max(50).optional(), 'tag'),
  taskId: query(z.uuid().optional(), 'taskId'),
  limit: query(limit, 'limit'),
  // The findings' cursor is "<time>|<id>" in base64url: a garbage one is refused, never read as "from the start".
  cursor: query(
    z
      .string()
      .max(100)
      .refine((c) => TimeIdCursor.safeParse(Buffer.from(c, 'base64url').toString()).success, 'must be the nextCursor of the previous page, unchanged')
      .optional(),
    'cursor',
    'nextCursor of the previous page',
  ),
});
const KnowledgeQuery = z.object({
  q: query(z.string().trim().min(1).max(500), 'q'),
  in: query(
    z
      .string()
      .regex(/^(memories|findings|archive)(,(memories|findings|archive))*$/, 'a comma-separated subset of memories, findings, archive')
      .default('memories,findings,archive'),
    'in',
  ),
  mode: query(mode, 'mode'),
  limit: query(z.coerce.number().int().min(1).max(100).default(10), 'limit', 'Per kind'),
});

const IngestStateSchema = z
  .object({
    enabled: z.boolean().openapi({ description: 'false when CLAWPLANE_INGEST_IDLE_MINUTES is 0' }),
    idleMinutes: z.number().int(),
    memories: z.boolean().openapi({ description: 'Whether each summary is also kept as a memory (CLAWPLANE_INGEST_MEMORIES)' }),
    counts: z.object({ ingested: z.number().int(), pending: z.number().int(), failed: z.number().int() }),
    lastRunAt: z.string().nullable().openapi({ description: "When the job last summarised or tried one of this tenant's sessions or tasks" }),
    items: z.array(
      z.object({
        source: z.enum(['chat', 'task']),
        sourceId: z.string().openapi({ description: 'The chat session id, or the task id' }),
        status: z.enum(INGEST_STATUSES).openapi({
          description:
            'ingested: summarised up to its newest message; pending: not yet idle, due, or being summarised; failed: the last attempt failed (retried at retryAt)',
        }),
        lastActivityAt: z.string().nullable(),
        summaryId: z.number().int().nullable().openapi({ description: 'The summary in the conversation archive' }),
        memoryId: z.number().int().nullable(),
        model: z.string().nullable().openapi({ description: 'The model that wrote the summary ("none": an excerpt, no summaries route)' }),
        attempts: z.number().int(),
        error: z.string().nullable().openapi({ description: 'Why the last attempt failed' }),
        ingestedAt: z.string().nullable(),
        lastAttemptAt: z.string().nullable(),
        retryAt: z.string().nullable(),
      }),
    ),
  })
  .openapi('IngestState');
const IngestQuery = z.object({
  status: query(z.enum(INGEST_STATUSES).optional(), 'status', 'Only items in this state (the counts cover all)'),
  limit: query(z.coerce.number().int().min(1).max(500).default(100), 'limit'),
});

/**
 * Agent memory and findings (docs/adr/0007-knowledge-search.md): reads need tenant.read, changes
 * tenant.operate. A search by meaning is an embeddings call on the tenant's route (metered, budgeted).
 */
export function registerKnowledge(app: App, deps: RouteDeps<'findings' | 'memories' | 'searchArchive' | 'sessionIngest'>): void {
  const { memories, findings } = deps;
  const base = '/api/v1/tenants/{tenant}';
  const ctxOf = (actor: string) => ({ actor, agent: '', taskId: null });

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/memories`,
      tags: ['knowledge'],
      summary: "The agents' memories, newest first, or ranked by a search (q)",
      request: { params: TenantParam, query: MemoryQuery },
      responses: { 200: json(z.object({ items: z.array(MemorySchema), nextCursor: z.string().nullable(), ...SearchInfo })), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.read');
      return c.json(await memories.list(tenant.id, c.req.valid('query'), ctxOf(by.actor)), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: `${base}/memories`,
      tags: ['knowledge'],
      summary: 'Record a memory (a kv memory whose key exists for that agent is replaced: 200 instead of 201)',
      request: { params: TenantParam, body: jsonBody(memoryInput) },
      responses: { 201: json(MemorySchema, 'Created'), 200: json(MemorySchema, 'Replaced the value under this key'), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      const r = await memories.create(tenant.id, c.req.valid('json'), by);
      return c.json(r.memory, r.created ? 201 : 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/memories/{memoryId}`,
      tags: ['knowledge'],
      summary: 'One memory',
      request: { params: MemoryParams },
      responses: { 200: json(MemorySchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(await memories.get(tenant.id, c.req.valid('param').memoryId), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'patch',
      path: `${base}/memories/{memoryId}`,
      tags: ['knowledge'],
      summary: 'Correct a memory (content, key, importance, expiry)',
      request: { params: MemoryParams, body: jsonBody(memoryPatch) },
      responses: { 200: json(MemorySchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      return c.json(await memories.update(tenant.id, c.req.valid('param').memoryId, c.req.valid('json'), by), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: `${base}/memories/{memoryId}`,
      tags: ['knowledge'],
      summary: 'Delete a memory',
      request: { params: MemoryParams },
      responses: { 204: { description: 'Deleted' }, ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      await memories.remove(tenant.id, c.req.valid('param').memoryId, by);
      return c.body(null, 204);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/findings`,
      tags: ['knowledge'],
      summary: 'Findings, newest first, or ranked by a search (q)',
      request: { params: TenantParam, query: FindingQuery },
      responses: { 200: json(z.object({ items: z.array(FindingSchema), nextCursor: z.string().nullable(), ...SearchInfo })), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.read');
      return c.json(await findings.list(tenant.id, c.req.valid('query'), ctxOf(by.actor)), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: `${base}/findings`,
      tags: ['knowledge'],
      summary: 'Record a finding',
      request: { params: TenantParam, body: jsonBody(findingInput) },
      responses: { 201: json(FindingSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      return c.json(await findings.create(tenant.id, c.req.valid('json'), by), 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/findings/{findingId}`,
      tags: ['knowledge'],
      summary: 'One finding',
      request: { params: FindingParams },
      responses: { 200: json(FindingSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(await findings.get(tenant.id, c.req.valid('param').findingId), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'patch',
      path: `${base}/findings/{findingId}`,
      tags: ['knowledge'],
      summary: 'Change a finding',
      request: { params: FindingParams, body: jsonBody(findingPatch) },
      responses: { 200: json(FindingSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      return c.json(await findings.update(tenant.id, c.req.valid('param').findingId, c.req.valid('json'), by), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: `${base}/findings/{findingId}`,
      tags: ['knowledge'],
      summary: 'Delete a finding',
      request: { params: FindingParams },
      responses: { 204: { description: 'Deleted' }, ...errorResponses },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.operate');
      await findings.remove(tenant.id, c.req.valid('param').findingId, by);
      return c.body(null, 204);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/knowledge/search`,
      tags: ['knowledge'],
      summary: 'Search memories, findings and the conversation archive by words and meaning at once',
      request: { params: TenantParam, query: KnowledgeQuery },
      responses: {
        200: json(z.object({ memories: z.array(MemorySchema), findings: z.array(FindingSchema), archive: z.array(ArchiveHitSchema), ...SearchInfo })),
        ...errorResponses,
      },
    }),
    async (c) => {
      const { tenant, by } = allow(c, 'tenant.read');
      const o = c.req.valid('query');
      const kinds = new Set(o.in.split(','));
      const ctx = ctxOf(by.actor);
      const s = { q: o.q, mode: o.mode, limit: o.limit };
      const [m, f, a] = await Promise.all([
        kinds.has('memories') ? memories.search(tenant.id, { ...s, includeShared: true }, ctx) : undefined,
        kinds.has('findings') ? findings.list(tenant.id, s, ctx) : undefined,
        kinds.has('archive') ? deps.searchArchive(tenant.id, s, ctx) : undefined,
      ]);
      const ran = [m, f, a].filter((x) => x !== undefined);
      return c.json(
        {
          memories: m?.items ?? [],
          findings: f?.items ?? [],
          archive: a?.items ?? [],
          mode: ran.some((x) => x.mode === 'words') ? ('words' as const) : o.mode,
          note: ran.map((x) => x.note).find((x) => x) ?? null,
        },
        200,
      );
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: `${base}/knowledge/ingestion`,
      tags: ['knowledge'],
      summary: 'What session ingestion has done for this tenant: sessions and tasks summarised, pending and failed (with the reason), and when it last ran',
      request: { params: TenantParam, query: IngestQuery },
      responses: { 200: json(IngestStateSchema), ...errorResponses },
    }),
    async (c) => {
      const { tenant } = allow(c, 'tenant.read');
      return c.json(await deps.sessionIngest.state(tenant.id, c.req.valid('query')), 200);
    },
  );
}
