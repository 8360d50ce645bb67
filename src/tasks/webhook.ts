import { createHmac, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Db } from '../db/pool.ts';
import { NotFoundError } from '../errors.ts';
import { checkUrlShape, guardedFetch, type EgressPolicy } from '../net/ssrf.ts';
import type { Vault } from '../vault/vault.ts';
import type { ApprovalChat } from '../governance/approval-delivery.ts';

/**
 * Outgoing approval notifications (issue 8, item 4), for delivery to chat tools. The body is JSON; the
 * header `X-Clawplane-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>` lets the
 * receiver check origin and freshness. The key is generated per tenant when the URL is set, shown once,
 * and kept sealed as a platform secret. The URL goes through the SSRF guard on every delivery.
 */
const secretName = (tenantId: string) => `tasks.webhook.${tenantId}`;

export function signWebhook(key: string, body: string, at = Math.floor(Date.now() / 1000)): string {
  return `t=${at},v1=${createHmac('sha256', key).update(`${at}.${body}`).digest('hex')}`;
}

export class ApprovalWebhooks {
  readonly #db: Db;
  readonly #vault: Vault;
  readonly #egress: EgressPolicy;
  readonly #log: Logger;
  readonly #chat: ApprovalChat | undefined;

  /** `chat`: also post each request to the tenant's approval chats (src/governance/approval-delivery.ts). */
  constructor(o: { db: Db; vault: Vault; egress: EgressPolicy; log: Logger; chat?: ApprovalChat | undefined }) {
    this.#db = o.db;
    this.#chat = o.chat;
    this.#vault = o.vault;
    this.#egress = o.egress;
    this.#log = o.log;
  }

  async get(tenantId: string): Promise<{ url: string | null }> {
    const r = await this.#db.query<{ url: string }>('SELECT url FROM task_webhooks WHERE tenant_id = $1', [tenantId]);
    return { url: r.rows[0]?.url ?? null };
  }

  /** Sets the URL and a new signing key; the key is returned this once. */
  async set(tenantId: string, url: string, by: { actor: string }): Promise<{ url: string; signingKey: string }> {
    checkUrlShape(url, this.#egress);
    const key = randomBytes(32).toString('hex');
    await this.#vault.sealPlatformSecret(secretName(tenantId), key, { actor: by.actor });
    await this.#db.query(
      'INSERT INTO task_webhooks (tenant_id, url) VALUES ($1, $2) ON CONFLICT (tenant_id) DO UPDATE SET url = EXCLUDED.url, updated_at = now()',
      [tenantId, url],
    );
    return { url, signingKey: key };
  }

  /** Delivers one event; failures are logged, never thrown (a chat tool being down must not fail a task). */
  async deliver(tenantId: string, event: Record<string, unknown>): Promise<boolean> {
    if (this.#chat && event['type'] === 'approval.requested' && typeof event['approvalId'] === 'string') {
      void this.#chat.deliver(tenantId, {
        kind: event['kind'] === 'exec' ? 'exec' : 'task',
        id: event['approvalId'],
        summary: `${String(event['tool'] ?? '')}: ${String(event['summary'] ?? '')}`.slice(0, 300),
      });
    }
    const { url } = await this.get(tenantId);
    if (!url) return false;
    try {
      const key = await this.#vault.openPlatformSecret(secretName(tenantId));
      const body = JSON.stringify(event);
      const res = await guardedFetch(
        url,
        { method: 'POST', headers: { 'content-type': 'application/json', 'x-clawplane-signature': signWebhook(key, body) }, body },
        this.#egress,
      );
      await res.arrayBuffer();
      if (!res.ok) this.#log.warn({ tenant_id: tenantId, status: res.status, event: event['type'] }, 'approval webhook answered an error');
      return res.ok;
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      this.#log.warn({ tenant_id: tenantId, err: (err as Error).message, event: event['type'] }, 'approval webhook delivery failed');
      return false;
    }
  }
}
