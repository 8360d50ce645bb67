import type { Queryable } from '../db/pool.ts';

export interface AuditRow {
  seq: number;
  ts: string;
  actor: string;
  tenantId: string | null;
  action: string;
  target: string | null;
  decision: string | null;
  detail: Record<string, unknown>;
  requestId: string | null;
}

export interface AuditFilter {
  /** Only this tenant's events (tenant views); undefined = every event (platform view). */
  tenantId?: string | undefined;
  /** Action prefix, e.g. "auth." or "token.create". */
  action?: string | undefined;
  actor?: string | undefined;
  decision?: string | undefined;
  since?: Date | undefined;
  until?: Date | undefined;
  /** Cursor: events with seq below this (newest first). */
  before?: number | undefined;
  limit: number;
}

/** Audit events newest first, filtered; `nextBefore` pages on. */
export async function queryAudit(db: Queryable, f: AuditFilter): Promise<{ items: AuditRow[]; nextBefore: number | null }> {
  const where: string[] = [];
  const params: unknown[] = [];
  const add = (sql: string, v: unknown) => {
    params.push(v);
    where.push(sql.replace('?', `$${params.length}`));
  };
  if (f.tenantId !== undefined) add('tenant_id = ?', f.tenantId);
  if (f.action)
    add(
      "action LIKE ? || '%'",
      f.action.replace(/[\\%_]/g, (m) => `\\${m}`),
    );
  if (f.actor) add('actor = ?', f.actor);
  if (f.decision) add('decision = ?', f.decision);
  if (f.since) add('ts >= ?', f.since);
  if (f.until) add('ts < ?', f.until);
  if (f.before !== undefined) add('seq < ?', f.before);
  params.push(f.limit + 1);
  const r = await db.query<{
    seq: number;
    ts: Date;
    actor: string;
    tenant_id: string | null;
    action: string;
    target: string | null;
    decision: string | null;
    detail: Record<string, unknown>;
    request_id: string | null;
  }>(
    `SELECT seq, ts, actor, tenant_id::text AS tenant_id, action, target, decision, detail, request_id FROM audit_events
      ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq DESC LIMIT $${params.length}`,
    params,
  );
  const rows = r.rows.slice(0, f.limit);
  return {
    items: rows.map((x) => ({
      seq: x.seq,
      ts: x.ts.toISOString(),
      actor: x.actor,
      tenantId: x.tenant_id,
      action: x.action,
      target: x.target,
      decision: x.decision,
      detail: x.detail,
      requestId: x.request_id,
    })),
    nextBefore: r.rows.length > f.limit ? (rows.at(-1)?.seq ?? null) : null,
  };
}
