import type { Queryable } from '../db/pool.ts';
import { decodeCode, decodeVector, dotCode, hamming, quantize } from './vectors.ts';

/** The tables whose rows carry embeddings (migration 0012). */
export type KnowledgeTable = 'agent_memories' | 'findings' | 'chat_messages';

/** Which column scopes a row within its tenant (a memory's agent; '' when the row has none). */
const OWNER: Record<KnowledgeTable, string> = { agent_memories: "coalesce(agent_id::text, '')", findings: "''", chat_messages: "''" };
const PAGE = 20_000;

/** One tenant's vectors of one model in one table, as this process holds them. */
export interface Scope {
  /** Sketch words (dimensions / 32) and dimensions; 0 until the first row is loaded. */
  words: number;
  dim: number;
  ids: string[];
  /** Each row's owner as a number into `ownerNames` (see OWNER); -1 once it is deleted or re-written. */
  owners: Int32Array;
  ownerNames: string[];
  ownerNums: Map<string, number>;
  sketches: Uint32Array;
  codes: Int8Array;
  scales: Float32Array;
  pos: Map<string, number>;
  /** Highest embed_seq loaded: later rows are what a refresh asks for. */
  seq: number;
  usedAt: number;
  refreshing: Promise<void> | undefined;
}

/**
 * The sign sketches and int8 codes of one tenant's vectors of one model, per table, kept in this process
 * (docs/adr/0007-knowledge-search.md). Every search first loads the rows embedded since the last one
 * (embed_seq is one database sequence), so a vector written through any replica is found by every
 * replica at once. Deletions and re-written rows arrive by the event channel (`forget`) and drop out of
 * the candidates; without that notice a stale entry only costs a candidate slot, because callers read
 * candidates back from the database with their filters and rank them by the stored vector. Scopes over
 * `maxEntries` in total are dropped, least recently used first, and rebuilt on their next search.
 */
export class SketchIndex {
  readonly #db: Queryable;
  readonly #maxEntries: number;
  readonly #scopes = new Map<string, Scope>();

  constructor(db: Queryable, opts: { maxEntries?: number } = {}) {
    this.#db = db;
    this.#maxEntries = opts.maxEntries ?? 500_000;
  }

  /** The scope, caught up with every vector committed before this call. */
  async scope(table: KnowledgeTable, tenantId: string, model: string): Promise<Scope> {
    const key = `${table}/${tenantId}/${model}`;
    let s = this.#scopes.get(key);
    if (!s) {
      s = { words: 0, dim: 0, ids: [], owners: new Int32Array(0), ownerNames: [], ownerNums: new Map(), sketches: new Uint32Array(0), codes: new Int8Array(0), scales: new Float32Array(0), pos: new Map(), seq: 0, usedAt: 0, refreshing: undefined };
      this.#scopes.set(key, s);
    }
    s.usedAt = Date.now();
    // One refresh per scope at a time; a search that arrives meanwhile waits for it, then asks again.
    while (s.refreshing) await s.refreshing;
    const scope = s;
    scope.refreshing = this.#load(table, tenantId, model, scope).finally(() => (scope.refreshing = undefined));
    await scope.refreshing;
    this.#evict(key);
    return scope;
  }

  /** Entry numbers of the `k` live rows whose sketches are nearest to `query` (owners limited by `accept`). */
  nearest(s: Scope, query: Uint32Array, k: number, accept?: (owner: string) => boolean): number[] {
    const n = s.ids.length;
    if (n === 0 || query.length !== s.words) return [];
    // A bounded max-heap would save little at k ≤ a few hundred: keep the k best in a sorted array.
    const bestD: number[] = [];
    const bestI: number[] = [];
    let worst = Infinity;
    const { sketches, words, owners } = s;
    // Owners are few (a tenant's agents): decide each once, then the scan compares small numbers.
    const ok = Uint8Array.from(s.ownerNames, (o) => (!accept || accept(o) ? 1 : 0));
    for (let i = 0; i < n; i++) {
      const owner = owners[i] as number;
      if (owner < 0 || ok[owner] === 0) continue;
      const d = hamming(query, sketches, i * words, words);
      if (d >= worst) continue;
      let at = bestD.length;
      while (at > 0 && (bestD[at - 1] as number) > d) at--;
      bestD.splice(at, 0, d);
      bestI.splice(at, 0, i);
      if (bestD.length > k) {
        bestD.pop();
        bestI.pop();
      }
      if (bestD.length >= k) worst = bestD[bestD.length - 1] as number;
    }
    return bestI;
  }

  /** The int8 estimate of entry `i`'s cosine with the unit vector `query`. */
  approx(s: Scope, i: number, query: Float32Array): number {
    return query.length === s.dim ? dotCode(query, s.codes, i * s.dim, s.scales[i] as number) : 0;
  }

  /** Drops rows that were deleted or re-written (their next vector, if any, comes back by embed_seq). */
  forget(table: KnowledgeTable, tenantId: string, ids: string[]): void {
    for (const [key, s] of this.#scopes) {
      if (!key.startsWith(`${table}/${tenantId}/`)) continue;
      for (const id of ids) {
        const i = s.pos.get(id);
        if (i !== undefined) s.owners[i] = -1;
      }
    }
  }

  /** Entries held in this process, and their bytes (the benchmark's memory figure). */
  size(): { entries: number; bytes: number } {
    let entries = 0;
    let bytes = 0;
    for (const s of this.#scopes.values()) {
      const n = s.ids.length;
      entries += n;
      // Used parts of the typed arrays, the id strings, and the map and array slots that point at them.
      bytes += n * (s.words * 4 + s.dim + 8) + s.ids.reduce((a, id) => a + 40 + id.length * 2, 0) + n * 60;
    }
    return { entries, bytes };
  }

  /** Forgets a tenant's scopes (e.g. its data was deleted); the next search reloads them. */
  drop(tenantId: string): void {
    for (const k of this.#scopes.keys()) if (k.includes(`/${tenantId}/`)) this.#scopes.delete(k);
  }

  async #load(table: KnowledgeTable, tenantId: string, model: string, s: Scope): Promise<void> {
    for (;;) {
      // Rows embedded before the qvec column have none: coded here from their float vector, once.
      const r = await this.#db.query<{ id: string; owner: string; sketch: Buffer; qvec: Buffer | null; embedding: Buffer | null; embed_seq: string }>(
        `SELECT id::text AS id, ${OWNER[table]} AS owner, sketch, qvec, CASE WHEN qvec IS NULL THEN embedding END AS embedding, embed_seq FROM ${table}
          WHERE tenant_id = $1 AND embed_seq > $2 AND embedding_model = $3 AND sketch IS NOT NULL ORDER BY embed_seq LIMIT ${PAGE}`,
        [tenantId, s.seq, model],
      );
      for (const row of r.rows) {
        s.seq = Math.max(s.seq, Number(row.embed_seq));
        const qvec = row.qvec ?? (row.embedding ? quantize(decodeVector(row.embedding)) : undefined);
        if (!qvec) continue;
        const { scale, codes } = decodeCode(qvec);
        if (s.words === 0) {
          s.words = row.sketch.byteLength / 4;
          s.dim = codes.length;
        }
        if (row.sketch.byteLength !== s.words * 4 || codes.length !== s.dim) continue;
        let owner = s.ownerNums.get(row.owner);
        if (owner === undefined) {
          owner = s.ownerNames.push(row.owner) - 1;
          s.ownerNums.set(row.owner, owner);
        }
        let i = s.pos.get(row.id);
        if (i === undefined) {
          i = s.ids.length;
          this.#grow(s, i + 1);
          s.ids.push(row.id);
          s.pos.set(row.id, i);
        }
        s.owners[i] = owner;
        s.sketches.set(new Uint32Array(row.sketch.buffer.slice(row.sketch.byteOffset, row.sketch.byteOffset + row.sketch.byteLength)), i * s.words);
        s.codes.set(codes, i * s.dim);
        s.scales[i] = scale;
      }
      if (r.rows.length < PAGE) return;
    }
  }

  #grow(s: Scope, n: number): void {
    if (n <= s.scales.length) return;
    const cap = Math.max(1024, s.scales.length * 2, n);
    const sketches = new Uint32Array(cap * s.words);
    sketches.set(s.sketches);
    const codes = new Int8Array(cap * s.dim);
    codes.set(s.codes);
    const scales = new Float32Array(cap);
    scales.set(s.scales);
    const owners = new Int32Array(cap);
    owners.set(s.owners);
    Object.assign(s, { sketches, codes, scales, owners });
  }

  #evict(keep: string): void {
    let total = 0;
    for (const s of this.#scopes.values()) total += s.ids.length;
    if (total <= this.#maxEntries) return;
    const byAge = [...this.#scopes.entries()].filter(([k]) => k !== keep).sort((a, b) => a[1].usedAt - b[1].usedAt);
    for (const [k, s] of byAge) {
      if (total <= this.#maxEntries) break;
      if (s.refreshing) continue;
      this.#scopes.delete(k);
      total -= s.ids.length;
    }
  }
}
