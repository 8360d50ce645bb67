import type { Db } from '../db/pool.ts';
import type { EventChannel } from '../events/channel.ts';
import { newSecret, sha256 } from '../identity/tokens.ts';

/** Who is calling the broker: one sandbox start of one tenant's instance (issue 5, item 1). */
export interface SandboxIdentity {
  /** Id of the sandbox start (the token row). */
  id: string;
  tenantId: string;
  instanceId: string;
  sandboxId: string;
}

export const SANDBOX_TOKEN_PREFIX = 'cpb_';
const CACHE_MS = 5_000;

/**
 * Broker tokens: 256-bit, stored as SHA-256, bound to (tenant, instance, sandbox start), revoked when
 * the sandbox stops and expiring after a TTL in any case. Lookups are cached for a few seconds to keep
 * the model-call path off the database; a revocation by any replica clears every replica's cache at once
 * (`broker_token.revoked`), and nothing is cached while the event channel is down.
 */
export class SandboxTokens {
  private readonly db: Db;
  private readonly events: EventChannel;
  private readonly cache = new Map<string, { identity: SandboxIdentity; expiresAt: number; checkedAt: number }>();
  private epoch = 0;

  constructor(db: Db, events: EventChannel) {
    this.db = db;
    this.events = events;
    events.on('broker_token.revoked', ({ id }) => this.forget(id));
    events.onReset(() => {
      this.epoch++;
      this.cache.clear();
    });
  }

  private forget(id: string): void {
    this.epoch++;
    for (const [k, v] of this.cache) if (v.identity.id === id) this.cache.delete(k);
  }

  async issue(input: { tenantId: string; instanceId: string; sandboxId: string; ttlMs: number }): Promise<{ identity: SandboxIdentity; token: string }> {
    const token = newSecret(SANDBOX_TOKEN_PREFIX);
    const r = await this.db.query<{ id: string }>(
      `INSERT INTO sandbox_tokens (tenant_id, instance_id, sandbox_id, token_hash, expires_at)
       VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING id`,
      [input.tenantId, input.instanceId, input.sandboxId, sha256(token), input.ttlMs / 1000],
    );
    const id = (r.rows[0] as { id: string }).id;
    return { identity: { id, tenantId: input.tenantId, instanceId: input.instanceId, sandboxId: input.sandboxId }, token };
  }

  async resolve(token: string): Promise<SandboxIdentity | undefined> {
    if (!token.startsWith(SANDBOX_TOKEN_PREFIX)) return undefined;
    const hash = sha256(token);
    const now = Date.now();
    const live = this.events.live;
    const epoch = this.epoch;
    const hit = live ? this.cache.get(hash) : undefined;
    if (hit && now - hit.checkedAt < CACHE_MS && hit.expiresAt > now) return hit.identity;
    const r = await this.db.query<{ id: string; tenant_id: string; instance_id: string; sandbox_id: string; expires_at: Date }>(
      `SELECT id, tenant_id, instance_id, sandbox_id, expires_at FROM sandbox_tokens
        WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now()`,
      [hash],
    );
    const row = r.rows[0];
    if (!row) {
      this.cache.delete(hash);
      return undefined;
    }
    const identity = { id: row.id, tenantId: row.tenant_id, instanceId: row.instance_id, sandboxId: row.sandbox_id };
    if (live && epoch === this.epoch && this.events.live) {
      if (this.cache.size >= 10_000) this.cache.clear();
      this.cache.set(hash, { identity, expiresAt: row.expires_at.getTime(), checkedAt: now });
    }
    return identity;
  }

  /** The live sandbox start with this id (for per-sandbox sockets, which identify their sandbox). */
  async byId(id: string): Promise<SandboxIdentity | undefined> {
    const r = await this.db.query<{ id: string; tenant_id: string; instance_id: string; sandbox_id: string }>(
      'SELECT id, tenant_id, instance_id, sandbox_id FROM sandbox_tokens WHERE id = $1 AND revoked_at IS NULL AND expires_at > now()',
      [id],
    );
    const row = r.rows[0];
    return row ? { id: row.id, tenantId: row.tenant_id, instanceId: row.instance_id, sandboxId: row.sandbox_id } : undefined;
  }

  /**
   * Revokes every live token of a sandbox but `exceptId` (a rotation: the token the pod held before, whoever
   * registered it), or all of them (a stop by a replica that did not register it).
   */
  async revokeOthers(sandboxId: string, exceptId: string | null): Promise<void> {
    await this.db.tx(async (tx) => {
      const r = await tx.query<{ id: string }>(
        'UPDATE sandbox_tokens SET revoked_at = now() WHERE sandbox_id = $1 AND ($2::uuid IS NULL OR id <> $2) AND revoked_at IS NULL RETURNING id',
        [sandboxId, exceptId],
      );
      for (const row of r.rows) await this.events.publish(tx, 'broker_token.revoked', { id: row.id });
    });
  }

  async revoke(id: string): Promise<void> {
    await this.db.tx(async (tx) => {
      await tx.query('UPDATE sandbox_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL', [id]);
      await this.events.publish(tx, 'broker_token.revoked', { id });
    });
  }
}
