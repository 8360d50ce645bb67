import type { Logger } from 'pino';
import type { Queryable } from '../db/pool.ts';
import { ClawplaneError } from '../errors.ts';
import type { EmbedContext, EmbeddingModel, Embeddings, StoredVector } from './embeddings.ts';
import type { KnowledgeTable, SketchIndex } from './sketch-index.ts';
import { cosine, decodeVector } from './vectors.ts';

export const SEARCH_MODES = ['hybrid', 'words', 'meaning'] as const;
export type SearchMode = (typeof SEARCH_MODES)[number];

/** How much meaning and words weigh in a hybrid score (docs/adr/0007-knowledge-search.md). */
const VECTOR_WEIGHT = 0.7;
const TEXT_WEIGHT = 0.3;
/** A row found by meaning alone must be at least this similar to the query (cosine). */
export const MIN_SIMILARITY = 0.3;
/** Candidates read back from the database: best by words, and best by sketch distance. */
const TEXT_CANDIDATES = 100;
const VECTOR_CANDIDATES = 200;
const QUERY_CACHE_MS = 60_000;

const ID_TYPE: Record<KnowledgeTable, string> = { agent_memories: 'bigint', findings: 'uuid', chat_messages: 'bigint' };
const TEXT_CONFIG: Record<KnowledgeTable, string> = { agent_memories: 'english', findings: 'english', chat_messages: 'simple' };

export interface CandidateRow {
  id: string | number;
  embedding: Buffer | null;
  embedding_model: string | null;
  text_rank: number;
}

export interface Ranked<R> {
  row: R;
  score: number;
  /** Cosine similarity to the query; null when the row or the query has no vector of the model. */
  similarity: number | null;
  /** Full-text rank relative to the best word match of this search (0–1). */
  words: number;
}

export interface SearchResult<R> {
  items: Ranked<R>[];
  /** How the search ran: `hybrid`/`meaning` need the tenant's embeddings route, otherwise `words`. */
  mode: SearchMode;
  /** Why a search by meaning fell back to words, when it did. */
  note: string | null;
}

export interface HybridQuery {
  table: KnowledgeTable;
  tenantId: string;
  q: string;
  mode: SearchMode;
  limit: number;
  /** Extra SQL conditions on alias `t`; their parameters are numbered from $4. */
  where: string;
  params: unknown[];
  /** For the in-memory sketch scan: which owners (a memory's agent id, '' for none) may match. */
  accept?: (owner: string) => boolean;
  /** A per-row addition to the score (memories: importance). */
  boost?: (row: never) => number;
  ctx: EmbedContext;
}

/**
 * Hybrid ranking over one knowledge table: candidates are the best full-text matches (GIN index) and
 * the nearest sign sketches (in-process, sketch-index.ts); both sets are read back with the caller's
 * filters and ranked by exact cosine and relative text rank. Without an embeddings route, or when the
 * provider fails, it is a search by words and says so.
 */
export class HybridSearch {
  readonly #db: Queryable;
  readonly #embeddings: Embeddings;
  readonly #index: SketchIndex;
  readonly #log: Logger;
  /** Recent query vectors: one search of memories, findings and the archive embeds its text once. */
  readonly #queries = new Map<string, { at: number; v: StoredVector }>();

  constructor(o: { db: Queryable; embeddings: Embeddings; index: SketchIndex; log: Logger }) {
    this.#db = o.db;
    this.#embeddings = o.embeddings;
    this.#index = o.index;
    this.#log = o.log;
  }

  /** What this process holds in its sketch index (the benchmark's memory figure). */
  indexSize(): { entries: number; bytes: number } {
    return this.#index.size();
  }

  async search<R extends CandidateRow>(h: HybridQuery): Promise<SearchResult<R>> {
    let mode = h.mode;
    let note: string | null = null;
    let query: Float32Array | undefined;
    let sketch: Uint32Array | undefined;
    let modelId: string | undefined;
    if (mode !== 'words') {
      const model = await this.#embeddings.model(h.tenantId);
      if (!model) {
        note = 'No embeddings route is set for this tenant (model route scope "skill", name "embeddings"): searched by words.';
        mode = 'words';
      } else {
        try {
          const v = await this.#queryVector(h.tenantId, h.q, h.ctx, model);
          if (v) {
            query = decodeVector(v.embedding);
            sketch = new Uint32Array(v.sketch.buffer.slice(v.sketch.byteOffset, v.sketch.byteOffset + v.sketch.byteLength));
            modelId = model.id;
          }
        } catch (err) {
          if (!(err instanceof ClawplaneError)) throw err;
          this.#log.warn({ tenant_id: h.tenantId, code: err.code, err: err.message }, 'query embedding failed; searching by words');
          note = `${err.message}`;
          mode = 'words';
        }
      }
    }
    const t = h.table;
    const tsq = `(SELECT replace(plainto_tsquery('${TEXT_CONFIG[t]}', $2)::text, ' & ', ' | ')::tsquery AS q) query`;
    const base = [h.tenantId, h.q.slice(0, 2000)];
    const rows = new Map<string, R>();
    if (mode !== 'meaning') {
      const r = await this.#db.query<R>(
        `SELECT t.*, ts_rank(t.search, query.q) AS text_rank FROM ${t} t, ${tsq}
          WHERE t.tenant_id = $1 AND t.search @@ query.q AND NOT (t.id = ANY($3::${ID_TYPE[t]}[])) ${h.where}
          ORDER BY text_rank DESC, t.id DESC LIMIT ${TEXT_CANDIDATES}`,
        [...base, [], ...h.params],
      );
      for (const row of r.rows) rows.set(String(row.id), row);
    }
    if (sketch && modelId) {
      const ids = (await this.#index.nearest(t, h.tenantId, modelId, sketch, VECTOR_CANDIDATES, h.accept)).filter((id) => !rows.has(id));
      if (ids.length > 0) {
        const r = await this.#db.query<R>(
          `SELECT t.*, CASE WHEN t.search @@ query.q THEN ts_rank(t.search, query.q) ELSE 0 END AS text_rank FROM ${t} t, ${tsq}
            WHERE t.tenant_id = $1 AND t.id = ANY($3::${ID_TYPE[t]}[]) ${h.where}`,
          [...base, ids, ...h.params],
        );
        for (const row of r.rows) rows.set(String(row.id), row);
      }
    }
    const all = [...rows.values()];
    const maxText = Math.max(0, ...all.map((r) => Number(r.text_rank)));
    const ranked: Ranked<R>[] = [];
    for (const row of all) {
      const words = maxText > 0 ? Number(row.text_rank) / maxText : 0;
      const similarity = query && row.embedding && row.embedding_model === modelId ? cosine(query, decodeVector(row.embedding)) : null;
      const similar = similarity !== null && similarity >= MIN_SIMILARITY;
      // By meaning: only what is similar; otherwise a word match or a similar row.
      if (mode === 'meaning' ? !similar : words === 0 && !similar) continue;
      const base = mode === 'words' || !query ? words : mode === 'meaning' ? (similarity ?? 0) : VECTOR_WEIGHT * Math.max(similarity ?? 0, 0) + TEXT_WEIGHT * words;
      ranked.push({ row, score: base + (h.boost ? h.boost(row as never) : 0), similarity, words });
    }
    ranked.sort((a, b) => b.score - a.score || String(b.row.id).localeCompare(String(a.row.id)));
    return { items: ranked.slice(0, h.limit), mode, note };
  }

  async #queryVector(tenantId: string, q: string, ctx: EmbedContext, model: EmbeddingModel): Promise<StoredVector | undefined> {
    const key = `${tenantId}/${model.id}/${q}`;
    const hit = this.#queries.get(key);
    if (hit && Date.now() - hit.at < QUERY_CACHE_MS) return hit.v;
    const [v] = (await this.#embeddings.embed(tenantId, [q], ctx, model)) ?? [];
    if (!v) return undefined;
    if (this.#queries.size >= 200) this.#queries.delete(this.#queries.keys().next().value as string);
    this.#queries.set(key, { at: Date.now(), v });
    return v;
  }
}
