import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { ClawplaneError } from '../errors.ts';
import type { Db } from '../db/pool.ts';
import { KEY_BYTES, open, seal, wrapAad } from './envelope.ts';
import type { KeyProvider, KeyVersionInfo, KeyVersionStore, WrappedKey } from './types.ts';

const KEY_ID = 'local';
const MIN_SECRET_BYTES = 32;

/** The configured secret key cannot open data wrapped by an earlier one. */
export class MasterKeyMismatchError extends ClawplaneError {
  constructor(version: number) {
    super(
      'vault_master_key_mismatch',
      500,
      `CLAWPLANE_SECRET_KEY does not match the key that created master key version ${version}. ` +
        "Every Clawplane process must use the same CLAWPLANE_SECRET_KEY: restore the original value (or the data directory's secret.key).",
    );
  }
}

/**
 * The master key derived from CLAWPLANE_SECRET_KEY (issue 4): version N is
 * HKDF-SHA256(secret, salt "clawplane/kek", info "clawplane/kek/vN"). Rotating makes a new version
 * without a new secret; what a rotation protects against is a leaked *derived* key or wrapped data
 * being kept forever under one key. Replacing the secret itself needs a KMS-backed provider.
 * The secret arrives through the constructor; this module never reads process.env.
 */
export class LocalKeyProvider implements KeyProvider {
  readonly keyId = KEY_ID;
  readonly #secret: Buffer;
  readonly #store: KeyVersionStore;
  readonly #keks = new Map<number, Buffer>();
  readonly #verified = new Set<number>();

  constructor(opts: { secret: Buffer; versions: KeyVersionStore }) {
    if (opts.secret.length < MIN_SECRET_BYTES) {
      throw new RangeError(`CLAWPLANE_SECRET_KEY must be at least ${MIN_SECRET_BYTES} bytes`);
    }
    this.#secret = Buffer.from(opts.secret);
    this.#store = opts.versions;
  }

  #kek(version: number): Buffer {
    let kek = this.#keks.get(version);
    if (!kek) {
      kek = Buffer.from(hkdfSync('sha256', this.#secret, 'clawplane/kek', `clawplane/kek/v${version}`, KEY_BYTES));
      this.#keks.set(version, kek);
    }
    return kek;
  }

  /** Proves knowledge of version N's key without revealing it: HMAC of a fixed label. */
  #checkValue(version: number): string {
    return createHmac('sha256', this.#kek(version)).update('clawplane/kek-check').digest('hex').slice(0, 32);
  }

  async #verify(version: number): Promise<void> {
    if (this.#verified.has(version)) return;
    const known = (await this.#store.list(KEY_ID)).find((v) => v.version === version);
    if (!known) {
      throw new ClawplaneError(
        'vault_unknown_key_version',
        500,
        `Master key version ${version} is not registered. The database and the key store disagree: restore the vault_key_versions table from a backup.`,
      );
    }
    const want = Buffer.from(known.checkValue, 'utf8');
    const have = Buffer.from(this.#checkValue(version), 'utf8');
    if (want.length !== have.length || !timingSafeEqual(want, have)) throw new MasterKeyMismatchError(version);
    this.#verified.add(version);
  }

  async currentVersion(): Promise<number> {
    const current = (await this.#store.list(KEY_ID)).find((v) => v.current);
    if (current) return current.version;
    return this.#store.createNext(KEY_ID, (v) => this.#checkValue(v), { onlyIfNone: true });
  }

  async listVersions(): Promise<KeyVersionInfo[]> {
    return (await this.#store.list(KEY_ID)).map(({ version, current, createdAt }) => ({ version, current, createdAt }));
  }

  async createVersion(): Promise<number> {
    await this.currentVersion(); // make sure version 1 exists first, so the first rotation yields 2
    return this.#store.createNext(KEY_ID, (v) => this.#checkValue(v));
  }

  async wrap(dataKey: Buffer, aad: Buffer): Promise<WrappedKey> {
    const version = await this.currentVersion();
    await this.#verify(version);
    const s = seal(this.#kek(version), dataKey, wrapAad(KEY_ID, version, aad));
    return { keyId: KEY_ID, version, ...s };
  }

  async unwrap(wrapped: WrappedKey, aad: Buffer): Promise<Buffer> {
    if (wrapped.keyId !== KEY_ID || !Number.isSafeInteger(wrapped.version) || wrapped.version < 1) {
      throw new ClawplaneError(
        'vault_unknown_key',
        500,
        `A data key is wrapped by master key "${wrapped.keyId}" v${wrapped.version}, which this vault does not have. Configure the key provider that wrote it.`,
      );
    }
    await this.#verify(wrapped.version);
    return open(this.#kek(wrapped.version), wrapped, wrapAad(KEY_ID, wrapped.version, aad), 'A data key');
  }
}

// Any constant works; every process sharing the database must agree on it.
const VERSION_LOCK_KEY = 0x6b656b73; // "keks"

/** Versions in the `vault_key_versions` table; creation is serialised by an advisory lock. */
export function dbKeyVersionStore(db: Db): KeyVersionStore {
  return {
    async list(keyId) {
      const r = await db.query<{ version: number; is_current: boolean; check_value: string; created_at: Date }>(
        'SELECT version, is_current, check_value, created_at FROM vault_key_versions WHERE key_id = $1 ORDER BY version',
        [keyId],
      );
      return r.rows.map((row) => ({ version: row.version, current: row.is_current, checkValue: row.check_value, createdAt: row.created_at }));
    },
    createNext(keyId, checkValue, opts) {
      return db.tx(async (q) => {
        await q.query('SELECT pg_advisory_xact_lock($1)', [VERSION_LOCK_KEY]);
        const head = await q.query<{ max: number | null; current: number | null }>(
          'SELECT max(version) AS max, max(version) FILTER (WHERE is_current) AS current FROM vault_key_versions WHERE key_id = $1',
          [keyId],
        );
        const row = head.rows[0];
        if (opts?.onlyIfNone && row?.current != null) return row.current;
        const next = (row?.max ?? 0) + 1;
        await q.query('UPDATE vault_key_versions SET is_current = false WHERE key_id = $1 AND is_current', [keyId]);
        await q.query('INSERT INTO vault_key_versions (key_id, version, is_current, check_value) VALUES ($1, $2, true, $3)', [keyId, next, checkValue(next)]);
        return next;
      });
    },
  };
}

/** Versions kept in memory: for tests and one-off tools that have no database. */
export function memoryKeyVersionStore(): KeyVersionStore {
  const rows: (KeyVersionInfo & { checkValue: string })[] = [];
  return {
    list: () => Promise.resolve(rows.map((r) => ({ ...r }))),
    createNext(_keyId, checkValue, opts) {
      const current = rows.find((r) => r.current);
      if (opts?.onlyIfNone && current) return Promise.resolve(current.version);
      for (const r of rows) r.current = false;
      const version = rows.length + 1;
      rows.push({ version, current: true, checkValue: checkValue(version), createdAt: new Date() });
      return Promise.resolve(version);
    },
  };
}
