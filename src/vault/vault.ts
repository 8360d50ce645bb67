import { appendAudit } from '../audit/log.ts';
import type { Db, Queryable } from '../db/pool.ts';
import { ClawplaneError, NotFoundError, ValidationError } from '../errors.ts';
import { AAD_VERSION, credentialAad, newDataKey, open, platformKeyAad, platformSecretAad, seal, tenantKeyAad, type Sealed } from './envelope.ts';
import type { KeyProvider, WrappedKey } from './types.ts';

/** A credential value as stored: ciphertext plus the AAD layout it was sealed with. */
export interface SealedCredential extends Sealed {
  aadVersion: number;
}

export interface RotationReport {
  keyId: string;
  /** The master key version everything is now wrapped under. */
  version: number;
  tenantKeys: number;
  platformSecrets: number;
  /** Rows that could not be unwrapped (tampered or from another secret); left as they were. */
  failed: string[];
}

export interface VaultStatus {
  keyId: string;
  currentVersion: number;
  /** Per version: how many keys still depend on it. A version at zero may be retired in a KMS. */
  versions: { version: number; current: boolean; tenantKeys: number; platformSecrets: number }[];
}

interface WrappedRow {
  kek_id: string;
  kek_version: number;
  wrapped_dek: Buffer;
  iv: Buffer;
  tag: Buffer;
}

const PLATFORM_SECRET_NAME = /^[a-z0-9][a-z0-9_.-]{0,99}$/;
const REWRAP_BATCH = 100;

function toWrapped(r: WrappedRow): WrappedKey {
  return { keyId: r.kek_id, version: r.kek_version, ciphertext: r.wrapped_dek, iv: r.iv, tag: r.tag };
}

/**
 * Envelope encryption over the database (issue 4): one data key (DEK) per tenant, wrapped by the
 * KeyProvider's master key; credential values sealed under the DEK with AAD binding them to
 * (tenant, credential id, version). This class holds key material only; which credentials exist and
 * who may read them is `credentials.ts`, the only caller of `openCredential`.
 */
export class Vault {
  readonly #db: Db;
  readonly #keys: KeyProvider;
  readonly #ttlMs: number;
  // Unwrapped DEKs, briefly: a broker request should not cost a KMS round trip. Rotation re-wraps but
  // never changes a DEK, so a cached one stays correct across rotations.
  readonly #cache = new Map<string, { dek: Buffer; until: number }>();

  constructor(opts: { db: Db; keys: KeyProvider; cacheTtlMs?: number }) {
    this.#db = opts.db;
    this.#keys = opts.keys;
    this.#ttlMs = opts.cacheTtlMs ?? 60_000;
  }

  /** The tenant's data key, created and wrapped on first use. Throws NotFoundError for an unknown tenant. */
  async getOrCreateTenantKey(tenantId: string): Promise<Buffer> {
    const hit = this.#cache.get(tenantId);
    if (hit && hit.until > Date.now()) return hit.dek;
    const aad = tenantKeyAad(tenantId);
    let row = await this.#selectTenantKey(this.#db, tenantId);
    if (!row) {
      const dek = newDataKey();
      const w = await this.#keys.wrap(dek, aad);
      try {
        // Two processes may create the first key at once: the loser reads the winner's.
        await this.#db.query(
          `INSERT INTO tenant_data_keys (tenant_id, kek_id, kek_version, wrapped_dek, iv, tag)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id) DO NOTHING`,
          [tenantId, w.keyId, w.version, w.ciphertext, w.iv, w.tag],
        );
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === '23503' || code === '22P02') throw new NotFoundError('Tenant');
        throw err;
      }
      row = await this.#selectTenantKey(this.#db, tenantId);
      if (!row) throw new NotFoundError('Tenant');
    }
    const dek = await this.#keys.unwrap(toWrapped(row), aad);
    this.#cache.set(tenantId, { dek, until: Date.now() + this.#ttlMs });
    return dek;
  }

  async #selectTenantKey(q: Queryable, tenantId: string, lock = false): Promise<WrappedRow | undefined> {
    const r = await q.query<WrappedRow>(
      `SELECT kek_id, kek_version, wrapped_dek, iv, tag FROM tenant_data_keys WHERE tenant_id = $1${lock ? ' FOR UPDATE' : ''}`,
      [tenantId],
    );
    return r.rows[0];
  }

  async sealCredential(tenantId: string, credentialId: string, version: number, plaintext: string): Promise<SealedCredential> {
    const dek = await this.getOrCreateTenantKey(tenantId);
    return { ...seal(dek, Buffer.from(plaintext, 'utf8'), credentialAad(tenantId, credentialId, version)), aadVersion: AAD_VERSION };
  }

  /** Plaintext of a credential. Only `CredentialService.decryptForBroker` may call this. */
  async openCredential(tenantId: string, credentialId: string, version: number, sealed: SealedCredential): Promise<string> {
    if (sealed.aadVersion !== AAD_VERSION) {
      throw new ClawplaneError(
        'vault_unknown_format',
        500,
        `Credential ${credentialId} uses AAD layout ${sealed.aadVersion}, which this Clawplane version does not know. Upgrade Clawplane.`,
      );
    }
    const dek = await this.getOrCreateTenantKey(tenantId);
    return open(dek, sealed, credentialAad(tenantId, credentialId, version), 'Credential').toString('utf8');
  }

  /**
   * Makes a new master key version current and re-wraps every tenant data key and platform secret
   * under it, one row per transaction, while the vault stays in use: a reader sees either the old
   * wrapping or the new one, and both open because old versions keep working.
   */
  async rotate(opts: { actor?: string } = {}): Promise<RotationReport> {
    const from = await this.#keys.currentVersion();
    const version = await this.#keys.createVersion();
    await this.#db.tx((q) =>
      appendAudit(q, {
        actor: opts.actor ?? 'system',
        action: 'vault.rotate',
        target: `kek:${this.#keys.keyId}`,
        decision: 'success',
        detail: { from, to: version },
      }),
    );
    return this.rewrap();
  }

  /**
   * Re-wraps whatever is not yet under the current version. `rotate` calls it; run it again after a
   * crash mid-rotation, or after a key was created concurrently under the previous version.
   */
  async rewrap(): Promise<RotationReport> {
    const failed: string[] = [];
    let tenantKeys = 0;
    let platformSecrets = 0;
    for (;;) {
      const version = await this.#keys.currentVersion();
      const stale = await this.#db.query<{ tenant_id: string }>(
        `SELECT tenant_id FROM tenant_data_keys WHERE (kek_id <> $1 OR kek_version < $2) AND NOT (tenant_id::text = ANY($3::text[]))
         ORDER BY tenant_id LIMIT ${REWRAP_BATCH}`,
        [this.#keys.keyId, version, failed],
      );
      if (stale.rows.length === 0) break;
      for (const { tenant_id: tenantId } of stale.rows) {
        try {
          if (await this.#rewrapTenantKey(tenantId, version)) tenantKeys++;
        } catch (err) {
          if (!(err instanceof ClawplaneError)) throw err;
          failed.push(tenantId);
        }
      }
    }
    for (;;) {
      const version = await this.#keys.currentVersion();
      const stale = await this.#db.query<{ name: string }>(
        `SELECT name FROM platform_secrets WHERE (kek_id <> $1 OR kek_version < $2) AND NOT (name = ANY($3::text[]))
         ORDER BY name LIMIT ${REWRAP_BATCH}`,
        [this.#keys.keyId, version, failed],
      );
      if (stale.rows.length === 0) break;
      for (const { name } of stale.rows) {
        try {
          if (await this.#rewrapPlatformKey(name, version)) platformSecrets++;
        } catch (err) {
          if (!(err instanceof ClawplaneError)) throw err;
          failed.push(name);
        }
      }
    }
    return { keyId: this.#keys.keyId, version: await this.#keys.currentVersion(), tenantKeys, platformSecrets, failed };
  }

  async #rewrapTenantKey(tenantId: string, version: number): Promise<boolean> {
    return this.#db.tx(async (q) => {
      const row = await this.#selectTenantKey(q, tenantId, true);
      if (!row || (row.kek_id === this.#keys.keyId && row.kek_version >= version)) return false;
      const aad = tenantKeyAad(tenantId);
      const w = await this.#keys.wrap(await this.#keys.unwrap(toWrapped(row), aad), aad);
      await q.query(
        'UPDATE tenant_data_keys SET kek_id = $2, kek_version = $3, wrapped_dek = $4, iv = $5, tag = $6, rewrapped_at = now() WHERE tenant_id = $1',
        [tenantId, w.keyId, w.version, w.ciphertext, w.iv, w.tag],
      );
      return true;
    });
  }

  async #rewrapPlatformKey(name: string, version: number): Promise<boolean> {
    return this.#db.tx(async (q) => {
      const r = await q.query<WrappedRow>(
        'SELECT kek_id, kek_version, wrapped_dek, dek_iv AS iv, dek_tag AS tag FROM platform_secrets WHERE name = $1 FOR UPDATE',
        [name],
      );
      const row = r.rows[0];
      if (!row || (row.kek_id === this.#keys.keyId && row.kek_version >= version)) return false;
      const aad = platformKeyAad(name);
      const w = await this.#keys.wrap(await this.#keys.unwrap(toWrapped(row), aad), aad);
      await q.query('UPDATE platform_secrets SET kek_id = $2, kek_version = $3, wrapped_dek = $4, dek_iv = $5, dek_tag = $6 WHERE name = $1', [
        name,
        w.keyId,
        w.version,
        w.ciphertext,
        w.iv,
        w.tag,
      ]);
      return true;
    });
  }

  /** Which master key versions exist and how many keys each still protects. */
  async status(): Promise<VaultStatus> {
    const currentVersion = await this.#keys.currentVersion();
    const versions = await this.#keys.listVersions();
    const counts = await this.#db.query<{ v: number; t: number; p: number }>(
      `SELECT v, sum(t)::int AS t, sum(p)::int AS p FROM (
         SELECT kek_version AS v, 1 AS t, 0 AS p FROM tenant_data_keys WHERE kek_id = $1
         UNION ALL SELECT kek_version, 0, 1 FROM platform_secrets WHERE kek_id = $1) x GROUP BY v`,
      [this.#keys.keyId],
    );
    const by = new Map(counts.rows.map((r) => [r.v, r]));
    return {
      keyId: this.#keys.keyId,
      currentVersion,
      versions: versions.map((v) => ({
        version: v.version,
        current: v.current,
        tenantKeys: by.get(v.version)?.t ?? 0,
        platformSecrets: by.get(v.version)?.p ?? 0,
      })),
    };
  }

  /** Stores (or replaces) a platform-level secret such as the OIDC client secret. Audited without the value. */
  async sealPlatformSecret(name: string, plaintext: string, opts: { actor?: string } = {}): Promise<void> {
    if (!PLATFORM_SECRET_NAME.test(name)) {
      throw new ValidationError(`Platform secret name "${name}" is invalid: use 1-100 of a-z, 0-9, "_", "." or "-", starting with a letter or digit.`, [
        { path: 'name', message: 'is not a valid platform secret name' },
      ]);
    }
    // Its own data key per secret, so a platform secret never shares a key with tenant data.
    const dek = newDataKey();
    const w = await this.#keys.wrap(dek, platformKeyAad(name));
    await this.#db.tx(async (q) => {
      const prev = await q.query<{ version: number }>('SELECT version FROM platform_secrets WHERE name = $1 FOR UPDATE', [name]);
      const version = (prev.rows[0]?.version ?? 0) + 1;
      const s = seal(dek, Buffer.from(plaintext, 'utf8'), platformSecretAad(name, version));
      await q.query(
        `INSERT INTO platform_secrets (name, version, ciphertext, iv, tag, kek_id, kek_version, wrapped_dek, dek_iv, dek_tag)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, ciphertext = EXCLUDED.ciphertext, iv = EXCLUDED.iv, tag = EXCLUDED.tag,
           kek_id = EXCLUDED.kek_id, kek_version = EXCLUDED.kek_version, wrapped_dek = EXCLUDED.wrapped_dek,
           dek_iv = EXCLUDED.dek_iv, dek_tag = EXCLUDED.dek_tag, updated_at = now()`,
        [name, version, s.ciphertext, s.iv, s.tag, w.keyId, w.version, w.ciphertext, w.iv, w.tag],
      );
      await appendAudit(q, {
        actor: opts.actor ?? 'system',
        action: 'platform_secret.set',
        target: `platform_secret:${name}`,
        decision: 'success',
        detail: { version },
      });
    });
  }

  /**
   * The platform secret `name`, sealing `make()` first when there is none: every replica that asks at the same
   * time gets the same value (the first insert wins; the others read it).
   */
  async platformSecretOnce(name: string, make: () => string, opts: { actor?: string } = {}): Promise<string> {
    try {
      return await this.openPlatformSecret(name);
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
    }
    const plaintext = make();
    const dek = newDataKey();
    const w = await this.#keys.wrap(dek, platformKeyAad(name));
    const s = seal(dek, Buffer.from(plaintext, 'utf8'), platformSecretAad(name, 1));
    await this.#db.tx(async (q) => {
      const r = await q.query(
        `INSERT INTO platform_secrets (name, version, ciphertext, iv, tag, kek_id, kek_version, wrapped_dek, dek_iv, dek_tag)
         VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO NOTHING`,
        [name, s.ciphertext, s.iv, s.tag, w.keyId, w.version, w.ciphertext, w.iv, w.tag],
      );
      if (r.rowCount)
        await appendAudit(q, {
          actor: opts.actor ?? 'system',
          action: 'platform_secret.set',
          target: `platform_secret:${name}`,
          decision: 'success',
          detail: { version: 1 },
        });
    });
    return this.openPlatformSecret(name);
  }

  /** Deletes a platform secret (no error when there is none). */
  async deletePlatformSecret(name: string): Promise<void> {
    await this.#db.query('DELETE FROM platform_secrets WHERE name = $1', [name]);
  }

  /** The plaintext of a platform secret, for the process that needs it (OIDC login). */
  async openPlatformSecret(name: string): Promise<string> {
    const r = await this.#db.query<WrappedRow & { version: number; ciphertext: Buffer; s_iv: Buffer; s_tag: Buffer }>(
      `SELECT version, ciphertext, iv AS s_iv, tag AS s_tag, kek_id, kek_version, wrapped_dek, dek_iv AS iv, dek_tag AS tag
         FROM platform_secrets WHERE name = $1`,
      [name],
    );
    const row = r.rows[0];
    if (!row) throw new NotFoundError(`Platform secret "${name}"`);
    const dek = await this.#keys.unwrap(toWrapped(row), platformKeyAad(name));
    return open(dek, { ciphertext: row.ciphertext, iv: row.s_iv, tag: row.s_tag }, platformSecretAad(name, row.version), `Platform secret "${name}"`).toString(
      'utf8',
    );
  }

  /** Drops cached data keys (all, or one tenant's), e.g. after a tenant is deleted. */
  forget(tenantId?: string): void {
    if (tenantId === undefined) this.#cache.clear();
    else this.#cache.delete(tenantId);
  }
}
