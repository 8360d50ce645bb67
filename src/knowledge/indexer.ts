import type { Logger } from 'pino';
import type { Db, Queryable } from '../db/pool.ts';
import { ClawplaneError } from '../errors.ts';
import type { EmbedContext, EmbeddingModel, Embeddings } from './embeddings.ts';
import type { KnowledgeTable } from './sketch-index.ts';

/** What is embedded of a row: a memory's key and content, a finding's title, body and tags, a message. */
const TEXT: Record<KnowledgeTable, string> = {
  agent_memories: "coalesce(key || ': ', '') || content",
  findings: "title || E'\\n' || body || CASE WHEN cardinality(tags) > 0 THEN E'\\n' || array_to_string(tags, ', ') ELSE '' END",
  chat_messages: 'content',
};
/** Which rows are worth a vector: a chat's system prompts are not searched; summaries (src/knowledge/ingest.ts) are. */
const WORTH: Record<KnowledgeTable, string> = { agent_memories: 'true', findings: 'true', chat_messages: "(role <> 'system' OR actor = 'clawplane:summary')" };
export const KNOWLEDGE_TABLES: KnowledgeTable[] = ['agent_memories', 'findings', 'chat_messages'];
const BATCH = 32;
const ID_TYPE: Record<KnowledgeTable, string> = { agent_memories: 'bigint', findings: 'uuid', chat_messages: 'bigint' };

/**
 * Keeps every tenant's knowledge embedded with its current embedding model (docs/adr/0007): rows written
 * without a vector (the provider was down, or a task's memory written inside its transaction), and every
 * row after the tenant changed its embeddings route. The work list is the rows themselves — a row whose
 * embedding_model differs from the route's is due — so the job is durable by construction: a restart, or
 * another replica, picks up where this one stopped. Batches are claimed with FOR UPDATE SKIP LOCKED, so
 * replicas never embed (and pay for) the same row twice. The old vectors stay searchable by words only
 * (vectors of another model are never compared) until replaced.
 */
export class KnowledgeIndexer {
  readonly #db: Db;
  readonly #embeddings: Embeddings;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;

  constructor(o: { db: Db; embeddings: Embeddings; log: Logger }) {
    this.#db = o.db;
    this.#embeddings = o.embeddings;
    this.#log = o.log;
  }

  /**
   * Embeds these rows now if the tenant has a model; a failure is logged and left to the sweep. Waits for
   * a sweep that holds one of them (plain FOR UPDATE, then PostgreSQL re-checks the row) instead of
   * skipping it, so a write answers "embedded" whenever the row is, whoever embedded it; the sweep itself
   * skips locked rows, so the two never wait on each other in a cycle.
   */
  async embedRows(table: KnowledgeTable, tenantId: string, ids: (string | number)[], ctx: EmbedContext): Promise<void> {
    if (ids.length === 0) return;
    const model = await this.#embeddings.model(tenantId);
    if (!model) return;
    try {
      await this.#db.tx(async (tx) => {
        const r = await tx.query<{ id: string; text: string }>(
          `SELECT id::text AS id, ${TEXT[table]} AS text FROM ${table}
            WHERE tenant_id = $1 AND id = ANY($2::${ID_TYPE[table]}[]) AND embedding_model IS DISTINCT FROM $3 ORDER BY id FOR UPDATE`,
          [tenantId, ids.map(String), model.id],
        );
        await this.#store(tx, table, tenantId, r.rows, model, ctx);
      });
    } catch (err) {
      if (!(err instanceof ClawplaneError)) throw err;
      this.#log.warn({ tenant_id: tenantId, table, code: err.code, err: err.message }, 'embedding on write failed; the sweep retries');
    }
  }

  /** One pass over every tenant with an embeddings route; returns how many rows it embedded. */
  async sweepOnce(): Promise<number> {
    // Memories past their expiry are gone for good (what their writer asked for; not audited per row).
    await this.#db.query('DELETE FROM agent_memories WHERE expires_at <= now()');
    const tenants = await this.#db.query<{ tenant_id: string }>(
      "SELECT DISTINCT tenant_id FROM model_routes WHERE scope = 'skill' AND scope_name = 'embeddings'",
    );
    let done = 0;
    for (const { tenant_id: tenantId } of tenants.rows) {
      const model = await this.#embeddings.model(tenantId);
      if (!model) continue;
      for (const table of KNOWLEDGE_TABLES) {
        let after: string | null = null;
        for (;;) {
          let n: number;
          try {
            n = await this.#db.tx(async (tx) => {
              const r = await tx.query<{ id: string; text: string }>(
                `SELECT id::text AS id, ${TEXT[table]} AS text FROM ${table}
                  WHERE tenant_id = $1 AND embedding_model IS DISTINCT FROM $2 AND ${WORTH[table]} AND ($3::${ID_TYPE[table]} IS NULL OR id > $3::${ID_TYPE[table]})
                  ORDER BY id LIMIT ${BATCH} FOR UPDATE SKIP LOCKED`,
                [tenantId, model.id, after],
              );
              await this.#store(tx, table, tenantId, r.rows, model, { actor: 'system:knowledge-indexer', agent: '', taskId: null });
              after = r.rows.at(-1)?.id ?? after;
              return r.rows.length;
            });
          } catch (err) {
            if (!(err instanceof ClawplaneError)) throw err;
            // Budget or provider refusal: stop this tenant for this pass; the next pass retries.
            this.#log.warn({ tenant_id: tenantId, table, code: err.code, err: err.message }, 'embedding sweep paused for this tenant');
            break;
          }
          done += n;
          if (n < BATCH) break;
        }
      }
    }
    return done;
  }

  /** Sweeps every `intervalMs`, and soon after `kick()`. */
  start(intervalMs: number): void {
    this.#timer = setInterval(() => this.kick(), intervalMs);
    this.#timer.unref();
  }

  kick(): void {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.sweepOnce()
      .then((n) => {
        if (n > 0) this.#log.info({ embedded: n }, 'knowledge embedded');
      })
      .catch((err: unknown) => this.#log.error({ err }, 'knowledge embedding sweep failed'))
      .finally(() => {
        this.#running = undefined;
        if (this.#again && this.#timer) {
          this.#again = false;
          this.kick();
        }
      });
  }

  /** Resolves when no sweep is running (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.idle();
  }

  async #store(
    tx: Queryable,
    table: KnowledgeTable,
    tenantId: string,
    rows: { id: string; text: string }[],
    model: EmbeddingModel,
    ctx: EmbedContext,
  ): Promise<void> {
    if (rows.length === 0) return;
    const vectors =
      (await this.#embeddings.embed(
        tenantId,
        rows.map((r) => r.text),
        ctx,
        model,
      )) ?? [];
    for (const [i, row] of rows.entries()) {
      const v = vectors[i];
      if (!v) continue;
      await tx.query(
        `UPDATE ${table} SET embedding = $3, sketch = $4, qvec = $6, embedding_model = $5, embed_seq = nextval('knowledge_embed_seq') WHERE tenant_id = $1 AND id = $2::${ID_TYPE[table]}`,
        [tenantId, row.id, v.embedding, v.sketch, v.model, v.qvec],
      );
    }
  }
}
