import type { Db } from '../db/pool.ts';

export interface ModelPrice {
  model: string;
  inputUsdPerMtok: number;
  outputUsdPerMtok: number;
}

/**
 * The price table (issue 5, item 3), kept in the database and editable by a platform admin. A row's
 * model is an exact id or a prefix ending in `*`; the longest match wins. Cached for a few seconds.
 */
export class PriceTable {
  private readonly db: Db;
  private cache: { rows: ModelPrice[]; at: number } | undefined;

  constructor(db: Db) {
    this.db = db;
  }

  async list(): Promise<ModelPrice[]> {
    if (this.cache && Date.now() - this.cache.at < 5_000) return this.cache.rows;
    const r = await this.db.query<{ model: string; i: string; o: string }>(
      'SELECT model, input_usd_per_mtok AS i, output_usd_per_mtok AS o FROM model_prices ORDER BY model',
    );
    const rows = r.rows.map((x) => ({ model: x.model, inputUsdPerMtok: Number(x.i), outputUsdPerMtok: Number(x.o) }));
    this.cache = { rows, at: Date.now() };
    return rows;
  }

  async set(p: ModelPrice): Promise<void> {
    await this.db.query(
      `INSERT INTO model_prices (model, input_usd_per_mtok, output_usd_per_mtok, updated_at) VALUES ($1, $2, $3, now())
       ON CONFLICT (model) DO UPDATE SET input_usd_per_mtok = EXCLUDED.input_usd_per_mtok, output_usd_per_mtok = EXCLUDED.output_usd_per_mtok, updated_at = now()`,
      [p.model, p.inputUsdPerMtok, p.outputUsdPerMtok],
    );
    this.cache = undefined;
  }

  async remove(model: string): Promise<boolean> {
    const r = await this.db.query('DELETE FROM model_prices WHERE model = $1', [model]);
    this.cache = undefined;
    return (r.rowCount ?? 0) > 0;
  }

  /** The price of a model, or undefined when none is known. */
  async find(model: string): Promise<ModelPrice | undefined> {
    let best: ModelPrice | undefined;
    for (const p of await this.list()) {
      const exact = p.model === model;
      const prefix = p.model.endsWith('*') && model.startsWith(p.model.slice(0, -1));
      if (exact) return p;
      if (prefix && (!best || p.model.length > best.model.length)) best = p;
    }
    return best;
  }
}

export function costOf(p: ModelPrice | undefined, inputTokens: number, outputTokens: number): number {
  if (!p) return 0;
  return (inputTokens * p.inputUsdPerMtok + outputTokens * p.outputUsdPerMtok) / 1_000_000;
}
