import { createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { appendAudit } from '../audit/log.ts';
import type { Db } from '../db/pool.ts';
import { ClawplaneError, NotFoundError } from '../errors.ts';
import type { EventChannel } from '../events/channel.ts';
import type { Vault } from '../vault/vault.ts';

/** Where grants get their signing key and verifiers their public keys (by `kid`). */
export interface GrantKeySource {
  signing(): Promise<{ kid: string; privateKey: KeyObject }>;
  /** The public key of `kid`, or a GrantKeyRefused with the reason (unknown, retired past its overlap). */
  verifying(kid: string | undefined): Promise<KeyObject>;
}

/** A `kid` that must not verify: unknown, or retired and past its overlap window. */
export class GrantKeyRefused extends Error {}

/** A signing key as platform admins see it (never the key itself). */
export interface GrantKeyInfo {
  kid: string;
  createdAt: Date;
  retiredAt: Date | null;
  /** A retired key verifies grants it signed until then. */
  verifyUntil: Date | null;
  current: boolean;
}

const KID = /^[0-9a-f-]{36}$/;
const secretName = (kid: string) => `grant-key.${kid}`;

/**
 * The grant signing keys, shared by every replica (docs/adr/0009-replica-coordination.md): Ed25519 key pairs
 * whose private halves are sealed in the vault (platform secret `grant-key.<kid>`) and whose public halves are
 * in `grant_signing_keys`. One key signs; rotation (on request, or when the key is older than
 * `rotateAfterMs`) makes a new one current and keeps the previous one verifying for an overlap window, so
 * grants signed just before a rotation stay valid until they expire. Keys are cached only while the event
 * channel is live, and dropped on `grant_keys.changed`.
 */
export class GrantKeyring implements GrantKeySource {
  readonly #db: Db;
  readonly #vault: Vault;
  readonly #events: EventChannel;
  readonly #log: Logger | undefined;
  readonly #rotateAfterMs: number;
  readonly #overlapSeconds: number;
  #current: { kid: string; privateKey: KeyObject; createdAt: number } | undefined;
  #loading: Promise<{ kid: string; privateKey: KeyObject; createdAt: number }> | undefined;
  readonly #public = new Map<string, { key: KeyObject; verifyUntil: number | null }>();

  constructor(o: { db: Db; vault: Vault; events: EventChannel; log?: Logger; rotateAfterMs?: number; overlapSeconds: number }) {
    this.#db = o.db;
    this.#vault = o.vault;
    this.#events = o.events;
    this.#log = o.log;
    this.#rotateAfterMs = o.rotateAfterMs ?? 0;
    this.#overlapSeconds = o.overlapSeconds;
    const drop = () => {
      this.#current = undefined;
      this.#public.clear();
    };
    o.events.on('grant_keys.changed', drop);
    o.events.onReset(drop);
  }

  async signing(): Promise<{ kid: string; privateKey: KeyObject }> {
    let cur = this.#events.live ? this.#current : undefined;
    if (!cur) {
      this.#loading ??= this.#loadCurrent().finally(() => (this.#loading = undefined));
      cur = await this.#loading;
    }
    if (this.#rotateAfterMs > 0 && Date.now() - cur.createdAt > this.#rotateAfterMs) {
      await this.rotate({ actor: 'system:grant-keys', overlapSeconds: this.#overlapSeconds, ifCurrent: cur.kid });
      return this.signing();
    }
    return cur;
  }

  async verifying(kid: string | undefined): Promise<KeyObject> {
    if (!kid || !KID.test(kid)) throw new GrantKeyRefused('The grant names no signing key Clawplane knows.');
    let k = this.#events.live ? this.#public.get(kid) : undefined;
    if (!k) {
      const epoch = this.#events.epoch;
      const r = await this.#db.query<{ public_jwk: Record<string, string>; verify_until: Date | null }>(
        'SELECT public_jwk, verify_until FROM grant_signing_keys WHERE kid = $1',
        [kid],
      );
      const row = r.rows[0];
      if (!row) throw new GrantKeyRefused('The grant was signed with a key Clawplane does not know (or no longer keeps). Ask for a new grant.');
      k = { key: createPublicKey({ key: row.public_jwk, format: 'jwk' }), verifyUntil: row.verify_until?.getTime() ?? null };
      if (this.#events.live && epoch === this.#events.epoch) this.#public.set(kid, k);
    }
    if (k.verifyUntil !== null && Date.now() >= k.verifyUntil) {
      throw new GrantKeyRefused(
        `The grant was signed with a retired signing key (no longer valid since ${new Date(k.verifyUntil).toISOString()}). Ask for a new grant.`,
      );
    }
    return k.key;
  }

  /**
   * Makes a new key current; the previous one verifies for `overlapSeconds` more (0 refuses its grants at
   * once, e.g. after a leak). With `ifCurrent`, rotates only if that key is still current (age-based
   * rotation: one replica wins). Returns the new kid and the retired one.
   */
  async rotate(o: { actor: string; overlapSeconds: number; ifCurrent?: string; requestId?: string }): Promise<{ kid: string; retired: string | null }> {
    const fresh = await this.#newKey();
    try {
      const out = await this.#db.tx(async (q) => {
        // One rotation at a time (a row lock would not do: the row a concurrent rotation retired no longer matches).
        await q.query("SELECT pg_advisory_xact_lock(hashtext('clawplane.grant_signing_keys'))");
        const cur = await q.query<{ kid: string }>('SELECT kid FROM grant_signing_keys WHERE retired_at IS NULL');
        const old = cur.rows[0]?.kid ?? null;
        if (o.ifCurrent !== undefined && old !== o.ifCurrent) return undefined;
        if (old)
          await q.query('UPDATE grant_signing_keys SET retired_at = now(), verify_until = now() + make_interval(secs => $2) WHERE kid = $1', [
            old,
            o.overlapSeconds,
          ]);
        await q.query('INSERT INTO grant_signing_keys (kid, public_jwk) VALUES ($1, $2)', [fresh.kid, JSON.stringify(fresh.jwk)]);
        await this.#events.publish(q, 'grant_keys.changed', {});
        await appendAudit(q, {
          actor: o.actor,
          action: 'grant_key.rotate',
          target: `grant_key:${fresh.kid}`,
          decision: 'success',
          requestId: o.requestId ?? null,
          detail: { retired: old, overlapSeconds: o.overlapSeconds },
        });
        return { kid: fresh.kid, retired: old };
      });
      if (!out) {
        await this.#vault.deletePlatformSecret(secretName(fresh.kid));
        return { kid: o.ifCurrent ?? '', retired: null };
      }
      this.#log?.info({ kid: out.kid, retired: out.retired, overlap_s: o.overlapSeconds }, 'grant signing key rotated');
      await this.#prune();
      return out;
    } catch (err) {
      await this.#vault.deletePlatformSecret(secretName(fresh.kid)).catch(() => undefined);
      throw err;
    }
  }

  /** Every kept key, newest first. */
  async list(): Promise<GrantKeyInfo[]> {
    const r = await this.#db.query<{ kid: string; created_at: Date; retired_at: Date | null; verify_until: Date | null }>(
      'SELECT kid, created_at, retired_at, verify_until FROM grant_signing_keys ORDER BY created_at DESC',
    );
    return r.rows.map((k) => ({ kid: k.kid, createdAt: k.created_at, retiredAt: k.retired_at, verifyUntil: k.verify_until, current: k.retired_at === null }));
  }

  async #loadCurrent(): Promise<{ kid: string; privateKey: KeyObject; createdAt: number }> {
    const epoch = this.#events.epoch;
    for (let attempt = 0; attempt < 3; attempt++) {
      const r = await this.#db.query<{ kid: string; created_at: Date }>('SELECT kid, created_at FROM grant_signing_keys WHERE retired_at IS NULL');
      const row = r.rows[0];
      if (row) {
        let pem: string;
        try {
          pem = await this.#vault.openPlatformSecret(secretName(row.kid));
        } catch (err) {
          if (err instanceof NotFoundError)
            throw new ClawplaneError(
              'grant_key_missing',
              503,
              'The current grant signing key is missing from the vault. A platform admin must rotate it: POST /api/v1/platform/grant-keys/rotate.',
              { cause: err },
            );
          throw err;
        }
        const cur = { kid: row.kid, privateKey: createPrivateKey(pem), createdAt: row.created_at.getTime() };
        if (this.#events.live && epoch === this.#events.epoch) this.#current = cur;
        return cur;
      }
      // None yet: the first replica to insert wins (one current key: a partial unique index); the others read it.
      const fresh = await this.#newKey();
      const ins = await this.#db.query('INSERT INTO grant_signing_keys (kid, public_jwk) VALUES ($1, $2) ON CONFLICT DO NOTHING', [
        fresh.kid,
        JSON.stringify(fresh.jwk),
      ]);
      if (!ins.rowCount) await this.#vault.deletePlatformSecret(secretName(fresh.kid));
    }
    throw new ClawplaneError(
      'grant_key_unavailable',
      503,
      'No grant signing key could be loaded or created. Retry; if it persists, check the database and the vault (clawplane doctor).',
    );
  }

  /** A new key pair, its private half sealed in the vault before anything names it. */
  async #newKey(): Promise<{ kid: string; jwk: Record<string, unknown> }> {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const kid = randomUUID();
    await this.#vault.sealPlatformSecret(secretName(kid), privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), { actor: 'system:grant-keys' });
    return { kid, jwk: publicKey.export({ format: 'jwk' }) as Record<string, unknown> };
  }

  /** Forgets retired keys a day past their overlap (their grants expired long ago). */
  async #prune(): Promise<void> {
    const r = await this.#db.query<{ kid: string }>(`DELETE FROM grant_signing_keys WHERE verify_until < now() - interval '1 day' RETURNING kid`);
    for (const { kid } of r.rows) await this.#vault.deletePlatformSecret(secretName(kid));
  }
}

/** A fixed key pair in memory (tests and tools that need no sharing). */
export function staticGrantKeys(keys: { kid: string; privateKey: KeyObject; publicKey: KeyObject }): GrantKeySource {
  return {
    signing: async () => keys,
    verifying: async (kid) => {
      if (kid !== keys.kid) throw new GrantKeyRefused('The grant was signed with a key Clawplane does not know. Ask for a new grant.');
      return keys.publicKey;
    },
  };
}
