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
/** Rows read back per round beyond the limit (at least; half the limit when larger), ranked by their stored vectors. */
const READ_BACK_SLACK = 5;
/** How far an int8 estimate of cosine may be below the exact value (measured well under 1e-3). */
const APPROX_SLACK = 0.01;
const QUERY_CACHE_MS = 60_000;

const ID_TYPE: Record<KnowledgeTable, string> = { agent_memories: 'bigint', findings: 'uuid', chat_messages: 'bigint' };
const TEXT_CONFIG: Record<KnowledgeTable, string> = { agent_memories: 'english', findings: 'english', chat_messages: 'simple' };
/** The query's lexemes OR-ed (any word may match; ts_rank rewards those that match more), from $2. */
const tsQuery = (t: KnowledgeTable) => `(SELECT replace(plainto_tsquery('${TEXT_CONFIG[t]}', $2)::text, ' & ', ' | ')::tsquery AS q) query`;

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
 * Hybrid ranking over one knowledge table (docs/adr/0007-knowledge-search.md): candidates are the best
 * full-text matches (GIN index) and the nearest sign sketches (in-process, sketch-index.ts), ordered by
 * their int8 codes' estimate of cosine; only the best few are read back with the caller's filters and
 * ranked by exact cosine and relative text rank. Without an embeddings route, or when the provider
 * fails, it is a search by words and says so.
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
    const model = mode === 'words' ? undefined : await this.#embeddings.model(h.tenantId);
    if (mode !== 'words' && !model) {
      note = 'No embeddings route is set for this tenant (model route scope "skill", name "embeddings"): searched by words.';
      mode = 'words';
    }
    const t = h.table;
    const q = h.q.slice(0, 2000);
    // One round trip's wait for all three: the query's vector, the best word matches, the index catch-up.
    const text = mode === 'hybrid' || mode === 'words' ? this.#textCandidates(h, q) : undefined;
    const scope = model ? this.#index.scope(t, h.tenantId, model.id) : undefined;
    // Both are awaited below; until then a failure must not count as unhandled.
    for (const p of [text, scope]) p?.catch(() => undefined);
    let query: Float32Array | undefined;
    let sketch: Uint32Array | undefined;
    if (model) {
      try {
        const v = await this.#queryVector(h.tenantId, h.q, h.ctx, model);
        if (v) {
          query = decodeVector(v.embedding);
          sketch = new Uint32Array(v.sketch.buffer.slice(v.sketch.byteOffset, v.sketch.byteOffset + v.sketch.byteLength));
        }
      } catch (err) {
        if (!(err instanceof ClawplaneError)) throw err;
        this.#log.warn({ tenant_id: h.tenantId, code: err.code, err: err.message }, 'query embedding failed; searching by words');
        note = `${err.message}`;
        mode = 'words';
      }
    }
    const words = (await (text ?? (mode === 'words' ? this.#textCandidates(h, q) : undefined))) ?? [];
    const s = mode === 'words' ? undefined : await scope;
    // Candidates: the word matches and the nearest sketches, each with its int8 estimate of cosine.
    const cands = new Map<string, { rank: number; approx: number | null }>();
    for (const w of words) {
      const i = s?.pos.get(w.id);
      cands.set(w.id, {
        rank: Number(w.text_rank),
        approx: s && query && i !== undefined && (s.owners[i] as number) >= 0 ? this.#index.approx(s, i, query) : null,
      });
    }
    if (s && query && sketch) {
      for (const i of this.#index.nearest(s, sketch, VECTOR_CANDIDATES, h.accept)) {
        const id = s.ids[i] as string;
        if (!cands.has(id)) cands.set(id, { rank: 0, approx: this.#index.approx(s, i, query) });
      }
    }
    const maxText = Math.max(0, ...words.map((w) => Number(w.text_rank)));
    const score = (rank: number, similarity: number | null): number | undefined => {
      const w = maxText > 0 ? rank / maxText : 0;
      const similar = similarity !== null && similarity >= MIN_SIMILARITY;
      // By meaning: only what is similar; otherwise a word match or a similar row.
      if (mode === 'meaning' ? !similar : w === 0 && !similar) return undefined;
      return mode === 'words' || !query ? w : mode === 'meaning' ? (similarity ?? 0) : VECTOR_WEIGHT * Math.max(similarity ?? 0, 0) + TEXT_WEIGHT * w;
    };
    // Ordered by the estimate (a little slack at the similarity floor: the estimate is within ~1e-3).
    const order = [...cands.entries()]
      .map(([id, c]) => ({ id, est: score(c.rank, c.approx === null ? null : c.approx + APPROX_SLACK) }))
      .filter((c): c is { id: string; est: number } => c.est !== undefined)
      .sort((a, b) => b.est - a.est);
    // Read back the best few with the caller's filters and rank them by their stored vectors; more only
    // when filters or deletions left too few.
    const ranked: Ranked<R>[] = [];
    const batch = h.limit + Math.max(READ_BACK_SLACK, Math.ceil(h.limit / 2));
    for (let from = 0; from < order.length && ranked.length < h.limit; from += batch) {
      const ids = order.slice(from, from + batch).map((c) => c.id);
      const r = await this.#db.query<R>(
        `SELECT t.*, CASE WHEN t.search @@ query.q THEN ts_rank(t.search, query.q) ELSE 0 END AS text_rank FROM ${t} t, ${tsQuery(t)}
          WHERE t.tenant_id = $1 AND t.id = ANY($3::${ID_TYPE[t]}[]) ${h.where}`,
        [h.tenantId, q, ids, ...h.params],
      );
      for (const row of r.rows) {
        const similarity = query && model && row.embedding && row.embedding_model === model.id ? cosine(query, decodeVector(row.embedding)) : null;
        const base = score(Number(row.text_rank), similarity);
        if (base === undefined) continue;
        ranked.push({ row, score: base + (h.boost ? h.boost(row as never) : 0), similarity, words: maxText > 0 ? Number(row.text_rank) / maxText : 0 });
      }
    }
    ranked.sort((a, b) => b.score - a.score || String(b.row.id).localeCompare(String(a.row.id)));
    return { items: ranked.slice(0, h.limit), mode, note };
  }

  /** The best word matches (ids and ranks only), with the caller's filters. */
  async #textCandidates(h: HybridQuery, q: string): Promise<{ id: string; text_rank: number }[]> {
    const t = h.table;
    const r = await this.#db.query<{ id: string; text_rank: number }>(
      `SELECT t.id::text AS id, ts_rank(t.search, query.q) AS text_rank FROM ${t} t, ${tsQuery(t)}
        WHERE t.tenant_id = $1 AND t.search @@ query.q AND NOT (t.id = ANY($3::${ID_TYPE[t]}[])) ${h.where}
        ORDER BY text_rank DESC, t.id DESC LIMIT ${TEXT_CANDIDATES}`,
      [h.tenantId, q, [], ...h.params],
    );
    return r.rows;
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
