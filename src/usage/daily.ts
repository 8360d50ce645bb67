import type { Db } from '../db/pool.ts';

/**
 * Usage for billing (docs/usage.md): per tenant and UTC day. Each figure comes from the table that records it:
 *
 * - tokens, cost, model calls: `llm_usage` (one row per model call through the broker; the cost was priced
 *   with the platform's price table, src/broker/prices.ts, when the call was made), by `created_at`;
 * - tasks, task-seconds: `tasks` that ended that day, by `finished_at`; seconds from dispatch (or creation,
 *   when never dispatched) to the end, time parked for an approval included;
 * - gateway hours awake: `instance_events`: time each instance spent in status `running`, from the event
 *   that entered it to the next event (or now), cut at the day's bounds. Events are deleted with their
 *   instance, so a destroyed instance's hours disappear from later exports;
 * - artifact bytes: `lane_artifacts` written that day; backup bytes: `instance_backups` taken that day.
 */
export interface DailyUsage {
  tenantId: string;
  tenantSlug: string;
  /** The UTC day, YYYY-MM-DD. */
  day: string;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
  modelCalls: number;
  tasks: number;
  taskSeconds: number;
  gatewayHours: number;
  artifactBytes: number;
  backupBytes: number;
}

export const USAGE_COLUMNS = [
  'tenantId',
  'tenantSlug',
  'day',
  'inputTokens',
  'outputTokens',
  'costUsd',
  'modelCalls',
  'tasks',
  'taskSeconds',
  'gatewayHours',
  'artifactBytes',
  'backupBytes',
] as const satisfies readonly (keyof DailyUsage)[];

interface Row {
  tenant_id: string;
  slug: string;
  day: string;
  i: string;
  o: string;
  c: string;
  calls: string;
  tasks: string;
  ts: string;
  gs: string;
  ab: string;
  bb: string;
}

/**
 * Daily usage from `from` to `to` (inclusive UTC days, YYYY-MM-DD). For one tenant every day is listed (zeros
 * included); for the whole platform only tenant-days with any usage, ordered by day then tenant slug.
 */
export async function dailyUsage(db: Db, q: { from: string; to: string; tenantId?: string }): Promise<DailyUsage[]> {
  // Day bounds as UTC instants, whatever the session's time zone (test/usage-day.test.ts).
  const r = await db.query<Row>(
    `WITH days AS (
       SELECT d::date AS day, (d::date::timestamp AT TIME ZONE 'UTC') AS lo, ((d::date + 1)::timestamp AT TIME ZONE 'UTC') AS hi
         FROM generate_series($1::date, $2::date, interval '1 day') AS d
     ), span AS (SELECT min(lo) AS lo, max(hi) AS hi FROM days),
     awake AS (
       SELECT e.tenant_id, e.created_at AS s, coalesce(lead(e.created_at) OVER w, now()) AS e, e.to_status
         FROM instance_events e
        WHERE ($3::uuid IS NULL OR e.tenant_id = $3)
       WINDOW w AS (PARTITION BY e.tenant_id, e.instance_id ORDER BY e.id)
     ),
     parts AS (
       SELECT u.tenant_id, (u.created_at AT TIME ZONE 'UTC')::date AS day, u.input_tokens::numeric AS i, u.output_tokens::numeric AS o, u.cost_usd AS c, 1 AS calls,
              0 AS tasks, 0::numeric AS ts, 0::numeric AS gs, 0::numeric AS ab, 0::numeric AS bb
         FROM llm_usage u, span WHERE u.created_at >= span.lo AND u.created_at < span.hi AND ($3::uuid IS NULL OR u.tenant_id = $3)
       UNION ALL
       SELECT t.tenant_id, (t.finished_at AT TIME ZONE 'UTC')::date, 0, 0, 0, 0, 1, extract(epoch FROM t.finished_at - coalesce(t.dispatched_at, t.created_at)), 0, 0, 0
         FROM tasks t, span WHERE t.finished_at >= span.lo AND t.finished_at < span.hi AND ($3::uuid IS NULL OR t.tenant_id = $3)
       UNION ALL
       SELECT a.tenant_id, d.day, 0, 0, 0, 0, 0, 0, extract(epoch FROM least(a.e, d.hi) - greatest(a.s, d.lo)), 0, 0
         FROM awake a JOIN days d ON a.s < d.hi AND a.e > d.lo WHERE a.to_status = 'running'
       UNION ALL
       SELECT x.tenant_id, (x.created_at AT TIME ZONE 'UTC')::date, 0, 0, 0, 0, 0, 0, 0, x.size_bytes, 0
         FROM lane_artifacts x, span WHERE x.created_at >= span.lo AND x.created_at < span.hi AND ($3::uuid IS NULL OR x.tenant_id = $3)
       UNION ALL
       SELECT b.tenant_id, (b.created_at AT TIME ZONE 'UTC')::date, 0, 0, 0, 0, 0, 0, 0, 0, b.size_bytes
         FROM instance_backups b, span WHERE b.created_at >= span.lo AND b.created_at < span.hi AND ($3::uuid IS NULL OR b.tenant_id = $3)
     ),
     grid AS (
       -- One tenant: every day of the range. The platform: only tenant-days that have usage.
       SELECT $3::uuid AS tenant_id, day FROM days WHERE $3::uuid IS NOT NULL
       UNION SELECT tenant_id, day FROM parts
     )
     SELECT g.tenant_id, tn.slug, to_char(g.day, 'YYYY-MM-DD') AS day,
            coalesce(sum(p.i), 0) AS i, coalesce(sum(p.o), 0) AS o, coalesce(sum(p.c), 0) AS c, coalesce(sum(p.calls), 0) AS calls,
            coalesce(sum(p.tasks), 0) AS tasks, coalesce(sum(p.ts), 0) AS ts, coalesce(sum(p.gs), 0) AS gs,
            coalesce(sum(p.ab), 0) AS ab, coalesce(sum(p.bb), 0) AS bb
       FROM grid g JOIN tenants tn ON tn.id = g.tenant_id
       LEFT JOIN parts p ON p.tenant_id = g.tenant_id AND p.day = g.day
      GROUP BY g.tenant_id, tn.slug, g.day
      ORDER BY g.day, tn.slug`,
    [q.from, q.to, q.tenantId ?? null],
  );
  return r.rows.map((x) => ({
    tenantId: x.tenant_id,
    tenantSlug: x.slug,
    day: x.day,
    inputTokens: Number(x.i),
    outputTokens: Number(x.o),
    costUsd: Number(x.c),
    modelCalls: Number(x.calls),
    tasks: Number(x.tasks),
    taskSeconds: Math.round(Number(x.ts) * 1000) / 1000,
    gatewayHours: Math.round((Number(x.gs) / 3600) * 1e6) / 1e6,
    artifactBytes: Number(x.ab),
    backupBytes: Number(x.bb),
  }));
}

/** RFC 4180 CSV with a header row; fields that need it are quoted (slugs and ids never do, but stay safe). */
export function usageCsv(rows: DailyUsage[]): string {
  const cell = (v: string | number) => {
    const s = String(v);
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [USAGE_COLUMNS.join(','), ...rows.map((r) => USAGE_COLUMNS.map((c) => cell(r[c])).join(','))].join('\r\n') + '\r\n';
}
