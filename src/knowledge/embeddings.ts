import type { BrokerProxy } from '../broker/proxy.ts';
import type { Queryable } from '../db/pool.ts';
import type { ProviderKind, ResolvedTarget } from '../vault/providers.ts';
import { decodeVector, encodeVector, quantize, signSketch } from './vectors.ts';

/**
 * The model route a tenant sets for embeddings: scope `skill`, name `embeddings`, in its model routes
 * (PUT /tenants/{t}/model-routes). Only its first target is used: vectors of a fallback model could not
 * be compared with the stored ones (docs/adr/0007-knowledge-search.md).
 */
export const EMBEDDINGS_ROUTE = 'embeddings';
const ROUTE_TTL_MS = 2_000;
/** Providers cap input length; an embedding of the first part is what search needs. */
const MAX_INPUT_CHARS = 8_000;

/** One embedded text as stored: unit float32 bytes, its sign sketch, its int8 code, and the model that made it. */
export interface StoredVector {
  embedding: Buffer;
  sketch: Buffer;
  qvec: Buffer;
  model: string;
}

/** Who an embedding is for, for budgets, metering and the credential audit. */
export interface EmbedContext {
  actor: string;
  agent: string;
  taskId: string | null;
}

export interface EmbeddingModel {
  target: ResolvedTarget;
  /** "<provider id>/<model>": what stored vectors are labelled with. */
  id: string;
}

/** Computes embeddings through the broker (budgets, metering) with the tenant's own embeddings route. */
export class Embeddings {
  readonly #db: Queryable;
  readonly #proxy: Pick<BrokerProxy, 'embed'>;
  readonly #routes = new Map<string, { at: number; model: EmbeddingModel | undefined }>();
  /** Calls made by this process (the benchmark's "embedding calls per task"). */
  calls = 0;

  constructor(db: Queryable, proxy: Pick<BrokerProxy, 'embed'>) {
    this.#db = db;
    this.#proxy = proxy;
  }

  /** The tenant's embedding model, or undefined when it has none (search is then by words only). */
  async model(tenantId: string): Promise<EmbeddingModel | undefined> {
    const hit = this.#routes.get(tenantId);
    if (hit && Date.now() - hit.at < ROUTE_TTL_MS) return hit.model;
    const r = await this.#db.query<{ provider_id: string; kind: ProviderKind; base_url: string; credential_id: string | null; model: string }>(
      `SELECT r.provider_id, p.kind, p.base_url, p.credential_id, r.model
         FROM model_routes r JOIN llm_providers p ON p.tenant_id = r.tenant_id AND p.id = r.provider_id
        WHERE r.tenant_id = $1 AND r.scope = 'skill' AND r.scope_name = $2 AND p.enabled
        ORDER BY r.position LIMIT 1`,
      [tenantId, EMBEDDINGS_ROUTE],
    );
    const row = r.rows[0];
    const model = row
      ? {
          target: { providerId: row.provider_id, kind: row.kind, baseUrl: row.base_url, credentialId: row.credential_id, model: row.model },
          id: `${row.provider_id}/${row.model}`,
        }
      : undefined;
    this.#routes.set(tenantId, { at: Date.now(), model });
    return model;
  }

  /** Drops the cached route of a tenant (its providers or routes changed). */
  forget(tenantId?: string): void {
    if (tenantId === undefined) this.#routes.clear();
    else this.#routes.delete(tenantId);
  }

  /** Embeds texts with the tenant's model, as stored vectors; undefined when the tenant has no model. */
  async embed(tenantId: string, texts: string[], ctx: EmbedContext, model?: EmbeddingModel): Promise<StoredVector[] | undefined> {
    const m = model ?? (await this.model(tenantId));
    if (!m) return undefined;
    this.calls++;
    const { vectors } = await this.#proxy.embed(
      tenantId,
      m.target,
      texts.map((t) => t.slice(0, MAX_INPUT_CHARS) || ' '),
      ctx,
    );
    return vectors.map((v) => {
      const embedding = encodeVector(v);
      const f = decodeVector(embedding);
      const sk = signSketch(f);
      return { embedding, sketch: Buffer.from(sk.buffer, sk.byteOffset, sk.byteLength), qvec: quantize(f), model: m.id };
    });
  }
}
