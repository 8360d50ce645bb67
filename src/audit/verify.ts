import type { Queryable } from '../db/pool.ts';
import { auditHash, GENESIS_HASH } from './chain.ts';

export interface VerifyResult {
  ok: boolean;
  /** Rows checked. */
  checked: number;
  /** The first row that does not verify, and why. */
  firstBad?: { seq: number; reason: string };
}

interface Row {
  seq: number;
  ts: Date;
  actor: string;
  tenant_id: string | null;
  action: string;
  target: string | null;
  decision: string | null;
  detail: Record<string, unknown>;
  request_id: string | null;
  prev_hash: string;
  hash: string;
}

/**
 * Replays the whole chain in pages: each row's hash must match its content, each prev_hash the row
 * before, sequence numbers must have no gaps, and the head must point at the last row (issue 2).
 */
export async function verifyAuditChain(db: Queryable, pageSize = 1000): Promise<VerifyResult> {
  let prevHash = GENESIS_HASH;
  let expectSeq = 1;
  let checked = 0;
  for (;;) {
    const page = await db.query<Row>(
      `SELECT seq, ts, actor, tenant_id::text AS tenant_id, action, target, decision, detail, request_id, prev_hash, hash
         FROM audit_events WHERE seq >= $1 ORDER BY seq LIMIT $2`,
      [expectSeq, pageSize],
    );
    for (const r of page.rows) {
      if (r.seq !== expectSeq) return { ok: false, checked, firstBad: { seq: expectSeq, reason: `row ${expectSeq} is missing` } };
      if (r.prev_hash !== prevHash) {
        return { ok: false, checked, firstBad: { seq: r.seq, reason: 'prev_hash does not match the previous row' } };
      }
      const want = auditHash(prevHash, {
        seq: r.seq,
        ts: r.ts,
        actor: r.actor,
        tenantId: r.tenant_id,
        action: r.action,
        target: r.target,
        decision: r.decision,
        detail: r.detail,
        requestId: r.request_id,
      });
      if (want !== r.hash) return { ok: false, checked, firstBad: { seq: r.seq, reason: 'content does not match its hash (row was edited)' } };
      prevHash = r.hash;
      expectSeq += 1;
      checked += 1;
    }
    if (page.rows.length < pageSize) break;
  }
  const head = await db.query<{ seq: number; hash: string }>('SELECT seq, hash FROM audit_head WHERE id');
  const h = head.rows[0];
  if (!h || h.seq !== expectSeq - 1 || h.hash !== prevHash) {
    return {
      ok: false,
      checked,
      firstBad: { seq: expectSeq, reason: 'audit_head does not point at the last row (rows were removed or appended outside the chain)' },
    };
  }
  return { ok: true, checked };
}
