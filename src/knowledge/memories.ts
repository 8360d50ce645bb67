import { z } from 'zod';
import { appendAudit } from '../audit/log.ts';
import type { Db, Queryable } from '../db/pool.ts';
import type { EventChannel } from '../events/channel.ts';
import { ConflictError, NotFoundError } from '../errors.ts';
import type { AgentService } from '../tasks/agents.ts';
import type { EmbedContext } from './embeddings.ts';
import type { KnowledgeIndexer } from './indexer.ts';
import { SEARCH_MODES, type HybridSearch, type SearchMode } from './search.ts';

export const MEMORY_KINDS = ['note', 'kv'] as const;
/** Recall before a task: the best few memories of its agent (and the tenant's shared ones). */
export const RECALL_LIMIT = 5;
export const RECALL_MIN_IMPORTANCE = 0.3;
/** How much a memory's importance (0–1) adds to its search score. */
const IMPORTANCE_WEIGHT = 0.1;

const agentRef = z.string().min(1).max(64).describe('Agent id or name; omitted: shared by every agent of the tenant');
const expiresAt = z.iso.datetime({ offset: true }).nullable().describe('When the memory is forgotten (ISO 8601); null: never');

export const memoryInput = z
  .strictObject({
    agent: agentRef.optional(),
    kind: z.enum(MEMORY_KINDS).default('note').describe('note: free text; kv: a value under a key (writing the key again replaces it)'),
    key: z.string().trim().min(1).max(200).optional(),
    content: z.string().trim().min(1).max(4000),
    importance: z.number().min(0).max(1).default(0.5),
    expiresAt: expiresAt.optional(),
  })
  .refine((m) => (m.kind === 'kv') === (m.key !== undefined), { message: 'a key is required for kind "kv" and not allowed for notes', path: ['key'] });
export type MemoryInput = z.input<typeof memoryInput>;

export const memoryPatch = z.strictObject({
  key: z.string().trim().min(1).max(200).optional().describe('Only for kind "kv"'),
  content: z.string().trim().min(1).max(4000).optional(),
  importance: z.number().min(0).max(1).optional(),
  expiresAt: expiresAt.optional(),
});

export const memoryQuery = z.object({
  agent: agentRef.optional(),
  q: z.string().trim().min(1).max(500).optional(),
  mode: z.enum(SEARCH_MODES).default('hybrid'),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z
    .string()
    .regex(/^\d{1,18}$/)
    .optional(),
});

export interface Memory {
  id: number;
  agentId: string | null;
  agent: string | null;
  kind: (typeof MEMORY_KINDS)[number];
  key: string | null;
  content: string;
  importance: number;
  expiresAt: string | null;
  taskId: string | null;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
  /** Whether the memory has a vector of the tenant's current embedding model... or any model. */
  embedded: boolean;
}

export interface MemoryHit extends Memory {
  score: number;
  similarity: number | null;
}

interface Row {
  id: number;
  agent_id: string | null;
  agent_name?: string | null;
  kind: Memory['kind'];
  key: string | null;
  content: string;
  importance: number;
  expires_at: Date | null;
  task_id: string | null;
  created_by: string;
  created_at: Date;
  updated_at: Date;
  embedding: Buffer | null;
  embedding_model: string | null;
  text_rank: number;
}

const toMemory = (r: Row, names: Map<string, string>): Memory => ({
  id: Number(r.id),
  agentId: r.agent_id,
  agent: r.agent_id ? (names.get(r.agent_id) ?? null) : null,
  kind: r.kind,
  key: r.key,
  content: r.content,
  importance: r.importance,
  expiresAt: r.expires_at?.toISOString() ?? null,
  taskId: r.task_id,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
  embedded: r.embedding_model !== null,
});

const LIVE = 'AND (t.expires_at IS NULL OR t.expires_at > now())';

/**
 * What agents remember (docs/adr/0007-knowledge-search.md): notes and key/value entries per agent or
 * shared by the tenant's agents, which people can list, search, correct and delete. Every change is
 * audited (the audit detail names the memory, never its content). Written rows are embedded at once when
 * the tenant has an embeddings route; the indexer's sweep covers what that missed.
 */
export class MemoryService {
  readonly #db: Db;
  readonly #agents: AgentService;
  readonly #search: HybridSearch;
  readonly #indexer: KnowledgeIndexer;
  readonly #events: EventChannel | undefined;

  constructor(o: { db: Db; agents: AgentService; search: HybridSearch; indexer: KnowledgeIndexer; events?: EventChannel }) {
    this.#db = o.db;
    this.#agents = o.agents;
    this.#search = o.search;
    this.#indexer = o.indexer;
    this.#events = o.events;
  }

  /** Tells every replica to drop this memory's vector from its index (deleted, or its text re-written). */
  async #removed(tx: Queryable, tenantId: string, id: number): Promise<void> {
    await this.#events?.publish(tx, 'knowledge.removed', { tenantId, table: 'agent_memories', ids: [String(id)] });
  }

  async #names(tenantId: string): Promise<Map<string, string>> {
    const r = await this.#db.query<{ id: string; name: string }>('SELECT id, name FROM agents WHERE tenant_id = $1', [tenantId]);
    return new Map(r.rows.map((x) => [x.id, x.name]));
  }

  /** Newest first (paged by `cursor` = the last id seen), or ranked by a search when `q` is given. */
  async list(
    tenantId: string,
    raw: z.input<typeof memoryQuery>,
    ctx: EmbedContext,
  ): Promise<{ items: (Memory | MemoryHit)[]; nextCursor: string | null; mode: SearchMode | null; note: string | null }> {
    const o = memoryQuery.parse(raw);
    const agentId = o.agent ? (await this.#agents.get(tenantId, o.agent)).id : undefined;
    const names = await this.#names(tenantId);
    if (o.q) {
      const r = await this.search(tenantId, { q: o.q, mode: o.mode, limit: o.limit, agentId, includeShared: false }, ctx);
      return { ...r, nextCursor: null };
    }
    const r = await this.#db.query<Row>(
      `SELECT t.* FROM agent_memories t WHERE t.tenant_id = $1 AND ($2::uuid IS NULL OR t.agent_id = $2) AND ($3::bigint IS NULL OR t.id < $3) ${LIVE}
        ORDER BY t.id DESC LIMIT $4`,
      [tenantId, agentId ?? null, o.cursor ?? null, o.limit + 1],
    );
    const items = r.rows.slice(0, o.limit).map((x) => toMemory(x, names));
    return { items, nextCursor: r.rows.length > o.limit ? String(items.at(-1)?.id) : null, mode: null, note: null };
  }

  /**
   * Hybrid search (words and meaning) over live memories: one agent's (with the tenant's shared ones
   * when `includeShared`), or all of the tenant's.
   */
  async search(
    tenantId: string,
    o: { q: string; mode: SearchMode; limit: number; agentId?: string | undefined; includeShared: boolean; minImportance?: number },
    ctx: EmbedContext,
  ): Promise<{ items: MemoryHit[]; mode: SearchMode; note: string | null }> {
    const params: unknown[] = [];
    let where = LIVE;
    if (o.agentId) {
      params.push(o.agentId);
      where += o.includeShared ? ` AND (t.agent_id = $${params.length + 3} OR t.agent_id IS NULL)` : ` AND t.agent_id = $${params.length + 3}`;
    }
    if (o.minImportance !== undefined) {
      params.push(o.minImportance);
      where += ` AND t.importance >= $${params.length + 3}`;
    }
    const agentId = o.agentId;
    // The agents' names are read while the search runs.
    const names = this.#names(tenantId);
    names.catch(() => undefined);
    const r = await this.#search.search<Row>({
      table: 'agent_memories',
      tenantId,
      q: o.q,
      mode: o.mode,
      limit: o.limit,
      where,
      params,
      ...(agentId ? { accept: (owner: string) => owner === agentId || (o.includeShared && owner === '') } : {}),
      boost: (row: Row) => IMPORTANCE_WEIGHT * row.importance,
      ctx,
    });
    const byId = await names;
    return { items: r.items.map((h) => ({ ...toMemory(h.row, byId), score: h.score, similarity: h.similarity })), mode: r.mode, note: r.note };
  }

  /** A live memory (an expired one is gone even before the sweep deletes it). */
  async get(tenantId: string, id: number, q: Queryable = this.#db, live = true): Promise<Memory> {
    const r = await q.query<Row>(`SELECT t.* FROM agent_memories t WHERE t.tenant_id = $1 AND t.id = $2 ${live ? LIVE : ''}`, [tenantId, id]);
    if (!r.rows[0]) throw new NotFoundError('Memory');
    return toMemory(r.rows[0], await this.#names(tenantId));
  }

  /** Creates a memory; a kv entry whose key exists (same agent) is replaced. `created` tells which. */
  async create(
    tenantId: string,
    raw: MemoryInput,
    by: { actor: string; requestId?: string; taskId?: string | null },
  ): Promise<{ memory: Memory; created: boolean }> {
    const m = memoryInput.parse(raw);
    const agentId = m.agent ? (await this.#agents.get(tenantId, m.agent)).id : null;
    const { id, created } = await this.#db.tx(async (tx) => {
      const r = await tx.query<{ id: number; created: boolean }>(
        `INSERT INTO agent_memories (tenant_id, agent_id, task_id, kind, key, content, importance, expires_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (tenant_id, coalesce(agent_id, '00000000-0000-0000-0000-000000000000'::uuid), key) WHERE key IS NOT NULL
         DO UPDATE SET content = EXCLUDED.content, importance = EXCLUDED.importance, expires_at = EXCLUDED.expires_at, task_id = EXCLUDED.task_id,
                       updated_at = now(), embedding = NULL, sketch = NULL, qvec = NULL, embedding_model = NULL
         RETURNING id, (xmax = 0) AS created`,
        [tenantId, agentId, by.taskId ?? null, m.kind, m.key ?? null, m.content, m.importance, m.expiresAt ?? null, by.actor],
      );
      const row = r.rows[0] as { id: number; created: boolean };
      if (!row.created) await this.#removed(tx, tenantId, Number(row.id));
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: row.created ? 'memory.create' : 'memory.update',
        target: `memory:${row.id}`,
        decision: 'success',
        detail: { agentId, kind: m.kind, key: m.key ?? null, importance: m.importance, expiresAt: m.expiresAt ?? null },
        requestId: by.requestId ?? null,
      });
      return { id: Number(row.id), created: row.created };
    });
    await this.#indexer.embedRows('agent_memories', tenantId, [id], { actor: by.actor, agent: m.agent ?? '', taskId: by.taskId ?? null });
    return { memory: await this.get(tenantId, id, this.#db, false), created };
  }

  async update(tenantId: string, id: number, patch: z.infer<typeof memoryPatch>, by: { actor: string; requestId?: string }): Promise<Memory> {
    await this.#db.tx(async (tx) => {
      const cur = await this.get(tenantId, id, tx);
      if (patch.key !== undefined && cur.kind !== 'kv') throw new ConflictError('Only key/value memories have a key: change the content of a note instead.');
      const textChanged = (patch.content !== undefined && patch.content !== cur.content) || (patch.key !== undefined && patch.key !== cur.key);
      try {
        await tx.query(
          `UPDATE agent_memories SET key = coalesce($3, key), content = coalesce($4, content), importance = coalesce($5, importance),
                  expires_at = CASE WHEN $6 THEN $7::timestamptz ELSE expires_at END, updated_at = now()
                  ${textChanged ? ', embedding = NULL, sketch = NULL, qvec = NULL, embedding_model = NULL' : ''}
            WHERE tenant_id = $1 AND id = $2`,
          [tenantId, id, patch.key ?? null, patch.content ?? null, patch.importance ?? null, patch.expiresAt !== undefined, patch.expiresAt ?? null],
        );
      } catch (err) {
        if ((err as { code?: string }).code === '23505')
          throw new ConflictError(`This agent already has a memory under the key "${patch.key}": edit or delete that one.`);
        throw err;
      }
      if (textChanged) await this.#removed(tx, tenantId, id);
      const { content: _c, ...detail } = patch;
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'memory.update',
        target: `memory:${id}`,
        decision: 'success',
        detail: { ...detail, contentChanged: patch.content !== undefined },
        requestId: by.requestId ?? null,
      });
    });
    await this.#indexer.embedRows('agent_memories', tenantId, [id], { actor: by.actor, agent: '', taskId: null });
    return this.get(tenantId, id);
  }

  async remove(tenantId: string, id: number, by: { actor: string; requestId?: string }): Promise<void> {
    await this.#db.tx(async (tx) => {
      const r = await tx.query<{ kind: string; key: string | null; agent_id: string | null }>(
        'DELETE FROM agent_memories WHERE tenant_id = $1 AND id = $2 RETURNING kind, key, agent_id',
        [tenantId, id],
      );
      const row = r.rows[0];
      if (!row) throw new NotFoundError('Memory');
      await this.#removed(tx, tenantId, id);
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'memory.delete',
        target: `memory:${id}`,
        decision: 'success',
        detail: { agentId: row.agent_id, kind: row.kind, key: row.key },
        requestId: by.requestId ?? null,
      });
    });
  }

  /** The memories a task of this agent starts with: best matches of its input, its own and shared. */
  async recall(tenantId: string, agentId: string, text: string, ctx: EmbedContext): Promise<MemoryHit[]> {
    const r = await this.search(
      tenantId,
      { q: text.slice(0, 2000), mode: 'hybrid', limit: RECALL_LIMIT, agentId, includeShared: true, minImportance: RECALL_MIN_IMPORTANCE },
      ctx,
    );
    return r.items;
  }
}
