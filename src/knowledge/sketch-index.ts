import type { Queryable } from '../db/pool.ts';
import { hamming } from './vectors.ts';

/** The tables whose rows carry embeddings (migration 0012). */
export type KnowledgeTable = 'agent_memories' | 'findings' | 'chat_messages';

/** Which column scopes a row within its tenant (a memory's agent; '' when the row has none). */
const OWNER: Record<KnowledgeTable, string> = { agent_memories: "coalesce(agent_id::text, '')", findings: "''", chat_messages: "''" };
const PAGE = 20_000;

interface Scope {
  words: number;
  ids: string[];
  owners: string[];
  sketches: Uint32Array;
  pos: Map<string, number>;
  /** Highest embed_seq loaded: later rows are what a refresh asks for. */
  seq: number;
  usedAt: number;
  refreshing: Promise<void> | undefined;
}

/**
 * The sign sketches of one tenant's vectors of one model, per table, kept in this process
 * (docs/adr/0007-knowledge-search.md). Every search first loads the rows embedded since the last one
 * (embed_seq is one database sequence), so a vector written through any replica is found by every
 * replica at once. Deleted rows may linger here; callers read candidates back from the database with
 * their filters, so a lingering id is never returned. Scopes over `maxEntries` in total are dropped,
 * least recently used first, and rebuilt on their next search.
 */
export class SketchIndex {
  readonly #db: Queryable;
  readonly #maxEntries: number;
  readonly #scopes = new Map<string, Scope>();

  constructor(db: Queryable, opts: { maxEntries?: number } = {}) {
    this.#db = db;
    this.#maxEntries = opts.maxEntries ?? 2_000_000;
  }

  /** Ids of the `k` rows whose sketches are nearest to `query` (owners limited by `accept`). */
  async nearest(table: KnowledgeTable, tenantId: string, model: string, query: Uint32Array, k: number, accept?: (owner: string) => boolean): Promise<string[]> {
    const s = await this.#fresh(table, tenantId, model, query.length);
    const n = s.ids.length;
    if (n === 0) return [];
    // A bounded max-heap would save little at k ≤ a few hundred: keep the k best in a sorted array.
    const bestD: number[] = [];
    const bestI: number[] = [];
    let worst = Infinity;
    for (let i = 0; i < n; i++) {
      if (accept && !accept(s.owners[i] as string)) continue;
      const d = hamming(query, s.sketches, i * s.words, s.words);
      if (bestD.length >= k && d >= worst) continue;
      let at = bestD.length;
      while (at > 0 && (bestD[at - 1] as number) > d) at--;
      bestD.splice(at, 0, d);
      bestI.splice(at, 0, i);
      if (bestD.length > k) {
        bestD.pop();
        bestI.pop();
      }
      worst = bestD.length >= k ? (bestD[bestD.length - 1] as number) : Infinity;
    }
    return bestI.map((i) => s.ids[i] as string);
  }

  /** Entries held in this process, and their bytes (the benchmark's memory figure). */
  size(): { entries: number; bytes: number } {
    let entries = 0;
    let bytes = 0;
    for (const s of this.#scopes.values()) {
      entries += s.ids.length;
      bytes += s.sketches.byteLength + s.ids.reduce((a, id) => a + 40 + id.length * 2, 0) + s.ids.length * 60;
    }
    return { entries, bytes };
  }

  /** Forgets a scope (e.g. a tenant's data was deleted); the next search reloads it. */
  drop(tenantId: string): void {
    for (const k of this.#scopes.keys()) if (k.includes(`/${tenantId}/`)) this.#scopes.delete(k);
  }

  async #fresh(table: KnowledgeTable, tenantId: string, model: string, words: number): Promise<Scope> {
    const key = `${table}/${tenantId}/${model}`;
    let s = this.#scopes.get(key);
    if (!s || s.words !== words) {
      s = { words, ids: [], owners: [], sketches: new Uint32Array(words * 1024), pos: new Map(), seq: 0, usedAt: 0, refreshing: undefined };
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

  async #load(table: KnowledgeTable, tenantId: string, model: string, s: Scope): Promise<void> {
    for (;;) {
      const r = await this.#db.query<{ id: string; owner: string; sketch: Buffer; embed_seq: number }>(
        `SELECT id::text AS id, ${OWNER[table]} AS owner, sketch, embed_seq FROM ${table}
          WHERE tenant_id = $1 AND embed_seq > $2 AND embedding_model = $3 AND sketch IS NOT NULL ORDER BY embed_seq LIMIT ${PAGE}`,
        [tenantId, s.seq, model],
      );
      for (const row of r.rows) {
        if (row.sketch.byteLength !== s.words * 4) continue;
        let i = s.pos.get(row.id);
        if (i === undefined) {
          i = s.ids.length;
          if ((i + 1) * s.words > s.sketches.length) {
            const grown = new Uint32Array(Math.max(s.sketches.length * 2, (i + 1) * s.words));
            grown.set(s.sketches);
            s.sketches = grown;
          }
          s.ids.push(row.id);
          s.owners.push(row.owner);
          s.pos.set(row.id, i);
        } else s.owners[i] = row.owner;
        const w = new Uint32Array(row.sketch.buffer.slice(row.sketch.byteOffset, row.sketch.byteOffset + row.sketch.byteLength));
        s.sketches.set(w, i * s.words);
        s.seq = Math.max(s.seq, Number(row.embed_seq));
      }
      if (r.rows.length < PAGE) return;
    }
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
