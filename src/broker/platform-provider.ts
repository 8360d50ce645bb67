import { appendAudit } from '../audit/log.ts';
import type { Db, Queryable } from '../db/pool.ts';
import type { EventChannel } from '../events/channel.ts';
import { NotFoundError, ValidationError } from '../errors.ts';
import { getSetting, putSetting } from '../identity/settings.ts';
import { PROVIDER_CATALOGUE, type ConnectionTestResult, type ProviderKind, type ProviderService, type ResolvedTarget } from '../vault/providers.ts';
import type { Vault } from '../vault/vault.ts';

const KEY_SECRET = 'provider.default.key';
export const PLATFORM_CREDENTIAL = 'platform:default';

interface Stored {
  kind: ProviderKind;
  baseUrl: string;
  defaultModel: string;
  keySet: boolean;
}

export interface PlatformProviderView extends Stored {
  name: string;
}

/**
 * The platform's default LLM provider, set at first boot (issue 3, onboarding step 3): tenants that
 * have no provider of their own are served with it, metered and budgeted per tenant like any other
 * call. Its key is a platform secret sealed by the vault; the connection is tested before anything is
 * saved, so a wrong key or URL is refused with the provider's reason.
 */
export class PlatformProvider {
  private readonly db: Db;
  private readonly vault: Vault;
  private readonly providers: ProviderService;
  private cache: { at: number; target: ResolvedTarget | undefined } | undefined;
  private readonly events: EventChannel;

  constructor(opts: { db: Db; vault: Vault; providers: ProviderService; events: EventChannel }) {
    this.db = opts.db;
    this.events = opts.events;
    // Cached for a few seconds on every replica: a change anywhere drops it at once.
    opts.events.on('routes.changed', ({ tenantId }) => {
      if (tenantId === null) this.cache = undefined;
    });
    opts.events.onReset(() => (this.cache = undefined));
    this.vault = opts.vault;
    this.providers = opts.providers;
  }

  async get(): Promise<PlatformProviderView | undefined> {
    const s = await getSetting<Stored>(this.db, 'default_provider');
    return s ? { ...s, name: PROVIDER_CATALOGUE[s.kind].label } : undefined;
  }

  /** Tests the connection with the given (or stored) key; saves only when it works. */
  async set(
    input: { kind: ProviderKind; baseUrl?: string | undefined; apiKey?: string | undefined; defaultModel: string },
    by: { actor: string; requestId?: string | undefined },
  ): Promise<{ saved: boolean; test: ConnectionTestResult }> {
    const baseUrl = this.providers.baseUrlFor(input.kind, input.baseUrl);
    const current = await getSetting<Stored>(this.db, 'default_provider');
    let key = input.apiKey;
    if (key === undefined && current?.keySet) key = await this.vault.openPlatformSecret(KEY_SECRET);
    if (key === undefined && PROVIDER_CATALOGUE[input.kind].keyRequired) {
      throw new ValidationError(`${PROVIDER_CATALOGUE[input.kind].label} needs an API key: send apiKey.`, [{ path: 'body.apiKey', message: 'required' }]);
    }
    const test = await this.providers.probe({ kind: input.kind, baseUrl, name: PROVIDER_CATALOGUE[input.kind].label, key });
    if (!test.ok) return { saved: false, test };
    if (input.apiKey !== undefined) await this.vault.sealPlatformSecret(KEY_SECRET, input.apiKey, { actor: by.actor });
    const stored: Stored = { kind: input.kind, baseUrl, defaultModel: input.defaultModel, keySet: key !== undefined };
    await this.db.tx(async (tx) => {
      await putSetting(tx, 'default_provider', stored);
      await appendAudit(tx, {
        actor: by.actor,
        action: 'settings.default_provider',
        decision: 'success',
        detail: { kind: stored.kind, baseUrl, defaultModel: stored.defaultModel, keyChanged: input.apiKey !== undefined },
        requestId: by.requestId ?? null,
      });
      await this.published(tx);
    });
    return { saved: true, test };
  }

  async remove(by: { actor: string; requestId?: string | undefined }): Promise<void> {
    await this.db.tx(async (tx) => {
      const r = await tx.query(`DELETE FROM platform_settings WHERE key = 'default_provider'`);
      if (!r.rowCount) throw new NotFoundError('The default provider');
      await appendAudit(tx, { actor: by.actor, action: 'settings.default_provider_remove', decision: 'success', requestId: by.requestId ?? null });
      await this.published(tx);
    });
  }

  /** Every replica's broker drops the platform key and every tenant's routes (they may fall back to this one). */
  private async published(tx: Queryable): Promise<void> {
    await this.events.publish(tx, 'credential.changed', { credentialId: PLATFORM_CREDENTIAL });
    await this.events.publish(tx, 'routes.changed', { tenantId: null });
  }

  /** The route target for tenants without a provider of their own (cached for 5 s). */
  async target(): Promise<ResolvedTarget | undefined> {
    const live = this.events.live;
    if (live && this.cache && Date.now() - this.cache.at < 5_000) return this.cache.target;
    const epoch = this.events.epoch;
    const s = await getSetting<Stored>(this.db, 'default_provider');
    const target = s
      ? { providerId: PLATFORM_CREDENTIAL, kind: s.kind, baseUrl: s.baseUrl, credentialId: s.keySet ? PLATFORM_CREDENTIAL : null, model: s.defaultModel }
      : undefined;
    if (live && epoch === this.events.epoch) this.cache = { at: Date.now(), target };
    return target;
  }

  /** The key, for the broker only; every read is audited with the tenant whose call it serves. */
  async key(tenantId: string, actor: string): Promise<string> {
    const key = await this.vault.openPlatformSecret(KEY_SECRET);
    await this.db.tx((tx) =>
      appendAudit(tx, {
        actor,
        tenantId,
        action: 'platform_secret.decrypt',
        target: `secret:${KEY_SECRET}`,
        decision: 'allow',
        detail: { purpose: 'llm:platform-default' },
      }),
    );
    return key;
  }
}
