import type { Queryable } from '../db/pool.ts';
import { hammingScan, type DistFn } from './hamming-wasm.ts';
import { decodeCode, decodeVector, dotCode, quantize } from './vectors.ts';

/** The tables whose rows carry embeddings (migration 0012). */
export type KnowledgeTable = 'agent_memories' | 'findings' | 'chat_messages';

/** Which column scopes a row within its tenant (a memory's agent; '' when the row has none). */
const OWNER: Record<KnowledgeTable, string> = { agent_memories: "coalesce(agent_id::text, '')", findings: "''", chat_messages: "''" };
const PAGE = 20_000;
/** Where a scope's WebAssembly memory holds the query sketch; the sketches follow, then the distances. */
const QUERY_BYTES = 1024;
const WASM_PAGE = 65_536;

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
  /** Room for this many rows in the arrays below. */
  cap: number;
  /** The sketches live in WebAssembly memory the scan reads (hamming-wasm.ts); `sketches` views it. */
  mem: WebAssembly.Memory;
  dist: DistFn;
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
      const mem = new WebAssembly.Memory({ initial: 1 });
      s = {
        words: 0,
        dim: 0,
        ids: [],
        owners: new Int32Array(0),
        ownerNames: [],
        ownerNums: new Map(),
        cap: 0,
        mem,
        dist: hammingScan(mem),
        sketches: new Uint32Array(0),
        codes: new Int8Array(0),
        scales: new Float32Array(0),
        pos: new Map(),
        seq: 0,
        usedAt: 0,
        refreshing: undefined,
      };
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
    // Every distance at once (WebAssembly), then the k smallest of the accepted rows by a histogram.
    new Uint32Array(s.mem.buffer, 0, s.words).set(query);
    const out = QUERY_BYTES + s.cap * s.words * 4;
    s.dist(0, QUERY_BYTES, n, s.words / 2, out);
    const dist = new Uint16Array(s.mem.buffer, out, n);
    // Owners are few (a tenant's agents): decide each once, then the pass compares small numbers.
    const ok = Uint8Array.from(s.ownerNames, (o) => (!accept || accept(o) ? 1 : 0));
    const owners = s.owners;
    const hist = new Uint32Array(s.words * 32 + 1);
    for (let i = 0; i < n; i++) {
      const o = owners[i] as number;
      const d = dist[i] as number;
      if (o >= 0 && ok[o] === 1) hist[d] = (hist[d] as number) + 1;
    }
    let limit = 0;
    for (let seen = 0; limit < hist.length; limit++) {
      seen += hist[limit] as number;
      if (seen >= k) break;
    }
    const below: number[] = [];
    const at: number[] = [];
    for (let i = 0; i < n; i++) {
      const o = owners[i] as number;
      if (o < 0 || ok[o] !== 1) continue;
      const d = dist[i] as number;
      if (d < limit) below.push(i);
      else if (d === limit && at.length < k) at.push(i);
    }
    return [...below, ...at].slice(0, k).sort((x, y) => (dist[x] as number) - (dist[y] as number) || x - y);
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
        // The scan reads 64 bits at a time: sketches of an odd number of 32-bit words (dimensions not a
        // multiple of 64) are never stored.
        if (s.words === 0 && row.sketch.byteLength % 8 === 0 && row.sketch.byteLength <= QUERY_BYTES) {
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
    if (n <= s.cap) return;
    const cap = Math.max(1024, s.cap * 2, n);
    // The sketches stay where they are (the memory only grows); the distances after them are scratch.
    const bytes = QUERY_BYTES + cap * s.words * 4 + cap * 2;
    const pages = Math.ceil(bytes / WASM_PAGE) - s.mem.buffer.byteLength / WASM_PAGE;
    if (pages > 0) s.mem.grow(pages);
    const sketches = new Uint32Array(s.mem.buffer, QUERY_BYTES, cap * s.words);
    const codes = new Int8Array(cap * s.dim);
    codes.set(s.codes);
    const scales = new Float32Array(cap);
    scales.set(s.scales);
    const owners = new Int32Array(cap);
    owners.set(s.owners);
    Object.assign(s, { cap, sketches, codes, scales, owners });
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
