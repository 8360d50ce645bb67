import type { Queryable } from '../db/pool.ts';

/**
 * Who this process is when it claims work (docs/adr/0009-replica-coordination.md, "One owner at a time"):
 * its replica id, the node its local sandboxes run on, and how long a claim lives unless renewed (the replica
 * expiry: a claim lapses when its owner would be declared dead).
 */
export interface ClaimIdentity {
  owner: string;
  node: string;
  ttlMs: number;
}

/**
 * The lease kinds in `work_claims`. An instance's lease covers its reconcile, idle reap and backup sweep;
 * `operator` makes one operator replica active at a time (docs/adr/0011-kubernetes.md).
 */
export type ClaimKind = 'instance' | 'tasks.housekeeping' | 'gateway.turn' | 'operator' | 'lanes.housekeeping';

/**
 * Leases in `work_claims` (kind, item) → owner until expires_at. Taking one is a single upsert that succeeds
 * when the item is free, already ours, or its lease lapsed; a live owner's lease is never taken. Owners renew
 * by claiming again; a dead owner's leases lapse after the TTL.
 */
export class WorkClaims {
  readonly #db: Queryable;
  readonly id: ClaimIdentity;

  constructor(db: Queryable, id: ClaimIdentity) {
    this.#db = db;
    this.id = id;
  }

  /** Takes or renews one lease; false while another live owner holds it. */
  async claim(kind: ClaimKind, item: string, ttlMs = this.id.ttlMs): Promise<boolean> {
    const r = await this.#db.query(
      `INSERT INTO work_claims AS c (kind, item, owner, expires_at) VALUES ($1, $2, $3, now() + make_interval(secs => $4::double precision / 1000))
       ON CONFLICT (kind, item) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
        WHERE c.owner = EXCLUDED.owner OR c.expires_at < now()
       RETURNING 1`,
      [kind, item, this.id.owner, ttlMs],
    );
    return r.rowCount === 1;
  }

  /** Gives one lease back (only if still ours). */
  async release(kind: ClaimKind, item: string): Promise<void> {
    await this.#db.query('DELETE FROM work_claims WHERE kind = $1 AND item = $2 AND owner = $3', [kind, item, this.id.owner]);
  }

  /** Gives back every lease of a kind this owner holds (a clean stop: peers take over at once). */
  async releaseAll(kind: ClaimKind): Promise<number> {
    const r = await this.#db.query('DELETE FROM work_claims WHERE kind = $1 AND owner = $2', [kind, this.id.owner]);
    return r.rowCount ?? 0;
  }

  /** Live leases of a kind held by other owners, by item. */
  async heldByOthers(kind: ClaimKind): Promise<Map<string, string>> {
    const r = await this.#db.query<{ item: string; owner: string }>(
      'SELECT item, owner FROM work_claims WHERE kind = $1 AND owner <> $2 AND expires_at > now()',
      [kind, this.id.owner],
    );
    return new Map(r.rows.map((x) => [x.item, x.owner]));
  }
}

/** A single-process identity (CLI commands and in-process tests that do not name a replica). */
export function soloIdentity(node: string): ClaimIdentity {
  return { owner: `solo-${process.pid}`, node, ttlMs: 30_000 };
}
