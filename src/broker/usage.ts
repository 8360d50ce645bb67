import type { Logger } from 'pino';
import type { Db } from '../db/pool.ts';

/** One model call, as metered (issue 5, item 4). */
export interface UsageRow {
  tenantId: string;
  instanceId: string | null;
  sandboxToken: string | null;
  agent: string;
  taskId: string | null;
  providerId: string | null;
  providerKind: string | null;
  model: string;
  api: string;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
  latencyMs: number;
  status: number;
  outcome: 'ok' | 'upstream_error' | 'fallback' | 'refused' | 'client_aborted';
}

const COLUMNS = [
  'tenant_id',
  'instance_id',
  'sandbox_token',
  'agent',
  'task_id',
  'provider_id',
  'provider_kind',
  'model',
  'api',
  'input_tokens',
  'output_tokens',
  'cost_usd',
  'latency_ms',
  'status',
  'outcome',
];

/**
 * Writes usage rows in small batches off the request path (a model call does not wait for its row);
 * `flush()` on shutdown and in tests. Budget counters are kept separately in memory (budgets.ts), so
 * enforcement never waits for this writer.
 */
export class UsageWriter {
  private readonly db: Db;
  private readonly log: Logger;
  private queue: UsageRow[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(db: Db, log: Logger) {
    this.db = db;
    this.log = log;
  }

  record(row: UsageRow): void {
    if (this.closed) {
      // A call that finished after shutdown began (its stream was cut): nothing can store it now.
      this.log.warn({ tenant_id: row.tenantId, outcome: row.outcome }, 'usage row after shutdown was not stored');
      return;
    }
    this.queue.push(row);
    if (this.queue.length >= 200) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), 100);
  }

  /** Writes what is queued, then refuses new rows (shutdown: the database is about to close). */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.queue;
    this.queue = [];
    this.flushing = this.flushing.then(async () => {
      if (batch.length === 0) return;
      const values: unknown[] = [];
      const tuples = batch.map((r, i) => {
        values.push(
          r.tenantId,
          r.instanceId,
          r.sandboxToken,
          r.agent,
          r.taskId,
          r.providerId,
          r.providerKind,
          r.model,
          r.api,
          r.inputTokens,
          r.outputTokens,
          r.costUsd,
          r.latencyMs,
          r.status,
          r.outcome,
        );
        return `(${COLUMNS.map((_, j) => `$${i * COLUMNS.length + j + 1}`).join(', ')})`;
      });
      try {
        await this.db.query(`INSERT INTO llm_usage (${COLUMNS.join(', ')}) VALUES ${tuples.join(', ')}`, values);
      } catch (err) {
        // Keep the rows for the next attempt rather than lose metering; a tenant deleted meanwhile
        // (foreign key) is the one case where dropping is right.
        if ((err as { code?: string }).code === '23503') {
          this.log.warn({ rows: batch.length }, 'dropped usage rows of a deleted tenant');
        } else {
          this.log.error({ err: (err as Error).message, rows: batch.length }, 'usage write failed; will retry');
          if (!this.closed) {
            this.queue.unshift(...batch);
            this.timer ??= setTimeout(() => void this.flush(), 1000);
          }
        }
      }
    });
    return this.flushing;
  }
}

export interface UsageSummaryRow {
  day: string;
  agent: string;
  model: string;
  calls: number;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
}

/** Per-tenant daily totals by agent and model, for the API and the UI's usage page. */
export async function usageSummary(db: Db, tenantId: string, days: number): Promise<UsageSummaryRow[]> {
  const r = await db.query<{ day: string; agent: string; model: string; calls: number; i: number; o: number; c: string }>(
    `SELECT to_char(date_trunc('day', created_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD') AS day, agent, model,
            count(*)::int AS calls, coalesce(sum(input_tokens), 0)::bigint AS i, coalesce(sum(output_tokens), 0)::bigint AS o,
            coalesce(sum(cost_usd), 0) AS c
       FROM llm_usage
      WHERE tenant_id = $1 AND created_at >= (date_trunc('day', now() AT TIME ZONE 'UTC') - make_interval(days => $2 - 1)) AT TIME ZONE 'UTC'
      GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`,
    [tenantId, days],
  );
  return r.rows.map((x) => ({
    day: x.day,
    agent: x.agent,
    model: x.model,
    calls: x.calls,
    inputTokens: Number(x.i),
    outputTokens: Number(x.o),
    costUsd: Number(x.c),
  }));
}
