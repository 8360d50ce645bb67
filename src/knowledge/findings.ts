import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { appendAudit } from '../audit/log.ts';
import type { Db, Queryable } from '../db/pool.ts';
import type { EventChannel } from '../events/channel.ts';
import { NotFoundError } from '../errors.ts';
import type { EmbedContext } from './embeddings.ts';
import type { KnowledgeIndexer } from './indexer.ts';
import { SEARCH_MODES, type HybridSearch, type SearchMode } from './search.ts';

const tag = z
  .string()
  .trim()
  .min(1)
  .max(50)
  .regex(/^[^\s,]+$/, 'one word, no commas');
const source = z.string().trim().min(1).max(2000).describe('A URL, a document name, or a task or message reference');

export const findingInput = z.strictObject({
  title: z.string().trim().min(1).max(300),
  body: z.string().max(20000).default(''),
  sources: z.array(source).max(50).default([]),
  tags: z.array(tag).max(30).default([]),
  confidence: z.number().min(0).max(1).default(0.5),
  taskId: z.uuid().optional().describe('The task that produced the finding'),
});
export type FindingInput = z.input<typeof findingInput>;

export const findingPatch = z.strictObject({
  title: z.string().trim().min(1).max(300).optional(),
  body: z.string().max(20000).optional(),
  sources: z.array(source).max(50).optional(),
  tags: z.array(tag).max(30).optional(),
  confidence: z.number().min(0).max(1).optional(),
});

export const findingQuery = z.object({
  q: z.string().trim().min(1).max(500).optional(),
  mode: z.enum(SEARCH_MODES).default('hybrid'),
  tag: tag.optional(),
  taskId: z.uuid().optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().max(100).optional(),
});

export interface Finding {
  id: string;
  title: string;
  body: string;
  sources: string[];
  tags: string[];
  confidence: number;
  taskId: string | null;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
  embedded: boolean;
}

export interface FindingHit extends Finding {
  score: number;
  similarity: number | null;
}

interface Row {
  id: string;
  title: string;
  body: string;
  sources: string[];
  tags: string[];
  confidence: number;
  task_id: string | null;
  created_by: string;
  created_at: Date;
  updated_at: Date;
  embedding: Buffer | null;
  embedding_model: string | null;
  text_rank: number;
}

const toFinding = (r: Row): Finding => ({
  id: r.id,
  title: r.title,
  body: r.body,
  sources: r.sources,
  tags: r.tags,
  confidence: r.confidence,
  taskId: r.task_id,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
  embedded: r.embedding_model !== null,
});

/** Cursor of a newest-first page: the last row's creation time and id. */
const encodeCursor = (f: Finding) => Buffer.from(`${f.createdAt}|${f.id}`).toString('base64url');
function decodeCursor(c: string): [string, string] | undefined {
  const [at, id] = Buffer.from(c, 'base64url').toString().split('|');
  return at && id && !Number.isNaN(Date.parse(at)) && /^[0-9a-f-]{36}$/.test(id) ? [at, id] : undefined;
}

/** What tasks and people found out: titled, sourced, tagged, with a confidence; searchable by words and meaning. */
export class FindingService {
  readonly #db: Db;
  readonly #search: HybridSearch;
  readonly #indexer: KnowledgeIndexer;

  readonly #events: EventChannel | undefined;

  constructor(o: { db: Db; search: HybridSearch; indexer: KnowledgeIndexer; events?: EventChannel }) {
    this.#db = o.db;
    this.#search = o.search;
    this.#indexer = o.indexer;
    this.#events = o.events;
  }

  async list(
    tenantId: string,
    raw: z.input<typeof findingQuery>,
    ctx: EmbedContext,
  ): Promise<{ items: (Finding | FindingHit)[]; nextCursor: string | null; mode: SearchMode | null; note: string | null }> {
    const o = findingQuery.parse(raw);
    const params: unknown[] = [];
    let where = '';
    if (o.tag) {
      params.push(o.tag);
      where += ` AND $${params.length + 3} = ANY(t.tags)`;
    }
    if (o.taskId) {
      params.push(o.taskId);
      where += ` AND t.task_id = $${params.length + 3}`;
    }
    if (o.q) {
      const r = await this.#search.search<Row>({ table: 'findings', tenantId, q: o.q, mode: o.mode, limit: o.limit, where, params, ctx });
      return { items: r.items.map((h) => ({ ...toFinding(h.row), score: h.score, similarity: h.similarity })), nextCursor: null, mode: r.mode, note: r.note };
    }
    const cur = o.cursor ? decodeCursor(o.cursor) : undefined;
    const r = await this.#db.query<Row>(
      `SELECT t.* FROM findings t WHERE t.tenant_id = $1 AND ($2::timestamptz IS NULL OR (t.created_at, t.id) < ($2::timestamptz, $3::uuid)) ${where.replace(/\$(\d+)/g, (_, n: string) => `$${Number(n) + 1}`)}
        ORDER BY t.created_at DESC, t.id DESC LIMIT $4`,
      [tenantId, cur?.[0] ?? null, cur?.[1] ?? null, o.limit + 1, ...params],
    );
    const items = r.rows.slice(0, o.limit).map(toFinding);
    const last = items.at(-1);
    return { items, nextCursor: r.rows.length > o.limit && last ? encodeCursor(last) : null, mode: null, note: null };
  }

  async get(tenantId: string, id: string, q: Queryable = this.#db): Promise<Finding> {
    const r = await q.query<Row>('SELECT t.* FROM findings t WHERE t.tenant_id = $1 AND t.id = $2', [tenantId, id]);
    if (!r.rows[0]) throw new NotFoundError('Finding');
    return toFinding(r.rows[0]);
  }

  async create(tenantId: string, raw: FindingInput, by: { actor: string; requestId?: string }): Promise<Finding> {
    const f = findingInput.parse(raw);
    const id = randomUUID();
    await this.#db.tx(async (tx) => {
      if (f.taskId) {
        const t = await tx.query('SELECT 1 FROM tasks WHERE tenant_id = $1 AND id = $2', [tenantId, f.taskId]);
        if (!t.rowCount) throw new NotFoundError('Task');
      }
      await tx.query(
        'INSERT INTO findings (id, tenant_id, title, body, sources, tags, confidence, task_id, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)',
        [id, tenantId, f.title, f.body, f.sources, [...new Set(f.tags)], f.confidence, f.taskId ?? null, by.actor],
      );
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'finding.create',
        target: `finding:${id}`,
        decision: 'success',
        detail: { title: f.title, taskId: f.taskId ?? null, confidence: f.confidence },
        requestId: by.requestId ?? null,
      });
    });
    await this.#indexer.embedRows('findings', tenantId, [id], { actor: by.actor, agent: '', taskId: f.taskId ?? null });
    return this.get(tenantId, id);
  }

  async update(tenantId: string, id: string, p: z.infer<typeof findingPatch>, by: { actor: string; requestId?: string }): Promise<Finding> {
    await this.#db.tx(async (tx) => {
      await this.get(tenantId, id, tx);
      const textChanged = p.title !== undefined || p.body !== undefined || p.tags !== undefined;
      await tx.query(
        `UPDATE findings SET title = coalesce($3, title), body = coalesce($4, body), sources = coalesce($5, sources), tags = coalesce($6, tags),
                confidence = coalesce($7, confidence), updated_at = now() ${textChanged ? ', embedding = NULL, sketch = NULL, qvec = NULL, embedding_model = NULL' : ''}
          WHERE tenant_id = $1 AND id = $2`,
        [tenantId, id, p.title ?? null, p.body ?? null, p.sources ?? null, p.tags ? [...new Set(p.tags)] : null, p.confidence ?? null],
      );
      if (textChanged) await this.#events?.publish(tx, 'knowledge.removed', { tenantId, table: 'findings', ids: [id] });
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'finding.update',
        target: `finding:${id}`,
        decision: 'success',
        detail: { fields: Object.keys(p) },
        requestId: by.requestId ?? null,
      });
    });
    await this.#indexer.embedRows('findings', tenantId, [id], { actor: by.actor, agent: '', taskId: null });
    return this.get(tenantId, id);
  }

  async remove(tenantId: string, id: string, by: { actor: string; requestId?: string }): Promise<void> {
    await this.#db.tx(async (tx) => {
      const r = await tx.query<{ title: string }>('DELETE FROM findings WHERE tenant_id = $1 AND id = $2 RETURNING title', [tenantId, id]);
      if (!r.rows[0]) throw new NotFoundError('Finding');
      await this.#events?.publish(tx, 'knowledge.removed', { tenantId, table: 'findings', ids: [id] });
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'finding.delete',
        target: `finding:${id}`,
        decision: 'success',
        detail: { title: r.rows[0].title },
        requestId: by.requestId ?? null,
      });
    });
  }
}
