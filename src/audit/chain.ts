import { createHash } from 'node:crypto';

/** The fields of an audit row that its hash covers. */
export interface AuditFields {
  seq: number;
  ts: Date;
  actor: string;
  tenantId: string | null;
  action: string;
  target: string | null;
  decision: string | null;
  detail: Record<string, unknown>;
  requestId: string | null;
}

export const GENESIS_HASH = '0'.repeat(64);

/** JSON with object keys sorted at every depth: the same value always gives the same text. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const keys = Object.keys(value).sort();
  const parts: string[] = [];
  for (const k of keys) {
    const v = (value as Record<string, unknown>)[k];
    if (v === undefined) continue;
    parts.push(`${JSON.stringify(k)}:${canonicalJson(v)}`);
  }
  return `{${parts.join(',')}}`;
}

/**
 * sha256(prev_hash ‖ canonical row). Timestamps are rendered in UTC (ISO 8601), so verification does not
 * depend on the session time zone (a false alarm seen in the research: notes/security-and-sandbox.md A4).
 */
export function auditHash(prevHash: string, f: AuditFields): string {
  const canonical = canonicalJson({
    seq: f.seq,
    ts: f.ts.toISOString(),
    actor: f.actor,
    tenant_id: f.tenantId,
    action: f.action,
    target: f.target,
    decision: f.decision,
    detail: f.detail,
    request_id: f.requestId,
  });
  return createHash('sha256').update(prevHash).update('\n').update(canonical).digest('hex');
}
