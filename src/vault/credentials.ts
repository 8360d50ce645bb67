import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { appendAudit } from '../audit/log.ts';
import { containing, keysetPage, type Sorts } from '../db/keyset.ts';
import { EventChannel } from '../events/channel.ts';
import { createLogger } from '../observability/logger.ts';
import type { Db, Queryable } from '../db/pool.ts';
import { ClawplaneError, ConflictError, NotFoundError, ValidationError } from '../errors.ts';
import { DecryptionError } from './envelope.ts';
import { createSkillRegistry, type SkillRegistry } from './skills.ts';
import type { SealedCredential, Vault } from './vault.ts';

export const CREDENTIAL_TYPES = ['api_key', 'oauth_token', 'bot_token', 'pat', 'secret'] as const;
export type CredentialType = (typeof CREDENTIAL_TYPES)[number];
export type CredentialStatus = 'active' | 'expired' | 'revoked';

/** What anyone but the broker sees of a credential: metadata, status and at most the last 4 characters. */
export interface CredentialInfo {
  id: string;
  tenantId: string;
  name: string;
  type: CredentialType;
  skill: string | null;
  status: CredentialStatus;
  /** Non-secret settings stored with it (GitHub scopes, WhatsApp phone number id). */
  metadata: Record<string, unknown>;
  /** The last 4 characters, or '' when the value is shorter than 12 (a hint would reveal too much). */
  last4: string;
  version: number;
  expiresAt: Date | null;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
  createdBy: string | null;
  createdAt: Date;
  updatedAt: Date;
}

/** A decrypted credential, for one broker request. Never log it, return it, or pass it to a sandbox. */
export interface BrokerCredential {
  id: string;
  name: string;
  type: CredentialType;
  skill: string | null;
  metadata: Record<string, unknown>;
  value: string;
}

/** Who acts: `actor` as in the audit log (`user:<id>`, `token:<id>`), plus the user id when it is one. */
export interface ActorContext {
  actor: string;
  userId?: string | null;
  requestId?: string | null;
}

/** How far ahead the console (and the doctor lane) warns that a credential is about to expire. */
export const EXPIRES_SOON_DAYS = 14;

/** The credential exists but may not be used: revoked or past its expiry. */
export class CredentialUnavailableError extends ClawplaneError {
  constructor(name: string, status: 'revoked' | 'expired') {
    super(
      status === 'revoked' ? 'credential_revoked' : 'credential_expired',
      409,
      `The credential "${name}" is ${status} and cannot be used. Ask a tenant admin to add a new credential and point the provider or skill at it.`,
      { details: { status } },
    );
  }
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_VALUE = 16_384;
const HINT_MIN_LENGTH = 12;

const metadataSchema = z.record(z.string().max(40), z.union([z.string().max(500), z.array(z.string().max(200)).max(100)]));

/** Input for `create`. Strict: unknown keys (tenantId, status…) are refused, not ignored. */
export const createCredentialInput = z.strictObject({
  name: z.string().regex(NAME, 'must be 1-100 of letters, digits, "_", ".", ":" or "-", starting with a letter or digit'),
  type: z.enum(CREDENTIAL_TYPES),
  value: z.string().min(1, 'is required').max(MAX_VALUE, `must be at most ${MAX_VALUE} characters`),
  skill: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]{0,49}$/, 'must be a skill id such as slack')
    .optional(),
  // timestamptz holds years 1-294276; a Date can go to ±275760 (e.g. -8.64e15 ms): refused here, not by PostgreSQL.
  expiresAt: z.coerce
    .date()
    .min(new Date('0001-01-01T00:00:00Z'), 'must be in the years 0001-9999')
    .max(new Date('9999-12-31T23:59:59Z'), 'must be in the years 0001-9999')
    .optional(),
  metadata: metadataSchema.optional(),
});
export type CreateCredentialInput = z.input<typeof createCredentialInput>;

interface Row {
  id: string;
  tenant_id: string;
  name: string;
  type: CredentialType;
  skill: string | null;
  status: CredentialStatus;
  metadata: Record<string, unknown>;
  last4: string;
  version: number;
  expires_at: Date | null;
  last_used_at: Date | null;
  revoked_at: Date | null;
  created_by: string | null;
  created_at: Date;
  updated_at: Date;
}
interface Pending {
  id: string;
  c: z.output<typeof createCredentialInput>;
  sealed: SealedCredential;
  last4: string;
}
interface SecretRow extends Row {
  ciphertext: Buffer;
  iv: Buffer;
  tag: Buffer;
  aad_version: number;
}

// Never `SELECT *` into a CredentialInfo: the ciphertext columns stay out of every listing query.
/** The orders a tenant's credential list offers. */
export const CREDENTIAL_SORTS = {
  createdAt: [
    { sql: 'c.created_at', type: 'timestamptz' },
    { sql: 'c.id', type: 'uuid' },
  ],
  name: [
    { sql: 'c.name', type: 'text' },
    { sql: 'c.id', type: 'uuid' },
  ],
} satisfies Sorts;

const INFO_COLUMNS =
  'id, tenant_id, name, type, skill, status, metadata, last4, version, expires_at, last_used_at, revoked_at, created_by, created_at, updated_at';

function last4(value: string): string {
  const chars = [...value];
  return chars.length >= HINT_MIN_LENGTH ? chars.slice(-4).join('') : '';
}

function parse<T>(schema: z.ZodType<T>, input: unknown, what: string): T {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  // zod's messages name the field and the rule, not the value, so a rejected secret is not echoed.
  const issues = r.error.issues.map((i) => ({ path: i.path.map(String).join('.') || '(input)', message: i.message }));
  throw new ValidationError(`The ${what} is invalid: ${issues.map((i) => `${i.path} ${i.message}`).join('; ')}.`, issues);
}

/**
 * Credentials of each tenant (issue 4). Values are write-only: every method returns CredentialInfo,
 * except `decryptForBroker`, the one path to plaintext. Every query filters by tenant id.
 */
export class CredentialService {
  readonly #db: Db;
  readonly #vault: Vault;
  readonly #skills: SkillRegistry;
  readonly #now: () => Date;
  readonly #events: EventChannel;

  /** `events` carries `credential.changed` to every replica's broker key cache (none: this process only). */
  constructor(opts: { db: Db; vault: Vault; events?: EventChannel; skills?: SkillRegistry; now?: () => Date }) {
    this.#db = opts.db;
    this.#events = opts.events ?? EventChannel.local(createLogger('silent'));
    this.#vault = opts.vault;
    this.#skills = opts.skills ?? createSkillRegistry();
    this.#now = opts.now ?? (() => new Date());
  }

  #info(r: Row): CredentialInfo {
    const expired = r.status === 'active' && r.expires_at !== null && r.expires_at.getTime() <= this.#now().getTime();
    return {
      id: r.id,
      tenantId: r.tenant_id,
      name: r.name,
      type: r.type,
      skill: r.skill,
      status: expired ? 'expired' : r.status,
      metadata: r.metadata,
      last4: r.last4,
      version: r.version,
      expiresAt: r.expires_at,
      lastUsedAt: r.last_used_at,
      revokedAt: r.revoked_at,
      createdBy: r.created_by,
      createdAt: r.created_at,
      updatedAt: r.updated_at,
    };
  }

  /** Stores a new credential. The value is sealed before it reaches SQL; the audit record has no value. */
  async create(tenantId: string, input: unknown, ctx: ActorContext): Promise<CredentialInfo> {
    const c = parse(createCredentialInput, input, 'credential');
    const pending = await this.#seal(tenantId, c);
    return this.#db.tx((q) => this.#insert(q, tenantId, pending, ctx));
  }

  async #seal(tenantId: string, c: z.output<typeof createCredentialInput>): Promise<Pending> {
    if (!UUID.test(tenantId)) throw new NotFoundError('Tenant');
    const id = randomUUID();
    return { id, c, sealed: await this.#vault.sealCredential(tenantId, id, 1, c.value), last4: last4(c.value) };
  }

  async #insert(q: Queryable, tenantId: string, p: Pending, ctx: ActorContext): Promise<CredentialInfo> {
    const { id, c, sealed } = p;
    let row: Row | undefined;
    try {
      const r = await q.query<Row>(
        `INSERT INTO credentials (id, tenant_id, name, type, skill, metadata, expires_at, created_by, version, ciphertext, iv, tag, aad_version, last4)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, $11, $12, $13) RETURNING ${INFO_COLUMNS}`,
        [
          id,
          tenantId,
          c.name,
          c.type,
          c.skill ?? null,
          JSON.stringify(c.metadata ?? {}),
          c.expiresAt ?? null,
          ctx.userId ?? null,
          sealed.ciphertext,
          sealed.iv,
          sealed.tag,
          sealed.aadVersion,
          p.last4,
        ],
      );
      row = r.rows[0];
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === '23505') {
        throw new ConflictError(
          `A credential named "${c.name}" already exists in this tenant. Choose another name, or revoke the old one first.`,
          'credential_name_taken',
        );
      }
      if (code === '23503') throw new NotFoundError('Tenant');
      throw err;
    }
    if (!row) throw new Error('INSERT … RETURNING gave no row');
    await appendAudit(q, {
      actor: ctx.actor,
      tenantId,
      action: 'credential.create',
      target: `credential:${id}`,
      decision: 'success',
      requestId: ctx.requestId ?? null,
      detail: { name: c.name, type: c.type, skill: c.skill ?? null, expiresAt: c.expiresAt?.toISOString() ?? null },
    });
    return this.#info(row);
  }

  /**
   * Connects a skill: validates the form against the skill registry, then stores one credential per
   * secret field, named `<prefix>.<field>` (prefix defaults to the skill id), with the non-secret
   * fields as metadata on each. One transaction: a failure stores none of them.
   */
  async createForSkill(
    tenantId: string,
    skill: string,
    input: unknown,
    ctx: ActorContext,
    opts: { prefix?: string; expiresAt?: Date } = {},
  ): Promise<CredentialInfo[]> {
    const parsed = this.#skills.parse(skill, input);
    const prefix = opts.prefix ?? skill;
    const pending: Pending[] = [];
    for (const s of parsed.secrets) {
      const c = parse(
        createCredentialInput,
        {
          name: `${prefix}.${s.field}`,
          type: s.credentialType,
          value: s.value,
          skill,
          metadata: parsed.settings,
          expiresAt: opts.expiresAt,
        },
        'skill credential',
      );
      pending.push(await this.#seal(tenantId, c));
    }
    return this.#db.tx(async (q) => {
      const out: CredentialInfo[] = [];
      for (const p of pending) out.push(await this.#insert(q, tenantId, p, ctx));
      return out;
    });
  }

  async list(tenantId: string, filter: { skill?: string; includeRevoked?: boolean } = {}): Promise<CredentialInfo[]> {
    if (!UUID.test(tenantId)) return [];
    const r = await this.#db.query<Row>(
      `SELECT ${INFO_COLUMNS} FROM credentials
        WHERE tenant_id = $1 AND ($2::text IS NULL OR skill = $2) AND ($3 OR status <> 'revoked')
        ORDER BY created_at, name, id`,
      [tenantId, filter.skill ?? null, filter.includeRevoked ?? false],
    );
    return r.rows.map((row) => this.#info(row));
  }

  /** One page of a tenant's credentials (metadata only), searched by name, filtered by skill and status. */
  async page(
    tenantId: string,
    p: {
      limit: number;
      cursor?: string | undefined;
      sort: string;
      q?: string | undefined;
      skill?: string | undefined;
      status?: CredentialStatus | undefined;
      includeRevoked?: boolean;
    },
  ): Promise<{ items: CredentialInfo[]; nextCursor: string | null }> {
    const where = ['c.tenant_id = $1'];
    const vals: unknown[] = [tenantId];
    const add = (sql: string, v: unknown) => {
      vals.push(v);
      where.push(sql.replaceAll('?', `$${vals.length}`));
    };
    if (p.skill !== undefined) add('c.skill = ?', p.skill);
    if (p.status !== undefined) add('c.status = ?', p.status);
    else if (!p.includeRevoked) where.push(`c.status <> 'revoked'`);
    if (p.q !== undefined) add('c.name ILIKE ?', containing(p.q));
    return keysetPage(this.#db, {
      ...p,
      sorts: CREDENTIAL_SORTS,
      from: 'credentials c',
      select: INFO_COLUMNS,
      where,
      vals,
      map: (row) => this.#info(row as unknown as Row),
    });
  }

  /** One credential of this tenant; NotFoundError for an unknown id or another tenant's. */
  async get(tenantId: string, id: string): Promise<CredentialInfo> {
    return this.#info(await this.#row(this.#db, tenantId, id));
  }

  async #row(q: Queryable, tenantId: string, id: string, lock = false): Promise<Row> {
    if (!UUID.test(tenantId) || !UUID.test(id)) throw new NotFoundError('Credential');
    const r = await q.query<Row>(`SELECT ${INFO_COLUMNS} FROM credentials WHERE tenant_id = $1 AND id = $2${lock ? ' FOR UPDATE' : ''}`, [tenantId, id]);
    const row = r.rows[0];
    if (!row) throw new NotFoundError('Credential');
    return row;
  }

  /** Revokes a credential; the next `decryptForBroker` refuses it, and every replica's broker key cache is told at once. */
  async revoke(tenantId: string, id: string, ctx: ActorContext): Promise<CredentialInfo> {
    return this.#revoke(tenantId, id, ctx);
  }

  async #revoke(tenantId: string, id: string, ctx: ActorContext): Promise<CredentialInfo> {
    return this.#db.tx(async (q) => {
      const row = await this.#row(q, tenantId, id, true);
      if (row.status === 'revoked') return this.#info(row);
      const r = await q.query<Row>(
        `UPDATE credentials SET status = 'revoked', revoked_at = now(), updated_at = now() WHERE tenant_id = $1 AND id = $2 RETURNING ${INFO_COLUMNS}`,
        [tenantId, id],
      );
      await appendAudit(q, {
        actor: ctx.actor,
        tenantId,
        action: 'credential.revoke',
        target: `credential:${id}`,
        decision: 'success',
        requestId: ctx.requestId ?? null,
        detail: { name: row.name },
      });
      await this.#events.publish(q, 'credential.changed', { credentialId: id });
      const updated = r.rows[0];
      if (!updated) throw new NotFoundError('Credential');
      return this.#info(updated);
    });
  }

  /** Replaces the value of an active credential; its version goes up, so the old ciphertext no longer opens. */
  async replaceValue(tenantId: string, id: string, value: unknown, ctx: ActorContext): Promise<CredentialInfo> {
    const v = parse(createCredentialInput.shape.value, value, 'credential value');
    const current = await this.get(tenantId, id);
    if (current.status !== 'active') throw new CredentialUnavailableError(current.name, current.status);
    const version = current.version + 1;
    const sealed = await this.#vault.sealCredential(tenantId, id, version, v);
    const info = await this.#db.tx(async (q) => {
      const r = await q.query<Row>(
        `UPDATE credentials SET version = $3, ciphertext = $4, iv = $5, tag = $6, aad_version = $7, last4 = $8, updated_at = now()
          WHERE tenant_id = $1 AND id = $2 AND version = $3 - 1 AND status = 'active' RETURNING ${INFO_COLUMNS}`,
        [tenantId, id, version, sealed.ciphertext, sealed.iv, sealed.tag, sealed.aadVersion, last4(v)],
      );
      const row = r.rows[0];
      if (!row) throw new ConflictError(`The credential "${current.name}" changed while it was being updated. Reload it and try again.`);
      await appendAudit(q, {
        actor: ctx.actor,
        tenantId,
        action: 'credential.update',
        target: `credential:${id}`,
        decision: 'success',
        requestId: ctx.requestId ?? null,
        detail: { name: row.name, version },
      });
      await this.#events.publish(q, 'credential.changed', { credentialId: id });
      return this.#info(row);
    });
    return info;
  }

  /**
   * THE ONLY WAY TO PLAINTEXT. Only the broker may call this, for one outbound request of this tenant
   * (and "test connection", which goes through the same egress path). Refuses revoked and expired
   * credentials, answers NotFoundError for another tenant's id, records last use, and audits every
   * attempt as `credential.decrypt` with the actor and purpose, in the same transaction as the read.
   */
  async decryptForBroker(
    tenantId: string,
    credentialId: string,
    use: { actor: string; purpose: string; requestId?: string | null },
  ): Promise<BrokerCredential> {
    const audit = (q: Queryable, decision: string, detail: Record<string, unknown>) =>
      appendAudit(q, {
        actor: use.actor,
        tenantId: UUID.test(tenantId) ? tenantId : null,
        action: 'credential.decrypt',
        target: `credential:${credentialId}`,
        decision,
        requestId: use.requestId ?? null,
        detail: { purpose: use.purpose, ...detail },
      });
    // Refusals are audited and committed, then thrown: a denied attempt must leave a record.
    const outcome = await this.#db.tx(async (q): Promise<BrokerCredential | ClawplaneError> => {
      let row: SecretRow | undefined;
      if (UUID.test(tenantId) && UUID.test(credentialId)) {
        const r = await q.query<SecretRow>(`SELECT ${INFO_COLUMNS}, ciphertext, iv, tag, aad_version FROM credentials WHERE tenant_id = $1 AND id = $2`, [
          tenantId,
          credentialId,
        ]);
        row = r.rows[0];
      }
      if (!row) {
        await audit(q, 'deny', { reason: 'not_found' });
        return new NotFoundError('Credential');
      }
      const status = this.#info(row).status;
      if (status !== 'active') {
        if (status === 'expired' && row.status === 'active') {
          await q.query(`UPDATE credentials SET status = 'expired', updated_at = now() WHERE tenant_id = $1 AND id = $2`, [tenantId, credentialId]);
        }
        await audit(q, 'deny', { reason: status, name: row.name });
        return new CredentialUnavailableError(row.name, status);
      }
      let value: string;
      try {
        value = await this.#vault.openCredential(tenantId, credentialId, row.version, {
          ciphertext: row.ciphertext,
          iv: row.iv,
          tag: row.tag,
          aadVersion: row.aad_version,
        });
      } catch (err) {
        if (!(err instanceof DecryptionError)) throw err;
        await audit(q, 'failure', { reason: 'decrypt_failed', name: row.name });
        return err;
      }
      await q.query('UPDATE credentials SET last_used_at = now() WHERE tenant_id = $1 AND id = $2', [tenantId, credentialId]);
      await audit(q, 'allow', { name: row.name, type: row.type, version: row.version });
      return { id: row.id, name: row.name, type: row.type, skill: row.skill, metadata: row.metadata, value };
    });
    if (outcome instanceof ClawplaneError) throw outcome;
    return outcome;
  }
}
