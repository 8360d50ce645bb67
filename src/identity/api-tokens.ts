import { appendAudit } from '../audit/log.ts';
import { containing, keysetPage, type Sorts } from '../db/keyset.ts';
import type { Db } from '../db/pool.ts';
import { EventChannel } from '../events/channel.ts';
import { createLogger } from '../observability/logger.ts';
import { ConflictError, NotFoundError } from '../errors.ts';
import type { Audited } from '../tenancy/tenants.ts';
import type { Principal, TenantRole } from './principal.ts';
import { API_TOKEN_PREFIX, newSecret, sha256, tokenDisplay } from './tokens.ts';

export interface ApiToken {
  id: string;
  tenantId: string;
  name: string;
  role: TenantRole;
  display: string;
  createdBy: string | null;
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
  lastUsedAt: string | null;
}

/** The orders a tenant's token list offers. */
export const TOKEN_SORTS = {
  createdAt: [
    { sql: 'a.created_at', type: 'timestamptz' },
    { sql: 'a.id', type: 'uuid' },
  ],
  name: [
    { sql: 'a.name', type: 'text' },
    { sql: 'a.id', type: 'uuid' },
  ],
} satisfies Sorts;

export const TOKEN_STATES = {
  active: 'a.revoked_at IS NULL AND (a.expires_at IS NULL OR a.expires_at > now())',
  revoked: 'a.revoked_at IS NOT NULL',
  expired: 'a.revoked_at IS NULL AND a.expires_at <= now()',
} as const;

interface Row {
  id: string;
  tenant_id: string;
  name: string;
  role: TenantRole;
  display: string;
  created_by: string | null;
  created_at: Date;
  expires_at: Date | null;
  revoked_at: Date | null;
  last_used_at: Date | null;
}

const iso = (d: Date | null) => (d ? d.toISOString() : null);
const toToken = (r: Row): ApiToken => ({
  id: r.id,
  tenantId: r.tenant_id,
  name: r.name,
  role: r.role,
  display: r.display,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  expiresAt: iso(r.expires_at),
  revokedAt: iso(r.revoked_at),
  lastUsedAt: iso(r.last_used_at),
});

/**
 * How long a resolved token is trusted without asking the database again (issue 7: a database round
 * trip on every chat turn was most of the ingress's added latency). A revocation anywhere (API, console,
 * `clawplane token revoke`, another replica) reaches every replica through the event channel at once;
 * while the channel is down nothing is cached. Expiry is honoured exactly.
 */
export const TOKEN_CACHE_TTL_MS = 5_000;

type TokenPrincipal = Extract<Principal, { kind: 'token' }>;

/** Tenant-scoped API tokens: shown once, stored as SHA-256, with expiry, revocation and last use (issue 3). */
export class ApiTokenService {
  private readonly db: Db;
  /** Token hash → principal and until when it may be served from memory. */
  private readonly cache = new Map<string, { principal: TokenPrincipal; until: number }>();
  /** Bumped by every revocation: a lookup that raced one does not cache what it read. */
  private generation = 0;
  private readonly events: EventChannel;

  /** Without `events`, revocations are seen by this process only. */
  constructor(db: Db, events: EventChannel = EventChannel.local(createLogger('silent'))) {
    this.db = db;
    this.events = events;
    events.on('api_token.revoked', ({ tokenId }) => this.forget(tokenId));
    events.onReset(() => {
      this.generation++;
      this.cache.clear();
    });
  }

  async create(
    tenantId: string,
    input: { name: string; role: TenantRole; expiresAt?: Date | undefined; createdBy: string | null },
    by: Audited,
  ): Promise<{ token: string; info: ApiToken }> {
    const token = newSecret(API_TOKEN_PREFIX);
    const info = await this.db.tx(async (tx) => {
      const r = await tx.query<Row>(
        `INSERT INTO api_tokens (tenant_id, name, role, token_hash, display, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
        [tenantId, input.name, input.role, sha256(token), tokenDisplay(token), input.createdBy, input.expiresAt ?? null],
      );
      const t = toToken(r.rows[0] as Row);
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'token.create',
        target: `token:${t.id}`,
        decision: 'success',
        detail: { name: t.name, role: t.role, expiresAt: t.expiresAt },
        requestId: by.requestId ?? null,
      });
      return t;
    });
    return { token, info };
  }

  /** One page of a tenant's tokens, searched by name and filtered by state (active, revoked, expired). */
  async page(
    tenantId: string,
    p: { limit: number; cursor?: string | undefined; sort: string; q?: string | undefined; status?: 'active' | 'revoked' | 'expired' | undefined },
  ): Promise<{ items: ApiToken[]; nextCursor: string | null }> {
    const where = ['a.tenant_id = $1'];
    const vals: unknown[] = [tenantId];
    if (p.status !== undefined) where.push(TOKEN_STATES[p.status]);
    if (p.q !== undefined) {
      vals.push(containing(p.q));
      where.push(`a.name ILIKE $${vals.length}`);
    }
    return keysetPage(this.db, { ...p, sorts: TOKEN_SORTS, from: 'api_tokens a', select: 'a.*', where, vals, map: (x) => toToken(x as unknown as Row) });
  }

  async get(tenantId: string, id: string): Promise<ApiToken> {
    const r = await this.db.query<Row>('SELECT * FROM api_tokens WHERE tenant_id = $1 AND id::text = $2', [tenantId, id]);
    if (!r.rows[0]) throw new NotFoundError('Token');
    return toToken(r.rows[0]);
  }

  async revoke(tenantId: string, id: string, by: Audited): Promise<ApiToken> {
    const revoked = await this.db.tx(async (tx) => {
      const cur = await tx.query<Row>('SELECT * FROM api_tokens WHERE tenant_id = $1 AND id::text = $2 FOR UPDATE', [tenantId, id]);
      if (!cur.rows[0]) throw new NotFoundError('Token');
      if (cur.rows[0].revoked_at) throw new ConflictError('This token is already revoked.', 'already_revoked');
      const r = await tx.query<Row>('UPDATE api_tokens SET revoked_at = now() WHERE id = $1 RETURNING *', [cur.rows[0].id]);
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'token.revoke',
        target: `token:${cur.rows[0].id}`,
        decision: 'success',
        requestId: by.requestId ?? null,
      });
      // Delivered here after the commit: a request resolving the token in between would cache it again.
      await this.events.publish(tx, 'api_token.revoked', { tokenId: cur.rows[0].id });
      return toToken(r.rows[0] as Row);
    });
    return revoked;
  }

  /** The principal for a presented token; undefined when unknown, revoked or expired. */
  async resolve(token: string): Promise<TokenPrincipal | undefined> {
    if (!token.startsWith(API_TOKEN_PREFIX)) return undefined;
    const hash = sha256(token);
    const now = Date.now();
    const live = this.events.live;
    const hit = live ? this.cache.get(hash) : undefined;
    if (hit && hit.until > now) return hit.principal;
    this.cache.delete(hash);
    const gen = this.generation;
    const r = await this.db.query<Row>('SELECT * FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())', [
      hash,
    ]);
    const row = r.rows[0];
    if (!row) return undefined;
    // last_used_at stays within a minute plus the cache time of the truth.
    if (!row.last_used_at || Date.now() - row.last_used_at.getTime() > 60_000) {
      await this.db.query('UPDATE api_tokens SET last_used_at = now() WHERE id = $1', [row.id]);
    }
    const principal: TokenPrincipal = { kind: 'token', tokenId: row.id, tenantId: row.tenant_id, role: row.role, createdBy: row.created_by };
    // Unknown tokens are not cached (no memory for guessers); the sweep keeps the map to live tokens.
    if (!live || gen !== this.generation || !this.events.live) return principal;
    if (this.cache.size >= 10_000) this.sweep(now);
    this.cache.set(hash, { principal, until: Math.min(now + TOKEN_CACHE_TTL_MS, row.expires_at?.getTime() ?? Infinity) });
    return principal;
  }

  /** Drops a token from this process's cache of resolved tokens (a revocation anywhere). */
  forget(tokenId: string): void {
    this.generation++;
    for (const [hash, e] of this.cache) if (e.principal.tokenId === tokenId) this.cache.delete(hash);
  }

  private sweep(now: number): void {
    for (const [hash, e] of this.cache) if (e.until <= now) this.cache.delete(hash);
    if (this.cache.size >= 10_000) this.cache.clear();
  }
}
