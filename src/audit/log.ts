import type { Queryable } from '../db/pool.ts';
import { auditHash, canonicalJson } from './chain.ts';

/** One thing that happened, as the caller describes it. Never put a credential value in `detail`. */
export interface AuditEvent {
  /** Who: `user:<id>`, `token:<id>`, `system`, `sandbox:<id>`, `cli`. */
  actor: string;
  tenantId?: string | null;
  /** What, as `noun.verb`: `tenant.create`, `auth.login`, `token.revoke`… */
  action: string;
  /** To what: an id or `kind:id`. */
  target?: string | null;
  /** allow | deny | success | failure, plus policy ids where a policy decided. */
  decision?: string | null;
  detail?: Record<string, unknown>;
  requestId?: string | null;
}

/**
 * Appends one event to the hash chain. Must run inside the transaction of the change it records
 * (pass the transaction's client), so the record and the change commit or roll back together.
 * Holding audit_head FOR UPDATE serialises appenders; the insert trigger re-checks the link.
 */
export async function appendAudit(tx: Queryable, e: AuditEvent): Promise<number> {
  const head = await tx.query<{ seq: number; hash: string }>('SELECT seq, hash FROM audit_head WHERE id FOR UPDATE');
  const prev = head.rows[0];
  if (!prev) throw new Error('audit_head row is missing: the audit migration did not run');
  // Round-trip through JSON so what we hash is exactly what jsonb stores and gives back.
  const detail = JSON.parse(canonicalJson(e.detail ?? {})) as Record<string, unknown>;
  const fields = {
    seq: prev.seq + 1,
    ts: new Date(),
    actor: e.actor,
    tenantId: e.tenantId ?? null,
    action: e.action,
    target: e.target ?? null,
    decision: e.decision ?? null,
    detail,
    requestId: e.requestId ?? null,
  };
  const hash = auditHash(prev.hash, fields);
  await tx.query(
    `INSERT INTO audit_events (seq, ts, actor, tenant_id, action, target, decision, detail, request_id, prev_hash, hash)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
    [
      fields.seq,
      fields.ts,
      fields.actor,
      fields.tenantId,
      fields.action,
      fields.target,
      fields.decision,
      JSON.stringify(detail),
      fields.requestId,
      prev.hash,
      hash,
    ],
  );
  return fields.seq;
}
